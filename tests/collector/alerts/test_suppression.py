"""Silences (matchers, start, expiry) and inhibition, including the school-uplink storm."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from campuswatch.collector.alerts.manager import AlertInputError, AlertManager, AlertStateError
from campuswatch.collector.alerts.models import Alert
from campuswatch.collector.alerts.policy import AlertPolicy, InhibitionRule
from tests.collector.alerts.conftest import (
    SCHOOL,
    T0,
    Clock,
    alerts_loaded_by,
    device_offline,
    signal,
    uplink_down,
)

WAIT = timedelta(seconds=30)
DEVICES = [f"pc-{number:03}" for number in range(200)]


def open_alerts(factory: sessionmaker[Session]) -> list[Alert]:
    with factory() as session:
        return list(session.scalars(select(Alert).where(Alert.state != "resolved")))


# --- silences ---------------------------------------------------------------------------------


def test_silenced_alert_is_recorded_and_visible_but_not_notified(
    manager: AlertManager, factory: sessionmaker[Session]
) -> None:
    silence = manager.create_silence(
        [
            {"label": "site_id", "op": "=", "value": SCHOOL},
            {"label": "device_id", "op": "=~", "value": "pc-0[12]"},
        ],
        T0 + timedelta(hours=2),
        "it.le",
        "lab 1 being reimaged",
    )
    manager.process([signal("pc-01"), signal("pc-02"), signal("pc-10")], T0)

    sent = manager.tick(T0 + WAIT)

    assert [note.device_id for note in sent] == ["pc-10"]
    with factory() as session:
        rows, total = manager.list_alerts(session, state="open")
    assert total == 3
    silenced = sorted((row.device_id, row.silence_id) for row in rows if row.silenced)
    assert silenced == [("pc-01", silence.id), ("pc-02", silence.id)]


def test_regex_matchers_are_anchored_and_negative_ops_work(manager: AlertManager) -> None:
    manager.create_silence(
        [
            {"label": "device_id", "op": "=~", "value": "pc-1"},
            {"label": "level", "op": "!=", "value": "critical"},
        ],
        T0 + timedelta(hours=1),
        "it.le",
    )
    manager.process(
        [signal("pc-1"), signal("pc-10"), signal("pc-1", rule="malware-found", level="critical")],
        T0,
    )
    sent = manager.tick(T0 + WAIT)
    assert sorted((n.device_id, n.rule_id) for n in sent) == [
        ("pc-1", "malware-found"),
        ("pc-10", "av-signatures-outdated"),
    ]


def test_tag_matcher_silences_by_rule_tag(manager: AlertManager) -> None:
    manager.create_silence(
        [{"label": "tag", "op": "=", "value": "campuswatch.device_offline"}],
        T0 + timedelta(hours=1),
        "it.le",
    )
    manager.process([device_offline("pc-01"), signal("pc-01")], T0)
    sent = manager.tick(T0 + WAIT)
    assert [n.rule_id for n in sent] == ["av-signatures-outdated"]


def test_silence_created_on_open_alerts_stops_their_repeats(
    manager: AlertManager, factory: sessionmaker[Session], clock: Clock
) -> None:
    manager.process([signal()], T0)
    manager.tick(T0 + WAIT)
    clock.now = T0 + timedelta(minutes=1)
    manager.create_silence(
        [{"label": "rule_id", "op": "=", "value": "av-signatures-outdated"}],
        T0 + timedelta(days=1),
        "soc.nguyen",
        "known, fix scheduled",
    )
    assert manager.tick(T0 + timedelta(hours=5)) == []
    [alert] = open_alerts(factory)
    detail = manager.alert_detail(alert.id)
    assert [(r.action, r.actor) for r in detail.audit if r.action == "silenced"] == [
        ("silenced", "soc.nguyen")
    ]


def test_silence_expiry_notifies_alerts_still_firing(
    manager: AlertManager, factory: sessionmaker[Session]
) -> None:
    manager.create_silence(
        [{"label": "device_id", "op": "=", "value": "pc-01"}], T0 + timedelta(hours=1), "it.le"
    )
    manager.process([signal("pc-01")], T0)
    assert manager.tick(T0 + WAIT) == []

    end = T0 + timedelta(hours=1)
    assert manager.tick(end) == []  # the silence ends here; group_wait starts
    sent = manager.tick(end + WAIT)

    assert [(n.event, n.device_id) for n in sent] == [("opened", "pc-01")]
    with factory() as session:
        assert manager.list_silences(session, active_only=True) == []
        [expired] = manager.list_silences(session, active_only=False)
    assert (expired.expired_at, expired.expired_by) == (end, "system")


def test_expire_silence_by_hand_records_the_person(
    manager: AlertManager, factory: sessionmaker[Session], clock: Clock
) -> None:
    silence = manager.create_silence(
        [{"label": "device_id", "op": "=", "value": "pc-01"}], T0 + timedelta(hours=1), "it.le"
    )
    manager.process([signal("pc-01")], T0)
    clock.now = T0 + timedelta(minutes=10)

    manager.expire_silence(silence.id, "soc.tran")

    [alert] = open_alerts(factory)
    assert not alert.silenced
    audit = manager.alert_detail(alert.id).audit
    assert [(r.action, r.actor) for r in audit if r.action == "unsilenced"] == [
        ("unsilenced", "soc.tran")
    ]
    assert [n.event for n in manager.tick(clock.now + WAIT)] == ["opened"]
    with pytest.raises(AlertStateError):
        manager.expire_silence(silence.id, "soc.tran")


def test_silence_starting_later_applies_when_it_starts(
    factory: sessionmaker[Session], clock: Clock
) -> None:
    manager = AlertManager(factory, settings=AlertPolicy(escalations=()), clock=clock)
    manager.create_silence(
        [{"label": "device_id", "op": "=", "value": "pc-01"}],
        T0 + timedelta(hours=3),
        "it.le",
        starts_at=T0 + timedelta(hours=1),
    )
    manager.process([signal("pc-01")], T0)
    assert [n.event for n in manager.tick(T0 + WAIT)] == ["opened"]
    assert [a.silenced for a in open_alerts(factory)] == [False]

    assert manager.tick(T0 + timedelta(hours=1)) == []
    assert [a.silenced for a in open_alerts(factory)] == [True]

    sent = manager.tick(T0 + timedelta(hours=3))
    assert [(n.event, n.note) for n in sent] == [("updated", "no longer silenced or inhibited")]


@pytest.mark.parametrize(
    "matchers",
    [
        [],
        "site_id=x",
        [{"label": "", "op": "=", "value": "x"}],
        [{"label": "site_id", "op": "~", "value": "x"}],
        [{"label": "site_id", "op": "=~", "value": "(unclosed"}],
        [{"label": "site_id", "op": "=", "value": 5}],
    ],
)
def test_unusable_matchers_are_refused(manager: AlertManager, matchers: object) -> None:
    with pytest.raises(AlertInputError):
        manager.create_silence(matchers, T0 + timedelta(hours=1), "it.le")


def test_silence_must_end_in_the_future(manager: AlertManager) -> None:
    with pytest.raises(AlertInputError):
        manager.create_silence([{"label": "site_id", "value": SCHOOL}], T0, "it.le")


# --- inhibition: the school uplink storm ---------------------------------------------------


def test_uplink_down_gives_the_soc_one_alert_not_two_hundred(
    manager: AlertManager, factory: sessionmaker[Session]
) -> None:
    batch = [device_offline(device) for device in DEVICES] + [uplink_down()]

    sent = manager.process(batch, T0) + manager.tick(T0 + WAIT)
    sent += manager.tick(T0 + timedelta(minutes=10))

    assert [(n.event, n.rule_id) for n in sent] == [("opened", "school-uplink-down")]
    stored = open_alerts(factory)
    assert len(stored) == 201  # every device alert is recorded and visible in the UI
    uplink_id = next(a.id for a in stored if a.rule_id == "school-uplink-down")
    assert {(a.inhibited, a.inhibited_by) for a in stored if a.rule_id == "device-offline"} == {
        (True, uplink_id)
    }

    back = T0 + timedelta(minutes=20)
    recovery = [uplink_down(status="resolved", at=back)] + [
        device_offline(device, status="resolved", at=back + timedelta(seconds=5))
        for device in DEVICES
    ]
    sent = manager.process(recovery, back) + manager.tick(back + WAIT)

    assert [(n.event, n.rule_id) for n in sent] == [("resolved", "school-uplink-down")]
    assert open_alerts(factory) == []


def test_uplink_alert_arriving_after_device_alerts_still_inhibits_them(
    manager: AlertManager,
) -> None:
    manager.process([device_offline(device) for device in DEVICES[:50]], T0)
    late = T0 + timedelta(seconds=12)
    manager.process([uplink_down(at=late)], late)

    sent = manager.tick(T0 + WAIT) + manager.tick(late + WAIT)

    assert [(n.event, n.rule_id) for n in sent] == [("opened", "school-uplink-down")]


def test_devices_still_offline_after_the_uplink_returns_are_reported_as_one_group(
    manager: AlertManager,
) -> None:
    manager.process([device_offline(d) for d in DEVICES[:20]] + [uplink_down()], T0)
    manager.tick(T0 + WAIT)
    back = T0 + timedelta(minutes=5)
    resolved = manager.process([uplink_down(status="resolved", at=back)], back)
    # Most devices reconnect within group_wait and are never reported.
    manager.process(
        [device_offline(d, status="resolved", at=back) for d in DEVICES[3:20]],
        back + timedelta(seconds=10),
    )

    sent = manager.tick(back + WAIT)

    assert [n.event for n in resolved] == ["resolved"]
    assert [(n.event, n.rule_id, n.labels["group_size"]) for n in sent] == [
        ("opened", "device-offline", "3")
    ]


def test_inhibition_is_per_site(manager: AlertManager) -> None:
    manager.process(
        [uplink_down(), device_offline("cam-1", site="lab-1"), device_offline("pc-01")], T0
    )
    sent = manager.tick(T0 + WAIT)
    assert sorted((n.rule_id, n.site_id) for n in sent) == [
        ("device-offline", "lab-1"),
        ("school-uplink-down", SCHOOL),
    ]


def test_manual_resolve_of_the_source_releases_its_targets(
    manager: AlertManager, clock: Clock
) -> None:
    manager.process([device_offline("pc-01"), uplink_down()], T0)
    [uplink] = manager.tick(T0 + WAIT)
    clock.now = T0 + timedelta(minutes=2)
    assert [n.event for n in manager.resolve(uplink.alert_id, "soc.nguyen")] == ["resolved"]
    sent = manager.tick(clock.now + WAIT)
    assert [(n.event, n.device_id) for n in sent] == [("opened", "pc-01")]


# --- what a batch re-reads --------------------------------------------------------------------


def test_a_batch_of_repeats_reads_no_other_alert_of_the_school(
    manager: AlertManager, factory: sessionmaker[Session]
) -> None:
    # A district's classrooms keep a few thousand alerts open and repeat them all day, each
    # with its current reading as a label. No inhibition rule matches them, so a repeat can
    # change only its own silence: re-reading every open alert of the school (and of the
    # alert's group) for each batch was most of the ingest's alert cost.
    manager.process([signal(device, labels={"value": "1510"}) for device in DEVICES[:50]], T0)
    manager.tick(T0 + WAIT)
    later = T0 + 2 * WAIT
    repeat = signal("pc-001", labels={"value": "1620"}, at=later)

    loaded = alerts_loaded_by(factory, lambda: manager.process([repeat], later))

    assert loaded == 1  # the repeated alert itself
    repeated = next(alert for alert in open_alerts(factory) if alert.device_id == "pc-001")
    assert (repeated.labels, repeated.occurrences) == ({"value": "1620"}, 2)


def test_a_repeat_whose_labels_now_match_a_silence_is_silenced_at_once(
    manager: AlertManager, factory: sessionmaker[Session]
) -> None:
    manager.create_silence(
        [{"label": "room", "op": "=", "value": "lab-1"}], T0 + timedelta(hours=1), "it.le"
    )
    manager.process([signal("pc-01", labels={"room": "lab-2"})], T0)
    assert [alert.silenced for alert in open_alerts(factory)] == [False]

    manager.process([signal("pc-01", labels={"room": "lab-1"}, at=T0 + WAIT)], T0 + WAIT)

    assert [alert.silenced for alert in open_alerts(factory)] == [True]


def test_a_repeat_that_raises_its_level_to_an_inhibiting_one_inhibits_at_once(
    factory: sessionmaker[Session], clock: Clock
) -> None:
    critical_mutes_low = InhibitionRule(
        source_match={"level": "critical"}, target_match={"level": "low"}, equal=("site_id",)
    )
    policy = AlertPolicy(inhibitions=(critical_mutes_low,))
    manager = AlertManager(factory, settings=policy, clock=clock)
    manager.process([signal("pc-01", rule="disk-low", level="low"), signal("pc-02")], T0)
    assert not any(alert.inhibited for alert in open_alerts(factory))

    manager.process([signal("pc-02", level="critical", at=T0 + WAIT)], T0 + WAIT)

    inhibited = {alert.device_id: alert.inhibited for alert in open_alerts(factory)}
    assert inhibited == {"pc-01": True, "pc-02": False}
