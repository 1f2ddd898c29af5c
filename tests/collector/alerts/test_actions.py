"""Human actions: acknowledge, resolve, comment; the audit trail and invalid transitions."""

from __future__ import annotations

from datetime import timedelta

import pytest

from campuswatch.collector.alerts.manager import (
    AlertInputError,
    AlertManager,
    AlertNotFound,
    AlertStateError,
)
from campuswatch.collector.signals import AlertNotification
from tests.collector.alerts.conftest import T0, Clock, signal

WAIT = timedelta(seconds=30)


def opened(manager: AlertManager) -> AlertNotification:
    manager.process([signal()], T0)
    [note] = manager.tick(T0 + WAIT)
    return note


def test_acknowledge_is_forwarded_with_who_and_why(manager: AlertManager, clock: Clock) -> None:
    alert_id = opened(manager).alert_id
    clock.now = T0 + timedelta(minutes=3)

    [note] = manager.acknowledge(alert_id, "soc.nguyen", "calling the school")

    assert (note.event, note.state, note.actor, note.note) == (
        "acknowledged",
        "acknowledged",
        "soc.nguyen",
        "calling the school",
    )
    detail = manager.alert_detail(alert_id)
    assert (detail.alert.acknowledged_by, detail.alert.acknowledged_at) == (
        "soc.nguyen",
        T0 + timedelta(minutes=3),
    )


def test_full_audit_trail_records_each_step(manager: AlertManager, clock: Clock) -> None:
    alert_id = opened(manager).alert_id
    clock.now = T0 + timedelta(minutes=2)
    manager.acknowledge(alert_id, "soc.nguyen", "looking")
    manager.comment(alert_id, "it.le", "PC reimaged")
    manager.unacknowledge(alert_id, "soc.nguyen")
    [resolved] = manager.resolve(alert_id, "soc.tran", "fixed on site")

    detail = manager.alert_detail(alert_id)
    trail = [(row.action, row.actor, row.from_state, row.to_state) for row in detail.audit]
    assert [row for row in trail if row[0] != "notified"] == [
        ("opened", "system", None, "firing"),
        ("acknowledged", "soc.nguyen", "firing", "acknowledged"),
        ("commented", "it.le", "acknowledged", "acknowledged"),
        ("unacknowledged", "soc.nguyen", "acknowledged", "firing"),
        ("resolved", "soc.tran", "firing", "resolved"),
    ]
    notified = [row.note for row in detail.audit if row.action == "notified"]
    assert notified == ["opened", "acknowledged", "updated", "resolved"]
    assert (resolved.event, resolved.actor, resolved.note) == (
        "resolved",
        "soc.tran",
        "fixed on site",
    )
    assert detail.alert.resolved_by == "soc.tran"


def test_invalid_transitions_raise_clear_errors(manager: AlertManager) -> None:
    alert_id = opened(manager).alert_id
    with pytest.raises(AlertStateError, match="not acknowledged"):
        manager.unacknowledge(alert_id, "soc.nguyen")
    manager.resolve(alert_id, "soc.nguyen")
    with pytest.raises(AlertStateError, match="only firing can be acknowledged"):
        manager.acknowledge(alert_id, "soc.nguyen")
    with pytest.raises(AlertStateError, match="already resolved"):
        manager.resolve(alert_id, "soc.nguyen")
    with pytest.raises(AlertNotFound):
        manager.acknowledge(alert_id + 1000, "soc.nguyen")
    with pytest.raises(AlertInputError):
        manager.acknowledge(alert_id, "  ")
    with pytest.raises(AlertInputError):
        manager.comment(alert_id, "soc.nguyen", "")
    # A failed action leaves no trace.
    assert [row.action for row in manager.alert_detail(alert_id).audit][-2:] == [
        "resolved",
        "notified",
    ]


def test_acknowledging_twice_is_refused(manager: AlertManager) -> None:
    alert_id = opened(manager).alert_id
    manager.acknowledge(alert_id, "soc.nguyen")
    with pytest.raises(AlertStateError):
        manager.acknowledge(alert_id, "soc.tran")


def test_same_fingerprint_keeps_acknowledged_state(manager: AlertManager) -> None:
    alert_id = opened(manager).alert_id
    manager.acknowledge(alert_id, "soc.nguyen")
    later = T0 + timedelta(minutes=5)
    assert manager.process([signal(at=later)], later) == []
    assert manager.alert_detail(alert_id).alert.state == "acknowledged"


def test_manual_resolve_of_a_still_firing_rule_reopens_within_flap_window(
    manager: AlertManager, clock: Clock
) -> None:
    alert_id = opened(manager).alert_id
    clock.now = T0 + timedelta(minutes=1)
    manager.resolve(alert_id, "soc.nguyen", "looks fine")
    again = T0 + timedelta(minutes=2)
    [note] = manager.process([signal(at=again)], again)
    assert (note.event, note.alert_id) == ("reopened", alert_id)
