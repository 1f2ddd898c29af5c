"""The bulk path for routine messages: known devices updated in a few statements per batch."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from campuswatch.collector.db.models import Asset, Device
from campuswatch.collector.register.assets import apply_message, apply_routine_batch, edit_asset
from campuswatch.wire.messages import HealthMessage, HelloMessage
from tests.collector.register.conftest import T0, decoded

SITE = "hcm-q1-thcs-a"


def health(device_id: str, minutes: int, site: str = SITE) -> HealthMessage:
    return HealthMessage(
        device_id=device_id, site=site, ts=T0 + timedelta(minutes=minutes), cpu_pct=5.0
    )


def known_pc(session: Session, device_id: str = "pc-1") -> Asset:
    apply_message(
        session,
        decoded(
            HelloMessage(
                device_id=device_id,
                site=SITE,
                ts=T0,
                device_type="pc",
                software="campuswatch-agent",
                software_version="0.1.0",
            )
        ),
    )
    session.commit()
    asset = session.scalars(select(Asset).where(Asset.device_id == device_id)).one()
    return asset


def test_known_devices_take_the_bulk_path_and_last_seen_only_moves_forward(
    session: Session,
) -> None:
    asset = known_pc(session)
    version = asset.version
    newest, older = health("pc-1", 10), health("pc-1", 5)
    remaining = apply_routine_batch(session, [decoded(newest), decoded(older)])
    session.commit()
    assert remaining == []
    session.expire_all()
    asset = session.get_one(Asset, asset.id)
    assert asset.last_seen == newest.ts + timedelta(seconds=1)
    # A sighting is not an edit: the optimistic-lock version stays.
    assert asset.version == version
    device = session.get_one(Device, "pc-1")
    assert device.latest["health"]["id"] == newest.id

    apply_routine_batch(session, [decoded(health("pc-1", 1))])  # a late backlog message
    session.commit()
    session.expire_all()
    assert session.get_one(Asset, asset.id).last_seen == newest.ts + timedelta(seconds=1)


def test_an_edit_begun_before_routine_traffic_still_saves(session: Session) -> None:
    asset = known_pc(session)
    seen = asset.version
    apply_routine_batch(session, [decoded(health("pc-1", 3))])
    session.commit()
    session.expire_all()
    edit_asset(session, asset.id, {"room": "P.101"}, actor="cô Lan", expected_version=seen)
    session.commit()
    assert session.get_one(Asset, asset.id).room == "P.101"


def test_first_contact_and_a_site_move_are_left_for_the_full_path(session: Session) -> None:
    known_pc(session)
    new_device = decoded(health("pc-new", 1))
    moved = decoded(health("pc-1", 2, site="dn-hc-thpt-b"))
    routine = decoded(health("pc-1", 3))
    remaining = apply_routine_batch(session, [new_device, moved, routine])
    assert remaining == [new_device, moved]
