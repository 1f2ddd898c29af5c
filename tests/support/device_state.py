"""Seeding a device's latest messages in tests that build the register by hand."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import delete
from sqlalchemy.orm import Session

from campuswatch.collector.db.models import DeviceLatest


def set_latest(
    session: Session, device_id: str, kind: str, body: dict[str, Any], received_at: datetime
) -> None:
    """Make ``body`` the device's latest ``kind`` message; its ``ts`` (ISO text) if it has
    one, else ``received_at``, is the message time. The device row must be flushed."""
    stamp = body.get("ts")
    ts = datetime.fromisoformat(stamp) if isinstance(stamp, str) else received_at
    session.execute(
        delete(DeviceLatest).where(DeviceLatest.device_id == device_id, DeviceLatest.kind == kind)
    )
    session.add(
        DeviceLatest(
            device_id=device_id,
            kind=kind,
            ts=ts if ts.tzinfo else ts.replace(tzinfo=UTC),
            received_at=received_at,
            body=body,
        )
    )
    session.flush()
