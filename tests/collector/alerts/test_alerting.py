"""Rules engine and alert lifecycle together (``collector/alerting.py``), the shipped rule
pack, a real register database and injected times: repeats, people resolving alerts whose
condition still holds, and timers across a restart."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from campuswatch.collector.alerting import Alerting
from campuswatch.collector.alerts.models import Alert, AlertEvidence
from campuswatch.collector.alerts.policy import AlertPolicy
from campuswatch.collector.db.models import Device
from campuswatch.collector.ingest import BatchContext
from campuswatch.collector.register.device_state import record_latest
from campuswatch.wire.codec import DecodedMessage
from campuswatch.wire.ids import utc_now
from campuswatch.wire.messages import (
    AvMessage,
    AvProduct,
    HealthMessage,
    HelloMessage,
    Message,
    StateMessage,
    kind_of,
)
from campuswatch.wire.topics import Topic
from tests.collector.alerts.conftest import SCHOOL

PC = "pc-lab1-07"
PROJECTOR = "proj-room-12"
REALTIME_OFF = "Real-time protection off"


def alerting(factory: sessionmaker[Session]) -> Alerting:
    return Alerting(
        factory,
        rules_dir=None,  # the shipped pack
        forwarding_config=None,
        collector_id="test",
        policy=AlertPolicy(group_wait=timedelta(0)),
    )


def received(message: Message, at: datetime) -> DecodedMessage:
    topic = Topic(message.site, message.device_id, kind_of(message))
    return DecodedMessage(topic, message, at, 0.0)


def feed(target: Alerting, factory: sessionmaker[Session], batch: Sequence[DecodedMessage]) -> None:
    """What ingest does with a stored batch: the sink, then its post-commit work."""
    context = BatchContext()
    with factory() as session:
        target.handle(session, batch, context)
    for work in context.after_commit:
        work()


def realtime_off(at: datetime) -> DecodedMessage:
    product = AvProduct(name="Microsoft Defender Antivirus", source="defender",
                        enabled=True, realtime_protection=False)  # fmt: skip
    message = AvMessage(device_id=PC, site=SCHOOL, ts=at, status="at_risk", products=[product])
    return received(message, at)


def alerts_of(factory: sessionmaker[Session], title: str) -> list[Alert]:
    with factory() as session:
        return list(
            session.scalars(select(Alert).where(Alert.rule_title == title).order_by(Alert.id))
        )


def test_repeats_raise_count_last_seen_and_evidence_in_one_batch_per_tick(
    factory: sessionmaker[Session],
) -> None:
    start = utc_now()
    target = alerting(factory)
    feed(target, factory, [realtime_off(start)])
    [alert] = alerts_of(factory, REALTIME_OFF)
    assert alert.occurrences == 1

    repeats = [realtime_off(start + timedelta(seconds=10 * n)) for n in range(1, 5)]
    for item in repeats:
        feed(target, factory, [item])
    # Nothing written per message for an alert that did not change state...
    [alert] = alerts_of(factory, REALTIME_OFF)
    assert alert.occurrences == 1
    # ...the folded repeats land with the next tick.
    target.tick(start + timedelta(seconds=45))
    [alert] = alerts_of(factory, REALTIME_OFF)
    assert (alert.occurrences, alert.last_seen) == (5, repeats[-1].received_at)
    assert alert.first_seen == start
    with factory() as session:
        evidence = set(
            session.scalars(
                select(AlertEvidence.message_id).where(AlertEvidence.alert_id == alert.id)
            )
        )
    assert repeats[-1].message.id in evidence


def test_resolved_by_hand_while_still_off_reopens_on_the_next_trigger(
    factory: sessionmaker[Session],
) -> None:
    start = utc_now()
    target = alerting(factory)
    feed(target, factory, [realtime_off(start)])
    [alert] = alerts_of(factory, REALTIME_OFF)
    target.manager.resolve(alert.id, "soc.nguyen", "fixed, I think")
    target.tick(start + timedelta(seconds=10))

    # Still off: the next report reopens the same alert (inside the flap window)...
    feed(target, factory, [realtime_off(start + timedelta(minutes=1))])
    target.tick(start + timedelta(minutes=1, seconds=5))
    [again] = alerts_of(factory, REALTIME_OFF)
    assert (again.id, again.state, again.resolved_by) == (alert.id, "firing", None)

    # ...and after the flap window a report opens a new one.
    target.manager.resolve(alert.id, "soc.nguyen", "really fixed")
    target.tick(start + timedelta(minutes=1, seconds=10))
    feed(target, factory, [realtime_off(start + timedelta(minutes=9))])
    target.tick(start + timedelta(minutes=9, seconds=5))
    states = [(each.id == alert.id, each.state) for each in alerts_of(factory, REALTIME_OFF)]
    assert states == [(True, "resolved"), (False, "firing")]


def test_a_silent_agent_resolved_by_hand_comes_back_on_the_next_tick(
    factory: sessionmaker[Session],
) -> None:
    start = utc_now() - timedelta(minutes=16)  # people act on the real clock
    target = alerting(factory)
    hello = HelloMessage(device_id=PC, site=SCHOOL, ts=start, device_type="pc",
                         software="campuswatch-agent", software_version="0.1.0")  # fmt: skip
    health = HealthMessage(device_id=PC, site=SCHOOL, ts=start, cpu_pct=3.0)
    feed(target, factory, [received(hello, start), received(health, start)])
    target.tick(utc_now())
    [alert] = alerts_of(factory, "Agent silent")
    target.manager.resolve(alert.id, "soc.nguyen", "probably switched off")

    target.tick(utc_now() + timedelta(seconds=10))
    [again] = alerts_of(factory, "Agent silent")
    assert (again.id, again.state) == (alert.id, "firing")


def test_a_device_offline_timer_pending_at_restart_still_fires(
    factory: sessionmaker[Session],
) -> None:
    """The retained will arrived 2 minutes before the restart; after it the broker's
    redelivery is a duplicate, so only the register can bring the 10-minute timer back."""
    start = utc_now()
    hello = HelloMessage(device_id=PROJECTOR, site=SCHOOL, ts=start, device_type="projector",
                         software="fw", software_version="2.1")  # fmt: skip
    will = StateMessage(device_id=PROJECTOR, site=SCHOOL, ts=start - timedelta(days=2),
                        status="offline", reason="will")  # fmt: skip
    stored = [received(hello, start), received(will, start + timedelta(minutes=1))]
    before = alerting(factory)
    feed(before, factory, stored)
    with factory() as session, session.begin():
        session.add(Device(device_id=PROJECTOR, site_id=SCHOOL))
        session.flush()
        record_latest(session, stored)

    after = alerting(factory)  # the restarted collector
    after.restore_state()
    after.tick(start + timedelta(minutes=10, seconds=30))
    assert alerts_of(factory, "Smart-classroom device offline") == []
    after.tick(start + timedelta(minutes=11, seconds=5))
    [alert] = alerts_of(factory, "Smart-classroom device offline")
    assert (alert.device_id, alert.state) == (PROJECTOR, "firing")
