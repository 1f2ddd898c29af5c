"""Signals in, alerts and notifications out: open, dedup, level change, resolve, reopen."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

from sqlalchemy import Engine, event, func, select
from sqlalchemy.orm import Session, sessionmaker

from campuswatch.collector.alerts.manager import AlertManager
from campuswatch.collector.alerts.models import Alert, AlertAudit, AlertEvidence
from campuswatch.collector.alerts.policy import AlertPolicy
from campuswatch.collector.signals import AlertSignal, Evidence
from tests.collector.alerts.conftest import SCHOOL, T0, Clock, signal

WAIT = timedelta(seconds=30)


def alerts(factory: sessionmaker[Session]) -> list[Alert]:
    with factory() as session:
        return list(session.scalars(select(Alert).order_by(Alert.id)))


def test_new_alert_is_notified_once_after_group_wait_with_site_hierarchy(
    manager: AlertManager, factory: sessionmaker[Session]
) -> None:
    assert manager.process([signal()], T0) == []
    assert manager.tick(T0 + WAIT - timedelta(seconds=1)) == []

    sent = manager.tick(T0 + WAIT)

    assert [(note.event, note.device_id, note.state) for note in sent] == [
        ("opened", "pc-01", "firing")
    ]
    note = sent[0]
    assert (note.school_id, note.district_id, note.province_id) == (SCHOOL, "ba-dinh", "hanoi")
    assert uuid.UUID(note.event_id).version == 7
    assert note.first_seen == T0 and note.occurrences == 1
    assert manager.tick(T0 + 2 * WAIT) == []
    [alert] = alerts(factory)
    assert alert.state == "firing" and alert.last_notified_at == T0 + WAIT


def test_room_level_site_resolves_to_its_school(manager: AlertManager) -> None:
    manager.process([signal(site="lab-1")], T0)
    [note] = manager.tick(T0 + WAIT)
    assert (note.site_id, note.school_id, note.province_id) == ("lab-1", SCHOOL, "hanoi")


def test_zero_group_wait_notifies_inside_process(
    factory: sessionmaker[Session], clock: Clock
) -> None:
    manager = AlertManager(factory, settings=AlertPolicy(group_wait=timedelta(0)), clock=clock)
    sent = manager.process([signal()], T0)
    assert [note.event for note in sent] == ["opened"]


def test_same_fingerprint_updates_one_alert_and_notifies_only_level_changes(
    manager: AlertManager, factory: sessionmaker[Session]
) -> None:
    manager.process([signal()], T0)
    manager.tick(T0 + WAIT)

    repeat = manager.process([signal(at=T0 + timedelta(minutes=1))], T0 + timedelta(minutes=1))
    raised = manager.process(
        [signal(level="high", at=T0 + timedelta(minutes=2))], T0 + timedelta(minutes=2)
    )

    assert repeat == []
    assert [(note.event, note.level) for note in raised] == [("updated", "high")]
    [alert] = alerts(factory)
    assert alert.occurrences == 3
    assert alert.last_seen == T0 + timedelta(minutes=2)
    assert alert.first_seen == T0
    assert alert.level == "high"


def test_evidence_is_bounded_and_redelivery_is_not_duplicated(
    factory: sessionmaker[Session], clock: Clock
) -> None:
    manager = AlertManager(factory, settings=AlertPolicy(evidence_per_alert=3), clock=clock)

    def evidence(number: int) -> Evidence:
        at = T0 + timedelta(seconds=number)
        # A datetime in the excerpt must not break JSON storage.
        return Evidence(f"msg-{number}", "av", at, {"signature_age_days": number, "at": at})

    for number in range(5):
        manager.process([signal(evidence=(evidence(number),))], T0)
    manager.process([signal(evidence=(evidence(4),))], T0)

    with factory() as session:
        rows = list(session.scalars(select(AlertEvidence).order_by(AlertEvidence.ts)))
    assert [row.message_id for row in rows] == ["msg-2", "msg-3", "msg-4"]
    assert rows[-1].excerpt == {"signature_age_days": 4, "at": str(T0 + timedelta(seconds=4))}


def test_resolve_after_notification_is_forwarded_as_automatic(
    manager: AlertManager, factory: sessionmaker[Session]
) -> None:
    manager.process([signal()], T0)
    manager.tick(T0 + WAIT)
    later = T0 + timedelta(minutes=3)

    sent = manager.process([signal(status="resolved", at=later)], later)

    assert [(note.event, note.state, note.actor) for note in sent] == [
        ("resolved", "resolved", None)
    ]
    [alert] = alerts(factory)
    assert (alert.state, alert.resolved_by, alert.resolved_at) == ("resolved", None, later)


def test_alert_resolved_before_anyone_was_told_stays_quiet(
    manager: AlertManager, factory: sessionmaker[Session]
) -> None:
    manager.process([signal()], T0)
    sent = manager.process([signal(status="resolved", at=T0 + timedelta(seconds=10))], T0)
    assert sent == []
    assert manager.tick(T0 + WAIT) == []
    assert [alert.state for alert in alerts(factory)] == ["resolved"]


def test_resolve_without_open_alert_is_counted_not_fatal(manager: AlertManager) -> None:
    assert manager.process([signal(status="resolved")], T0) == []
    assert manager.rejected["resolved_without_open_alert"] == 1


def test_firing_again_within_flap_window_reopens_the_same_alert(
    manager: AlertManager, factory: sessionmaker[Session]
) -> None:
    manager.process([signal()], T0)
    manager.tick(T0 + WAIT)
    down = T0 + timedelta(minutes=2)
    manager.process([signal(status="resolved", at=down)], down)

    back = down + timedelta(minutes=4)
    sent = manager.process([signal(at=back)], back)

    assert [note.event for note in sent] == ["reopened"]
    [alert] = alerts(factory)
    assert (alert.state, alert.occurrences, alert.resolved_at) == ("firing", 2, None)


def test_firing_after_flap_window_opens_a_new_alert(
    manager: AlertManager, factory: sessionmaker[Session]
) -> None:
    manager.process([signal()], T0)
    manager.process([signal(status="resolved", at=T0 + timedelta(minutes=1))], T0)
    late = T0 + timedelta(minutes=7)

    manager.process([signal(at=late)], late)

    assert [alert.state for alert in alerts(factory)] == ["resolved", "firing"]


def test_resolved_and_firing_again_in_one_batch_are_applied_in_order(
    manager: AlertManager, factory: sessionmaker[Session]
) -> None:
    batch = [
        signal(),
        signal(status="resolved", at=T0 + timedelta(seconds=5)),
        signal(at=T0 + timedelta(seconds=8)),
    ]
    manager.process(batch, T0)
    [alert] = alerts(factory)
    assert (alert.state, alert.occurrences) == ("firing", 2)


def test_bad_signals_are_counted_and_the_good_ones_still_apply(
    manager: AlertManager, factory: sessionmaker[Session]
) -> None:
    good = signal("pc-02")
    naive = AlertSignal(**{**_fields(signal("pc-03")), "at": T0.replace(tzinfo=None)})
    bad_level = AlertSignal(**{**_fields(signal("pc-04")), "level": "urgent"})
    no_site = AlertSignal(**{**_fields(signal("pc-05")), "site_id": ""})
    long_fingerprint = AlertSignal(**{**_fields(signal("pc-06")), "fingerprint": "x" * 1000})
    no_count = AlertSignal(**{**_fields(signal("pc-07")), "occurrences": 0})

    batch = [naive, bad_level, no_site, "junk", good, long_fingerprint, no_count]
    manager.process(batch, T0)  # type: ignore[arg-type]

    assert manager.rejected == {
        "at": 1, "level": 1, "site_id": 1, "not_a_signal": 1, "occurrences": 1,
    }  # fmt: skip
    stored = alerts(factory)
    assert [alert.device_id for alert in stored] == ["pc-02", "pc-06"]
    assert stored[1].fingerprint.startswith("sha256:")


def _fields(value: AlertSignal) -> dict[str, Any]:
    return {name: getattr(value, name) for name in AlertSignal.__slots__}


def test_duplicate_fingerprint_count_in_database_is_one(
    manager: AlertManager, factory: sessionmaker[Session]
) -> None:
    for minute in range(5):
        at = T0 + timedelta(minutes=minute)
        manager.process([signal(at=at), signal(at=at)], at)
    with factory() as session:
        count = session.scalar(select(func.count()).select_from(Alert))
    assert count == 1


def test_a_batch_opening_many_alerts_inserts_them_together_with_their_audit_and_evidence(
    manager: AlertManager, factory: sessionmaker[Session], engine: Engine
) -> None:
    # A district's first reports (after a restart, or when the morning's CO2 climbs) open
    # thousands of alerts at once; a flush for each was most of that cost.
    statements: list[str] = []

    def record(_conn: object, _cursor: object, statement: str, *_args: object) -> None:
        statements.append(statement.lstrip().upper())

    devices = [f"pc-{number:02}" for number in range(40)]
    batch = [
        signal(device, evidence=(Evidence(f"msg-{device}", "av", T0, {"n": 1}),))
        for device in devices
    ]
    batch.append(signal("pc-00", level="high", at=T0 + timedelta(seconds=1)))  # same batch
    event.listen(engine, "before_cursor_execute", record)
    try:
        manager.process(batch, T0)
    finally:
        event.remove(engine, "before_cursor_execute", record)

    inserts = [i for i, text in enumerate(statements) if text.startswith("INSERT INTO ALERTS ")]
    # One flush: the inserts follow each other. PostgreSQL takes them as one statement;
    # SQLAlchemy sends SQLite one per row (it cannot match RETURNING rows to objects there).
    assert inserts == list(range(inserts[0], inserts[0] + len(inserts)))
    if engine.dialect.name == "postgresql":
        assert len(inserts) == 1
    with factory() as session:
        opened = list(session.scalars(select(Alert).order_by(Alert.device_id)))
        assert [alert.device_id for alert in opened] == devices
        # Most severe first: the high signal opened pc-00's alert, the medium one folded in.
        assert (opened[0].level, opened[0].occurrences) == ("medium", 2)
        audits = {
            (alert_id, action): note
            for alert_id, action, note in session.execute(
                select(AlertAudit.alert_id, AlertAudit.action, AlertAudit.note)
            )
        }
        rows = session.execute(select(AlertEvidence.message_id, AlertEvidence.alert_id))
        evidence = {message_id: alert_id for message_id, alert_id in rows}
    for alert in opened:
        assert (alert.id, "opened") in audits
        assert evidence[f"msg-{alert.device_id}"] == alert.id
    assert audits[(opened[0].id, "updated")] == "level high -> medium"
