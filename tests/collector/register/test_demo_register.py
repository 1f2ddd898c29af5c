"""The demo's register starts realistic: most of the simulated equipment registered with
room and tag, some not (issue 19 item 1). The demo end to end is tests/collector/test_demo.py."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from campuswatch.collector.db.models import Asset, Site
from campuswatch.collector.demo import DISTRICT, seed_register
from campuswatch.collector.register.assets import digital_record_coverage
from campuswatch.firmware_sim.fleet import build_fleet


def test_the_demo_register_holds_most_equipment_with_rooms_and_tags(session: Session) -> None:
    session.add(Site(id=DISTRICT, level="district", name="Huyện mô phỏng"))
    for number in (1, 2, 3):
        site_id = f"{DISTRICT}-s{number:02d}"
        session.add(Site(id=site_id, level="school", name=site_id, parent_id=DISTRICT))
    session.flush()
    added = seed_register(session, schools=3, devices=300, seed=7)
    session.commit()
    fleet = build_fleet(seed=7, schools=3, devices=300, site_prefix=DISTRICT)
    equipment = len(fleet.devices) + len(fleet.scanners)
    assert 0.7 * equipment <= added <= 0.9 * equipment
    registered = list(session.scalars(select(Asset)))
    assert all(a.registered and a.room and a.asset_tag and a.device_id for a in registered)
    known = {device.device_id: device for device in fleet.devices}
    sample = next(a for a in registered if a.device_id in known)
    device = known[sample.device_id]  # type: ignore[index]
    assert (sample.name, sample.serial, sample.mac_list) == (
        device.hostname,
        device.serial,
        [device.mac],
    )
    # Every device reporting adds the unregistered rest: the KPI then reads the share.
    assert digital_record_coverage(session) == (added, added)
    # A resumed demo keeps what people did to the register.
    assert seed_register(session, schools=3, devices=300, seed=7) == 0
    assert session.scalar(select(func.count(Asset.id))) == added
