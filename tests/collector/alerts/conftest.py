"""A migrated register database, a settable clock and signal builders for alert tests."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal

import pytest
from sqlalchemy import Engine, event
from sqlalchemy.orm import Session, sessionmaker

from campuswatch.collector.alerts.manager import AlertManager
from campuswatch.collector.alerts.models import Alert  # also registers the alert tables
from campuswatch.collector.alerts.policy import (
    DEVICE_OFFLINE_TAG,
    SITE_UNREACHABLE_TAG,
    AlertPolicy,
)
from campuswatch.collector.db.engine import make_engine, session_factory
from campuswatch.collector.db.models import Site
from campuswatch.collector.signals import AlertSignal, Evidence, Level

T0 = datetime(2025, 3, 3, 7, 30, tzinfo=UTC)
SCHOOL = "thcs-le-loi"


@dataclass
class Clock:
    now: datetime = T0

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> datetime:
        self.now += timedelta(**delta)
        return self.now


@pytest.fixture
def engine(migrated_db_url: str) -> Iterator[Engine]:
    engine = make_engine(migrated_db_url)
    yield engine
    engine.dispose()


@pytest.fixture
def factory(engine: Engine) -> sessionmaker[Session]:
    sessions = session_factory(engine)
    with sessions() as session:
        session.add_all(
            [
                Site(id="hanoi", level="province", name="Hà Nội"),
                Site(id="ba-dinh", level="district", name="Ba Đình", parent_id="hanoi"),
                Site(id=SCHOOL, level="school", name="THCS Lê Lợi", parent_id="ba-dinh"),
                Site(id="lab-1", level="room", name="Phòng máy 1", parent_id=SCHOOL),
            ]
        )
        session.commit()
    return sessions


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def manager(factory: sessionmaker[Session], clock: Clock) -> AlertManager:
    return AlertManager(factory, settings=AlertPolicy(), clock=clock)


def signal(
    device: str | None = "pc-01",
    *,
    rule: str = "av-signatures-outdated",
    status: Literal["firing", "resolved"] = "firing",
    level: Level = "medium",
    site: str = SCHOOL,
    at: datetime = T0,
    tags: tuple[str, ...] = (),
    labels: dict[str, str] | None = None,
    evidence: tuple[Evidence, ...] = (),
    summary: str | None = None,
) -> AlertSignal:
    return AlertSignal(
        rule_id=rule,
        rule_title=rule.replace("-", " "),
        level=level,
        status=status,
        fingerprint=f"{rule}|{site}|{device or '-'}",
        site_id=site,
        device_id=device,
        summary=summary or f"{rule} on {device or site}",
        at=at,
        labels=labels or {},
        tags=tags,
        evidence=evidence,
    )


def device_offline(device: str, **kwargs: object) -> AlertSignal:
    return signal(device, rule="device-offline", tags=(DEVICE_OFFLINE_TAG,), **kwargs)  # type: ignore[arg-type]


def uplink_down(**kwargs: object) -> AlertSignal:
    return signal(
        None,
        rule="school-uplink-down",
        level="high",
        tags=(SITE_UNREACHABLE_TAG,),
        **kwargs,  # type: ignore[arg-type]
    )


def alerts_loaded_by(factory: sessionmaker[Session], work: Callable[[], object]) -> int:
    """How many alert rows ``work`` loads from the database."""
    loaded: list[int] = []

    def count(target: Alert, _context: object) -> None:
        loaded.append(target.id)

    event.listen(Alert, "load", count)
    try:
        work()
    finally:
        event.remove(Alert, "load", count)
    return len(loaded)
