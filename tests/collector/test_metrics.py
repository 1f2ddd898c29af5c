"""What /metrics says about antivirus coverage (the plans' KPI), on either register."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy.orm import Session

from campuswatch.collector.db.engine import make_engine, session_factory, upgrade
from campuswatch.collector.db.models import Device, DeviceLatest, Site
from campuswatch.collector.metrics import antivirus_coverage

NOW = datetime(2025, 3, 4, 2, 0, tzinfo=UTC)


def add_device(session: Session, device_id: str, site: str, device_type: str | None) -> None:
    session.add(Device(device_id=device_id, site_id=site, device_type=device_type))


def add_av(session: Session, device_id: str, body: dict[str, object]) -> None:
    session.add(DeviceLatest(device_id=device_id, kind="av", ts=NOW, received_at=NOW, body=body))


def test_antivirus_coverage_counts_each_pc_and_server_by_its_latest_report(db_url: str) -> None:
    upgrade(db_url)
    engine = make_engine(db_url)
    sessions = session_factory(engine)
    try:
        with sessions() as session, session.begin():
            session.add_all(
                [
                    Site(id="district", level="district", name="District"),
                    Site(id="school-a", level="school", name="A", parent_id="district"),
                    Site(id="school-b", level="school", name="B", parent_id="district"),
                ]
            )
            session.flush()
            for n in range(3):
                add_device(session, f"pc-a{n}", "school-a", "pc")
            add_device(session, "server-a", "school-a", "server")
            add_device(session, "pc-b1", "school-b", "pc")
            add_device(session, "pc-b2", "school-b", "pc")
            add_device(session, "camera-b", "school-b", "camera")  # not a PC: not counted
            add_device(session, "unknown-b", "school-b", None)  # type not yet known
            session.flush()
            add_av(session, "pc-a0", {"status": "protected", "products": []})
            add_av(session, "pc-a1", {"status": "protected"})
            add_av(session, "pc-a2", {"status": "at_risk", "reason": "signatures 9 days old"})
            add_av(session, "server-a", {"status": "no_antivirus"})
            add_av(session, "pc-b1", {"status": "protected"})
            add_av(session, "camera-b", {"status": "protected"})
            add_av(session, "pc-b2", {"products": []})  # no status in it: not reported
        with sessions() as session:
            coverage = antivirus_coverage(session)
    finally:
        engine.dispose()
    assert coverage == {
        ("school-a", "protected"): 2,
        ("school-a", "at_risk"): 1,
        ("school-a", "no_antivirus"): 1,
        ("school-b", "protected"): 1,
        ("school-b", "unreported"): 1,
    }
