"""Devices' latest messages move from two JSON objects per device to ``device_latest``.

One row per (device, kind) lets ingest upsert a batch without reading the rows first; the
JSON objects had to be loaded, merged in Python and written back whole for every message.
Existing state is carried over; ``downgrade`` folds it back.

Revision ID: 0006_device_latest
Revises: 0005_asset_ignored
Create Date: 2026-11-23
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0006_device_latest"
down_revision = "0005_asset_ignored"
branch_labels = None
depends_on = None

_devices = sa.table(
    "devices",
    sa.column("device_id", sa.String()),
    sa.column("last_seen", sa.DateTime(timezone=True)),
    sa.column("latest", sa.JSON()),
    sa.column("last_message_at", sa.JSON()),
)
_device_latest = sa.table(
    "device_latest",
    sa.column("device_id", sa.String()),
    sa.column("kind", sa.String()),
    sa.column("ts", sa.DateTime(timezone=True)),
    sa.column("received_at", sa.DateTime(timezone=True)),
    sa.column("body", sa.JSON()),
)


def _stored(value: datetime, sqlite: bool) -> datetime:
    """As the models' UtcDateTime stores it: naive UTC on SQLite, aware elsewhere."""
    aware = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    return aware.replace(tzinfo=None) if sqlite else aware


def _parse(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def upgrade() -> None:
    connection = op.get_bind()
    sqlite = connection.dialect.name == "sqlite"
    rows: list[dict[str, Any]] = []
    for device_id, last_seen, latest, received in connection.execute(
        sa.select(
            _devices.c.device_id,
            _devices.c.last_seen,
            _devices.c.latest,
            _devices.c.last_message_at,
        )
    ):
        for kind, body in (latest or {}).items():
            if not isinstance(body, dict):
                continue
            received_at = _parse((received or {}).get(kind)) or last_seen
            ts = _parse(body.get("ts")) or received_at
            if ts is None or received_at is None:
                continue  # never seen at a known time: nothing trustworthy to carry over
            rows.append(
                {
                    "device_id": device_id,
                    "kind": str(kind)[:16],
                    "ts": _stored(ts, sqlite),
                    "received_at": _stored(received_at, sqlite),
                    "body": body,
                }
            )
    # Columns first, table after: on SQLite the batch mode rebuilds ``devices`` (a DROP
    # TABLE), which would cascade-delete rows already referring to it.
    with op.batch_alter_table("devices") as batch:
        batch.drop_column("latest")
        batch.drop_column("last_message_at")
    op.create_table(
        "device_latest",
        sa.Column("device_id", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("ts", sa.DateTime(timezone=True), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("body", sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(
            ["device_id"],
            ["devices.device_id"],
            name=op.f("fk_device_latest_device_id_devices"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("device_id", "kind", name=op.f("pk_device_latest")),
    )
    for start in range(0, len(rows), 1000):
        connection.execute(_device_latest.insert(), rows[start : start + 1000])


def downgrade() -> None:
    connection = op.get_bind()
    latest: dict[str, dict[str, Any]] = {}
    received: dict[str, dict[str, str]] = {}
    for device_id, kind, received_at, body in connection.execute(
        sa.select(
            _device_latest.c.device_id,
            _device_latest.c.kind,
            _device_latest.c.received_at,
            _device_latest.c.body,
        )
    ):
        latest.setdefault(device_id, {})[kind] = body
        received.setdefault(device_id, {})[kind] = _stored(received_at, False).isoformat()
    op.drop_table("device_latest")
    with op.batch_alter_table("devices") as batch:
        batch.add_column(sa.Column("last_message_at", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("latest", sa.JSON(), nullable=True))
    for device_id in connection.scalars(sa.select(_devices.c.device_id)).all():
        connection.execute(
            _devices.update()
            .where(_devices.c.device_id == device_id)
            .values(latest=latest.get(device_id, {}), last_message_at=received.get(device_id, {}))
        )
    with op.batch_alter_table("devices") as batch:
        batch.alter_column("latest", existing_type=sa.JSON(), nullable=False)
        batch.alter_column("last_message_at", existing_type=sa.JSON(), nullable=False)
