"""The bulk path for routine messages: known devices updated in a few statements per batch."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from campuswatch.collector.db.models import Asset, Device
from campuswatch.collector.register.assets import apply_message, apply_routine_batch, edit_asset
from campuswatch.wire.codec import DecodedMessage
from campuswatch.wire.messages import HealthMessage, HelloMessage
from campuswatch.wire.topics import Topic
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


def test_a_sighting_within_the_resolution_writes_nothing(session: Session) -> None:
    """A district's devices report every 30 s; rewriting their devices and assets rows for
    each report was a quarter of a collector's CPU on SQLite (a page written per device per
    message). Last seen is written when it has moved on by the resolution; a new clock
    skew is written at once."""
    asset = known_pc(session)
    resolution = timedelta(seconds=60)

    def store(item: DecodedMessage) -> tuple[Device, Asset]:
        apply_routine_batch(session, [item], seen_resolution=resolution)
        session.commit()
        session.expire_all()
        return session.get_one(Device, "pc-1"), session.get_one(Asset, asset.id)

    def after(seconds: int) -> HealthMessage:
        return HealthMessage(
            device_id="pc-1", site=SITE, ts=T0 + timedelta(seconds=seconds), cpu_pct=5.0
        )

    first = after(600)
    device, seen = store(decoded(first))
    assert device.last_seen == seen.last_seen == first.ts + timedelta(seconds=1)
    within = after(630)
    device, seen = store(decoded(within))
    assert device.last_seen == seen.last_seen == first.ts + timedelta(seconds=1)
    assert device.latest["health"]["id"] == within.id  # the newest report is still stored
    beyond = after(661)
    device, seen = store(decoded(beyond))
    assert device.last_seen == seen.last_seen == beyond.ts + timedelta(seconds=1)
    # A clock that jumped is news at once, whatever the resolution.
    skewed = after(670)
    topic = Topic(SITE, "pc-1", "health")
    device, _ = store(DecodedMessage(topic, skewed, skewed.ts + timedelta(seconds=1), -3600.0))
    assert device.clock_skew_s == -3600.0
