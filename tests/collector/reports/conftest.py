"""A small district with known figures, on SQLite and PostgreSQL, for report tests.

Period under test: February 2026 (Asia/Ho_Chi_Minh); previous: January 2026. "Now" is
2 March 2026, so February has ended. The expected figures are worked out by hand in
``EXPECTED`` from the rows below, never by calling the code under test.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.orm import Session

from campuswatch.collector.alerts.models import Alert, AlertAudit
from campuswatch.collector.db.engine import make_engine, session_factory
from campuswatch.collector.db.models import Asset, AssetHistory, Device, Site
from campuswatch.collector.reports.periods import Period, report_period
from campuswatch.collector.reports.snapshots import take_daily_snapshot
from campuswatch.collector.tsdb.points import MEASUREMENT_NET, Point
from campuswatch.collector.tsdb.sqlite_store import SqliteStore
from tests.support.device_state import set_latest

NOW = datetime(2026, 3, 2, 3, 0, tzinfo=UTC)
# The device reports below are as fresh at February's last snapshot as at NOW (within the
# 7-day and 72-hour limits), so the snapshot's figures are EXPECTED's.
FEB_SNAPSHOT_AT = NOW
FEB = datetime(2026, 2, 1, tzinfo=UTC)
JAN = datetime(2026, 1, 1, tzinfo=UTC)
DEC = datetime(2025, 12, 1, tzinfo=UTC)


def feb(day: int, hour: int = 3, minute: int = 0) -> datetime:
    return datetime(2026, 2, day, hour, minute, tzinfo=UTC)


def jan(day: int, hour: int = 3) -> datetime:
    return datetime(2026, 1, day, hour, tzinfo=UTC)


# Worked out by hand from the rows in ``fill_district``.
EXPECTED: dict[str, Any] = {
    # 7 computers in service (pc-1..pc-5, pc-6 without agent, pc-7 with a 10-day-old report);
    # protected: pc-1, pc-4, pc-5. pc-8 is retired, pc-9 in repair: not counted.
    "av_coverage": (3, 7),
    "av_parts": {"at_risk": 1, "stale_signatures": 1, "no_av": 1, "error": 0, "no_report": 2},
    # 3 schools; school-a fibre + reachable, school-b 4G but its PCs say Internet down,
    # school-c ADSL (reachable, not broadband).
    "broadband": (1, 3),
    # End of Feb: 14 assets not retired; registered: all but pc-3, pc-6, pc-7, camera-1 → 10.
    "digital_records": (10, 14),
    # End of Jan: pc-4 did not exist yet, pc-8 was retired on 20 Jan → 13 not retired;
    # camera-1 was still registered then (un-registered 14 Feb) → 10 registered.
    "digital_records_previous": (10, 13),
    # is-1 classified (level 2 + plan); is-2 level 3, no plan.
    "information_systems": (1, 2),
    # is-2 had no level either at end of Jan; is-1's plan approved 10 Feb → 0 of 2 then.
    "information_systems_previous": (0, 2),
    "alerts": {"high": 1, "critical": 1, "medium": 1},
    "alerts_previous": {"low": 1},
    "ack_delays_s": [600.0, 1800.0],
    "added": 1,  # pc-4 created 5 Feb
    "added_previous": 2,  # is-2 (10 Jan), projector-2 (12 Jan)
    "lost": 1,  # projector-2 lost 12 Feb
    "retired": 0,
    "retired_previous": 1,  # pc-8 retired 20 Jan
    "outages": 1,
    "outage_minutes": 20.0,
    "outages_previous": 0,
}


@dataclass
class District:
    session: Session
    store: SqliteStore
    period: Period


def _pc(
    session: Session,
    name: str,
    site: str,
    *,
    av: dict[str, Any] | None,
    registered: bool = True,
    created: datetime = DEC,
    status: str = "in_service",
    net_ok: bool | None = True,
) -> Asset:
    asset = Asset(
        kind="pc",
        name=name,
        site_id=site,
        source="agent",
        registered=registered,
        status=status,
        created_at=created,
        device_id=name,
    )
    session.add(asset)
    session.flush()
    if av is not None or net_ok is not None:
        session.add(Device(device_id=name, site_id=site, device_type="pc", asset_id=asset.id))
        session.flush()
        if av is not None:
            set_latest(session, name, "av", av, NOW)
        if net_ok is not None:
            net = {"ts": (NOW - timedelta(hours=2)).isoformat(), "internet_ok": net_ok}
            set_latest(session, name, "net", net, NOW)
    return asset


def _av(status: str, *, age: timedelta = timedelta(hours=1), stale: bool = False) -> dict[str, Any]:
    products = (
        []
        if status == "no_av"
        else [
            {
                "name": "Defender",
                "source": "defender",
                "signatures_up_to_date": not stale,
                "signature_age_hours": 200.0 if stale else 5.0,
            }
        ]
    )
    return {"ts": (NOW - age).isoformat(), "status": status, "products": products}


def _history(
    session: Session, asset: Asset, at: datetime, field: str, old: str | None, new: str | None
) -> None:
    session.add(
        AssetHistory(
            asset_id=asset.id,
            at=at,
            field=field,
            old_value=old,
            new_value=new,
            actor="tester",
            source="manual",
        )
    )


def _alert(
    session: Session,
    number: int,
    level: str,
    site: str,
    first_seen: datetime,
    state: str,
    ack_after: timedelta | None,
) -> None:
    alert = Alert(
        fingerprint=f"fp-{number}",
        rule_id="rule",
        rule_title="Rule",
        level=level,
        state=state,
        site_id=site,
        first_seen=first_seen,
        last_seen=first_seen,
        opened_at=first_seen,
        group_key=f"{site}/rule",
    )
    session.add(alert)
    session.flush()
    session.add(AlertAudit(alert_id=alert.id, at=first_seen, action="opened", actor="system"))
    if ack_after is not None:
        acked = first_seen + ack_after
        alert.acknowledged_at = acked
        session.add(AlertAudit(alert_id=alert.id, at=acked, action="acknowledged", actor="soc"))
        # A later second acknowledgement must not count: the first reaction is measured.
        session.add(
            AlertAudit(
                alert_id=alert.id, at=acked + timedelta(hours=5), action="acknowledged", actor="soc"
            )
        )


def fill_district(session: Session) -> None:
    session.add_all(
        [
            Site(id="prov", level="province", name="Tỉnh Mẫu", created_at=DEC),
            Site(id="dist", parent_id="prov", level="district", name="Huyện Mẫu", created_at=DEC),
            Site(
                id="school-a",
                parent_id="dist",
                level="school",
                name="Trường A",
                uplink_type="fibre",
                created_at=DEC,
            ),
            Site(
                id="school-b",
                parent_id="dist",
                level="school",
                name="Trường B",
                uplink_type="4g",
                created_at=DEC,
            ),
            Site(
                id="school-c",
                parent_id="dist",
                level="school",
                name="Trường C",
                uplink_type="adsl",
                created_at=DEC,
            ),
            Site(
                id="school-c-lab",
                parent_id="school-c",
                level="room",
                name="Phòng máy",
                created_at=DEC,
            ),
        ]
    )
    session.flush()
    _pc(session, "pc-1", "school-a", av=_av("protected"))
    _pc(session, "pc-2", "school-a", av=_av("at_risk", stale=True))
    _pc(session, "pc-3", "school-a", av=_av("no_av"), registered=False)
    _pc(session, "pc-4", "school-a", av=_av("protected"), created=datetime(2026, 2, 5, tzinfo=UTC))
    _pc(session, "pc-5", "school-b", av=_av("protected"), net_ok=False)
    _pc(session, "pc-6", "school-b", av=None, net_ok=None, registered=False)
    _pc(
        session,
        "pc-7",
        "school-c-lab",
        av=_av("protected", age=timedelta(days=10)),
        registered=False,
    )
    pc8 = _pc(session, "pc-8", "school-c-lab", av=_av("protected"), status="retired")
    _history(session, pc8, jan(20), "status", "in_service", "retired")
    _pc(session, "pc-9", "school-c-lab", av=_av("protected"), status="in_repair")
    projector1 = Asset(
        kind="projector",
        name="projector-1",
        site_id="school-c",
        source="manual",
        registered=True,
        created_at=DEC,
    )
    camera = Asset(
        kind="camera",
        name="camera-1",
        site_id="school-c",
        source="discovery",
        registered=False,
        created_at=DEC,
    )
    projector2 = Asset(
        kind="projector",
        name="projector-2",
        site_id="school-a",
        source="manual",
        registered=True,
        status="lost",
        created_at=jan(12),
    )
    switch = Asset(
        kind="switch",
        name="switch-1",
        site_id="school-b",
        source="manual",
        registered=True,
        created_at=DEC,
    )
    system1 = Asset(
        kind="information_system",
        name="is-1",
        site_id="school-a",
        source="manual",
        registered=True,
        security_level=2,
        protection_plan_approved_on=date(2026, 2, 10),
        created_at=DEC,
    )
    system2 = Asset(
        kind="information_system",
        name="is-2",
        site_id="school-b",
        source="manual",
        registered=True,
        security_level=3,
        created_at=jan(10),
    )
    elsewhere = Asset(
        kind="pc",
        name="other-district-pc",
        site_id=None,
        source="manual",
        registered=False,
        created_at=DEC,
    )
    session.add_all([projector1, camera, projector2, switch, system1, system2, elsewhere])
    session.flush()
    _history(session, projector2, feb(12), "status", "in_service", "lost")
    _history(session, system1, feb(10), "protection_plan_approved_on", None, "2026-02-10")
    _history(session, system2, feb(3), "security_level", None, "3")
    # camera-1 was registered in January and un-registered in February (a correction).
    _history(session, camera, feb(14), "registered", "true", "false")

    _alert(session, 1, "high", "school-a", feb(3), "acknowledged", timedelta(minutes=10))
    _alert(session, 2, "critical", "school-c-lab", feb(20), "resolved", timedelta(minutes=30))
    _alert(session, 3, "medium", "school-b", feb(27), "firing", None)
    _alert(session, 4, "low", "school-b", jan(15), "resolved", None)
    # Outside the period and outside the subtree: must not count.
    _alert(session, 5, "critical", "school-a", datetime(2026, 3, 1, 18, tzinfo=UTC), "firing", None)
    _alert(session, 6, "critical", "elsewhere", feb(4), "firing", None)
    session.commit()


def fill_store(store: SqliteStore) -> None:
    """school-a loses its link 10 Feb 03:00–03:20 UTC; every other sample says it is up."""
    points: list[Point] = []
    for site in ("school-a", "school-b"):
        start = feb(10, 2, 0)
        for minute in range(0, 120):
            at = start + timedelta(minutes=minute)
            down = site == "school-a" and feb(10, 3, 0) <= at < feb(10, 3, 20)
            for device in ("d1", "d2"):
                points.append(
                    Point(
                        MEASUREMENT_NET,
                        {"site": site, "device": device},
                        {"internet_ok": 0 if down else 1},
                        at,
                    )
                )
        # January: a single device failing while the other is up is not an outage.
        points.append(
            Point(MEASUREMENT_NET, {"site": site, "device": "d1"}, {"internet_ok": 0}, jan(10))
        )
        points.append(
            Point(MEASUREMENT_NET, {"site": site, "device": "d2"}, {"internet_ok": 1}, jan(10))
        )
    store.write(points)


@pytest.fixture
def district(migrated_db_url: str, tmp_path: Path) -> Iterator[District]:
    engine = make_engine(migrated_db_url)
    store = SqliteStore(tmp_path / "timeseries.db")
    with session_factory(engine)() as session:
        fill_district(session)
        fill_store(store)
        # The scheduler's snapshot of February's last day: the figures a closed February
        # reports for antivirus and broadband (the rows above describe that state).
        take_daily_snapshot(session, date(2026, 2, 28), FEB_SNAPSHOT_AT)
        session.commit()
        yield District(session, store, report_period("month", date(2026, 2, 15)))
    store.close()
    engine.dispose()
