"""What time alone causes: repeats, escalation steps and group reports (injected clock)."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

from sqlalchemy.orm import Session, sessionmaker

from campuswatch.collector.alerts.manager import AlertManager
from campuswatch.collector.alerts.policy import AlertPolicy, EscalationStep
from tests.collector.alerts.conftest import T0, Clock, alerts_loaded_by, signal

WAIT = timedelta(seconds=30)


def test_unacknowledged_alert_repeats_every_repeat_interval(
    factory: sessionmaker[Session],
) -> None:
    manager = AlertManager(factory, settings=AlertPolicy(escalations=()))
    manager.process([signal()], T0)
    manager.tick(T0 + WAIT)
    first = T0 + WAIT

    assert manager.tick(first + timedelta(hours=4) - timedelta(seconds=1)) == []
    assert [note.event for note in manager.tick(first + timedelta(hours=4))] == ["repeated"]
    assert manager.tick(first + timedelta(hours=5)) == []
    assert [note.event for note in manager.tick(first + timedelta(hours=8))] == ["repeated"]


def test_acknowledged_alert_does_not_repeat_or_escalate(manager: AlertManager) -> None:
    manager.process([signal(level="critical")], T0)
    [opened] = manager.tick(T0 + WAIT)
    manager.acknowledge(opened.alert_id, "soc.nguyen")
    assert manager.tick(T0 + timedelta(hours=5)) == []


def test_high_alert_escalates_to_district_then_province(manager: AlertManager) -> None:
    manager.process([signal(level="high")], T0)
    manager.tick(T0 + WAIT)

    assert manager.tick(T0 + timedelta(minutes=14)) == []
    step_one = manager.tick(T0 + timedelta(minutes=15))
    assert manager.tick(T0 + timedelta(minutes=30)) == []
    step_two = manager.tick(T0 + timedelta(minutes=60))

    assert [(n.event, n.labels["escalate_to"]) for n in step_one] == [("escalated", "district")]
    assert [(n.event, n.labels["escalate_to"]) for n in step_two] == [("escalated", "province")]
    assert manager.tick(T0 + timedelta(minutes=90)) == []


def test_medium_alert_skips_the_high_only_step(manager: AlertManager) -> None:
    manager.process([signal(level="medium")], T0)
    manager.tick(T0 + WAIT)
    assert manager.tick(T0 + timedelta(minutes=20)) == []
    [note] = manager.tick(T0 + timedelta(minutes=61))
    assert (note.event, note.labels["escalate_to"], note.labels["escalation_step"]) == (
        "escalated",
        "province",
        "2",
    )


def test_overdue_steps_collapse_into_one_escalation(
    factory: sessionmaker[Session],
) -> None:
    steps = (
        EscalationStep(after=timedelta(minutes=5), notify="school"),
        EscalationStep(after=timedelta(minutes=10), notify="district"),
    )
    manager = AlertManager(factory, settings=AlertPolicy(escalations=steps))
    manager.process([signal()], T0)
    manager.tick(T0 + WAIT)
    sent = manager.tick(T0 + timedelta(hours=1))
    assert [(n.event, n.labels["escalate_to"]) for n in sent] == [("escalated", "district")]


def test_group_members_are_reported_together_not_one_by_one(manager: AlertManager) -> None:
    manager.process([signal(f"pc-{n:02}") for n in range(5)], T0)
    # One more arrives within group_wait: it joins the first report.
    manager.process([signal("pc-05")], T0 + timedelta(seconds=20))

    first = manager.tick(T0 + WAIT)

    assert [note.event for note in first] == ["opened"]
    assert first[0].labels["group_size"] == "6"
    assert first[0].note is not None and first[0].note.startswith("5 more")

    later = T0 + timedelta(minutes=1)
    manager.process([signal("pc-06", at=later), signal("pc-07", at=later)], later)
    assert manager.tick(T0 + WAIT + timedelta(minutes=5) - timedelta(seconds=1)) == []
    digest = manager.tick(T0 + WAIT + timedelta(minutes=5))
    assert [(n.event, n.alert_id, n.labels["group_new"]) for n in digest] == [
        ("updated", first[0].alert_id, "2")
    ]
    assert manager.tick(T0 + WAIT + timedelta(minutes=11)) == []


def test_groups_are_per_site_and_rule(manager: AlertManager) -> None:
    manager.process(
        [
            signal("pc-01"),
            signal("pc-02"),
            signal("pc-01", rule="agent-silent"),
            signal("cam-1", site="lab-1"),
        ],
        T0,
    )
    sent = manager.tick(T0 + WAIT)
    assert sorted((n.site_id, n.rule_id) for n in sent) == [
        ("lab-1", "av-signatures-outdated"),
        ("thcs-le-loi", "agent-silent"),
        ("thcs-le-loi", "av-signatures-outdated"),
    ]


def test_when_the_reported_member_resolves_another_takes_over(manager: AlertManager) -> None:
    manager.process([signal("pc-01"), signal("pc-02")], T0)
    [opened] = manager.tick(T0 + WAIT)
    resolved_at = T0 + timedelta(minutes=2)
    head_device = opened.device_id
    other = "pc-02" if head_device == "pc-01" else "pc-01"

    sent = manager.process([signal(head_device, status="resolved", at=resolved_at)], resolved_at)

    assert [(n.event, n.device_id) for n in sent] == [
        ("resolved", head_device),
        ("opened", other),
    ]


def test_list_groups_counts_states(manager: AlertManager) -> None:
    manager.process([signal(f"pc-{n}") for n in range(3)] + [signal("pc-9", level="high")], T0)
    [opened] = manager.tick(T0 + WAIT)
    manager.acknowledge(opened.alert_id, "soc.tran")

    [group] = manager.groups()

    assert (group.open, group.firing, group.acknowledged, group.level) == (4, 3, 1, "high")
    assert manager.groups(site_ids=[]) == []


def test_repeats_reach_the_soc_as_one_update_per_update_interval(
    factory: sessionmaker[Session], clock: Clock
) -> None:
    manager = AlertManager(factory, settings=AlertPolicy(escalations=()), clock=clock)
    manager.process([signal()], T0)
    [opened] = manager.tick(T0 + WAIT)
    told = T0 + WAIT
    assert opened.occurrences == 1

    seen = T0 + timedelta(minutes=1)
    assert manager.process([replace(signal(at=seen), occurrences=3)], seen) == []
    assert manager.tick(told + timedelta(minutes=4)) == []  # within update_interval
    [update] = manager.tick(told + timedelta(minutes=5))
    assert (update.event, update.occurrences) == ("updated", 4)
    assert (update.first_seen, update.last_seen) == (T0, seen)
    assert manager.tick(told + timedelta(minutes=11)) == []  # nothing new: nothing sent

    # Acknowledged alerts still get their count updated, at the same cadence.
    clock.now = told + timedelta(minutes=12)
    manager.acknowledge(update.alert_id, "soc.nguyen")
    seen = told + timedelta(minutes=12, seconds=1)
    manager.process([replace(signal(at=seen), occurrences=2)], seen)
    assert manager.tick(told + timedelta(minutes=13)) == []
    [again] = manager.tick(told + timedelta(minutes=17))
    assert (again.event, again.state, again.occurrences, again.last_seen) == (
        "updated", "acknowledged", 6, seen,
    )  # fmt: skip


def test_a_tick_with_nothing_due_loads_no_alert(
    manager: AlertManager, factory: sessionmaker[Session]
) -> None:
    # A district keeps tens of thousands of alerts open (every unknown host its schools'
    # scans find); loading each of them every 10 s made the tick most of the collector's work
    # once they piled up. The tick reads their timings and loads only what has news due.
    manager.process([signal(f"pc-{number:03}") for number in range(50)], T0)
    assert len(manager.tick(T0 + timedelta(seconds=30))) == 1  # the group's first report

    loaded = alerts_loaded_by(factory, lambda: manager.tick(T0 + timedelta(seconds=60)))

    assert loaded == 0


def test_a_batch_loads_a_group_s_alerts_only_when_the_group_has_news(
    manager: AlertManager, factory: sessionmaker[Session]
) -> None:
    # When a district's PCs first report stale signatures, each batch opens a few alerts in
    # each school's group, and loaded every open alert of those groups to ask whether the
    # group had anything to report: it rarely has (a member joining a reported group waits
    # for the group interval). It reads their timings, and loads a group only with news.
    manager.process([signal(f"pc-{number:03}") for number in range(50)], T0)
    assert len(manager.tick(T0 + WAIT)) == 1  # the group's first report
    joining = T0 + timedelta(seconds=40)

    loaded = alerts_loaded_by(
        factory, lambda: manager.process([signal("pc-new", at=joining)], joining)
    )

    assert loaded == 0, loaded
    # News still goes out from a batch: a member joining after the group interval.
    late = T0 + WAIT + AlertPolicy().group_interval
    [update] = manager.process([signal("pc-late", at=late)], late)
    assert update.event == "updated"
