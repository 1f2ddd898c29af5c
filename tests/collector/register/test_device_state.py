"""Devices' live state written set-based: newest message per kind, last seen, online."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Literal

from sqlalchemy import select
from sqlalchemy.orm import Session

from campuswatch.collector.db.models import Device, DeviceLatest, Site
from campuswatch.collector.register.device_state import record_latest, touch_devices
from campuswatch.wire.codec import DecodedMessage
from campuswatch.wire.messages import AvMessage, HealthMessage, StateMessage
from tests.collector.register.conftest import T0, decoded

SITE = "hcm-q1-thcs-a"


def _devices(session: Session, *device_ids: str) -> None:
    session.add(Site(id=SITE, name="THCS A", level="school"))
    session.flush()  # no ORM relationship orders the site before its devices
    for device_id in device_ids:
        session.add(Device(device_id=device_id, site_id=SITE))
    session.flush()


def health(device_id: str, minutes: float, cpu: float = 5.0) -> HealthMessage:
    return HealthMessage(
        device_id=device_id, site=SITE, ts=T0 + timedelta(minutes=minutes), cpu_pct=cpu
    )


def state(device_id: str, minutes: float, status: Literal["online", "offline"]) -> StateMessage:
    return StateMessage(
        device_id=device_id, site=SITE, ts=T0 + timedelta(minutes=minutes), status=status
    )


def latest_rows(session: Session) -> dict[tuple[str, str], DeviceLatest]:
    session.expire_all()
    return {(row.device_id, row.kind): row for row in session.scalars(select(DeviceLatest))}


def test_the_newest_message_of_each_kind_wins_whatever_the_arrival_order(
    session: Session,
) -> None:
    _devices(session, "pc-1", "pc-2")
    first, second = decoded(health("pc-1", 5, cpu=50.0)), decoded(health("pc-1", 1, cpu=10.0))
    other = decoded(health("pc-2", 1))
    # Within one batch: the later message by its own time wins, not the later arrival.
    assert record_latest(session, [first, second, other]) == {first.message.id, other.message.id}
    session.commit()
    rows = latest_rows(session)
    assert rows[("pc-1", "health")].body["cpu_pct"] == 50.0
    assert rows[("pc-1", "health")].ts == first.message.ts
    assert rows[("pc-1", "health")].received_at == first.received_at

    # Across batches: a late backlog message is not the newest and changes nothing.
    late = decoded(health("pc-1", 3, cpu=30.0))
    assert record_latest(session, [late]) == set()
    session.commit()
    assert latest_rows(session)[("pc-1", "health")].body["cpu_pct"] == 50.0

    # Another kind is kept beside it; a newer health replaces the old one.
    av = AvMessage(device_id="pc-1", site=SITE, ts=T0, status="protected", products=[])
    newer = decoded(health("pc-1", 9, cpu=90.0))
    assert record_latest(session, [decoded(av), newer]) == {av.id, newer.message.id}
    session.commit()
    session.expire_all()  # rows written in SQL: the identity map still holds the old ones
    device = session.get_one(Device, "pc-1")
    assert device.latest["health"]["cpu_pct"] == 90.0
    assert device.latest["av"]["status"] == "protected"
    assert set(device.last_message_at) == {"av", "health"}


def _store(session: Session, message: StateMessage) -> tuple[DecodedMessage, Device]:
    """Ingest's routine path for one message; the device row as then committed."""
    item = decoded(message)
    touch_devices(session, [item], record_latest(session, [item]))
    session.commit()
    session.expire_all()
    return item, session.get_one(Device, message.device_id)


def test_last_seen_only_moves_forward_and_state_sets_online(session: Session) -> None:
    _devices(session, "pc-1")
    online, device = _store(session, state("pc-1", 1, "online"))
    assert (device.online, device.status_changed_at) == (True, online.received_at)
    assert device.last_seen == online.received_at

    # An older "offline" (a backlog) neither flips the state nor moves last seen back.
    _, device = _store(session, state("pc-1", 0, "offline"))
    assert (device.online, device.last_seen) == (True, online.received_at)

    offline, device = _store(session, state("pc-1", 4, "offline"))
    assert (device.online, device.status_changed_at) == (False, offline.received_at)
    assert device.last_seen == offline.received_at
    assert device.clock_skew_s == offline.clock_skew_s


def test_a_redelivered_message_changes_nothing(session: Session) -> None:
    _devices(session, "pc-1")
    message = decoded(health("pc-1", 2))
    record_latest(session, [message])
    session.commit()
    before = latest_rows(session)[("pc-1", "health")]
    snapshot = (before.ts, before.received_at, before.body)
    # Same message, same time: stored again, identical.
    record_latest(session, [message])
    session.commit()
    after = latest_rows(session)[("pc-1", "health")]
    assert (after.ts, after.received_at, after.body) == snapshot


def test_a_will_arriving_after_the_online_it_ends_takes_effect(session: Session) -> None:
    """The broker stamps nothing: a Last Will carries the time its connection was attempted,
    a few ms before the "online" that connection then published. Arrival order is the truth
    for ``state`` (one retained topic, delivered in the broker's order)."""
    _devices(session, "pc-1")
    connected = T0 + timedelta(minutes=1)
    will = StateMessage(
        device_id="pc-1", site=SITE, ts=connected - timedelta(milliseconds=5),
        status="offline", reason="will",
    )  # fmt: skip
    online = StateMessage(device_id="pc-1", site=SITE, ts=connected, status="online")
    _store_at(session, online, connected + timedelta(milliseconds=20))
    killed = connected + timedelta(hours=3)
    device = _store_at(session, will, killed)
    assert (device.online, device.status_changed_at) == (False, killed)
    assert latest_rows(session)[("pc-1", "state")].body["reason"] == "will"

    # The device reconnects: its new "online" (newer in both time and arrival) wins again.
    back = StateMessage(device_id="pc-1", site=SITE, ts=killed, status="online")
    device = _store_at(session, back, killed + timedelta(seconds=30))
    assert device.online is True

    # Both in one batch, will last: the will still wins.
    items = [
        decoded(StateMessage(device_id="pc-1", site=SITE, ts=killed + timedelta(minutes=1),
                             status="online"), killed + timedelta(minutes=1)),
        decoded(StateMessage(device_id="pc-1", site=SITE, ts=killed, status="offline",
                             reason="will"), killed + timedelta(minutes=2)),
    ]  # fmt: skip
    touch_devices(session, items, record_latest(session, items))
    session.commit()
    session.expire_all()
    assert session.get_one(Device, "pc-1").online is False


def _store_at(session: Session, message: StateMessage, received_at: datetime) -> Device:
    item = decoded(message, received_at)
    touch_devices(session, [item], record_latest(session, [item]))
    session.commit()
    session.expire_all()
    return session.get_one(Device, message.device_id)
