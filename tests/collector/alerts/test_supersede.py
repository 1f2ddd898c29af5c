"""A severe alert supersedes the milder one of its family on the same device (issue 14 item 5).

Through the shipped signature-age rules (3 days: medium, 7 days: high), the rules engine and
the alert manager: the queue must never hold both for one PC, and the SOC hears about the
milder one going away as a resolve that names the alert superseding it.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

from sqlalchemy import Engine, event, select
from sqlalchemy.orm import Session, sessionmaker

from campuswatch.collector.alerts.manager import AlertManager
from campuswatch.collector.alerts.models import Alert, AlertAudit
from campuswatch.collector.alerts.policy import AlertPolicy
from campuswatch.collector.rules.engine import RuleEngine
from campuswatch.collector.rules.loader import load_rule_pack
from campuswatch.collector.rules.model import RulePack
from campuswatch.collector.signals import AlertNotification
from tests.collector.alerts.conftest import SCHOOL, T0, Clock, signal
from tests.collector.rules.test_engine import msg

RULES = Path(__file__).resolve().parents[3] / "rules"
MILD, SEVERE = "av_signatures_stale", "av_signatures_very_stale"
WAIT = timedelta(seconds=30)


def signature_rules() -> tuple[RuleEngine, dict[str, str]]:
    pack = load_rule_pack(RULES)
    chosen = [loaded for loaded in pack.rules if loaded.path.stem in (MILD, SEVERE)]
    assert len(chosen) == 2
    ids = {loaded.path.stem: loaded.rule.id for loaded in chosen}
    return RuleEngine(RulePack.of(chosen, RULES)), ids


def av_report(at_s: float, device: str, age_hours: float) -> object:
    product = {"name": "ClamAV", "source": "clamav", "signature_age_hours": age_hours}
    return msg(at_s, kind="av", site=SCHOOL, device_id=device, status="at_risk", products=[product])


def open_rules(factory: sessionmaker[Session]) -> list[tuple[str, str | None, str]]:
    with factory() as session:
        rows = session.scalars(select(Alert).where(Alert.state != "resolved").order_by(Alert.id))
        return [(row.rule_id, row.device_id, row.level) for row in rows]


def recording_manager(
    factory: sessionmaker[Session], clock: Clock
) -> tuple[AlertManager, list[AlertNotification]]:
    sent: list[AlertNotification] = []
    manager = AlertManager(
        factory,
        settings=AlertPolicy(),
        clock=clock,
        on_notifications=lambda _session, batch: sent.extend(batch),
    )
    return manager, sent


def test_both_signature_rules_firing_at_once_leave_only_the_severe_alert_open(
    factory: sessionmaker[Session], clock: Clock
) -> None:
    engine, ids = signature_rules()
    manager, sent = recording_manager(factory, clock)
    signals = engine.process(av_report(0, "pc-01", 200))  # type: ignore[arg-type]
    assert sorted(s.rule_id for s in signals) == sorted(ids.values())

    manager.process(signals, T0)
    manager.tick(T0 + WAIT)

    assert open_rules(factory) == [(ids[SEVERE], "pc-01", "high")]
    assert [(n.event, n.rule_id) for n in sent] == [("opened", ids[SEVERE])]
    assert manager.rejected["superseded"] == 1


def test_severe_alert_resolves_the_open_milder_one_as_superseded(
    factory: sessionmaker[Session], clock: Clock
) -> None:
    engine, ids = signature_rules()
    manager, sent = recording_manager(factory, clock)
    manager.process(engine.process(av_report(0, "pc-01", 100)), T0)  # type: ignore[arg-type]
    manager.tick(T0 + WAIT)
    assert [(n.event, n.rule_id) for n in sent] == [("opened", ids[MILD])]
    mild_id = sent[0].alert_id

    later = T0 + timedelta(days=3)
    clock.now = later
    sent.clear()
    manager.process(engine.process(av_report(3 * 86400, "pc-01", 172)), later)  # type: ignore[arg-type]
    manager.tick(later + WAIT)

    assert open_rules(factory) == [(ids[SEVERE], "pc-01", "high")]
    with factory() as session:
        severe_id = session.scalars(select(Alert.id).where(Alert.rule_id == ids[SEVERE])).one()
        mild = session.get(Alert, mild_id)
        assert mild is not None and mild.state == "resolved" and mild.resolved_by is None
        notes = session.scalars(
            select(AlertAudit.note).where(
                AlertAudit.alert_id == mild_id, AlertAudit.action == "resolved"
            )
        ).all()
    assert notes == [f"superseded by #{severe_id}"]
    # The SOC had been told about the milder alert: it hears it resolved, naming the new one.
    assert [(n.event, n.rule_id, n.note) for n in sent] == [
        ("resolved", ids[MILD], f"superseded by #{severe_id}"),
        ("opened", ids[SEVERE], None),
    ]


def test_milder_repeat_does_not_reopen_while_the_severe_alert_is_open(
    factory: sessionmaker[Session], clock: Clock
) -> None:
    engine, ids = signature_rules()
    manager, _sent = recording_manager(factory, clock)
    manager.process(engine.process(av_report(0, "pc-01", 100)), T0)  # type: ignore[arg-type]
    manager.process(engine.process(av_report(60, "pc-01", 200)), T0 + timedelta(minutes=1))  # type: ignore[arg-type]
    engine.process(av_report(120, "pc-01", 201))  # type: ignore[arg-type]
    repeats = engine.take_repeats()
    assert {s.rule_id for s in repeats} == set(ids.values())
    manager.process(repeats, T0 + timedelta(minutes=2))
    assert open_rules(factory) == [(ids[SEVERE], "pc-01", "high")]


def test_family_is_per_device_and_other_rules_are_untouched(
    manager: AlertManager, factory: sessionmaker[Session]
) -> None:
    family = ("campuswatch.family.av_signatures",)
    manager.process(
        [
            signal("pc-01", rule="sig-3d", level="medium", tags=family),
            signal("pc-02", rule="sig-7d", level="high", tags=family),
            signal("pc-02", rule="realtime-off", level="high"),
        ],
        T0,
    )
    assert sorted(open_rules(factory)) == [
        ("realtime-off", "pc-02", "high"),
        ("sig-3d", "pc-01", "medium"),
        ("sig-7d", "pc-02", "high"),
    ]


def test_a_batch_of_family_repeats_reads_the_families_together(
    manager: AlertManager, engine: Engine
) -> None:
    # A district's stale-signature PCs repeat their alert with every AV report; a query
    # for each repeat's family (to resolve milder members) was a fixed share of ingest.
    family = ("campuswatch.family.av-signatures",)

    def reads_of_alerts(devices: int, at: datetime) -> int:
        batch = [
            signal(f"pc-{n:02}", rule=SEVERE, level="high", tags=family, at=at)
            for n in range(devices)
        ]
        statements: list[str] = []

        def record(_conn: object, _cursor: object, statement: str, *_args: object) -> None:
            statements.append(" ".join(statement.split()).upper())

        event.listen(engine, "before_cursor_execute", record)
        try:
            manager.process(batch, at)
        finally:
            event.remove(engine, "before_cursor_execute", record)
        return len([text for text in statements if text.startswith("SELECT ALERTS.")])

    reads_of_alerts(40, T0)  # every PC's alert opens
    few = reads_of_alerts(10, T0 + timedelta(minutes=1))
    many = reads_of_alerts(40, T0 + timedelta(minutes=2))
    assert few == many, (few, many)
