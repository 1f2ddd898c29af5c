"""Rules → alert lifecycle → outbox → SOC destinations, wired into ingest.

The rules engine sees every fresh message (and the register's verdict on discovered hosts)
once the ingest batch has committed, and its signals go to the alert manager; the manager
writes the resulting notifications to the outbox inside its own transaction, and the
forwarders deliver them per destination in the background, so a slow SIEM never slows ingest.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections.abc import Iterator, Sequence
from datetime import datetime
from pathlib import Path

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from campuswatch.collector.alerts.manager import AlertManager
from campuswatch.collector.alerts.models import Alert
from campuswatch.collector.alerts.policy import AlertPolicy
from campuswatch.collector.alerts.queries import OPEN_STATES
from campuswatch.collector.forward.outbox import Outbox
from campuswatch.collector.forward.runner import Forwarder
from campuswatch.collector.forward.settings import ForwardingSettings, build_targets
from campuswatch.collector.ingest import BatchContext
from campuswatch.collector.register.assets import AssetChange
from campuswatch.collector.register.device_state import stored_latest_messages
from campuswatch.collector.rules.engine import RuleEngine
from campuswatch.collector.rules.loader import load_rule_pack
from campuswatch.collector.rules.model import RulePackError
from campuswatch.collector.signals import AlertNotification, AlertSignal
from campuswatch.wire.codec import DecodedMessage
from campuswatch.wire.ids import utc_now

log = logging.getLogger(__name__)
SHIPPED_RULES = Path(__file__).resolve().parents[1] / "rules"


def default_rules_dir() -> Path | None:
    return SHIPPED_RULES if SHIPPED_RULES.is_dir() else None


class Alerting:
    name = "rules"

    def __init__(
        self,
        sessions: sessionmaker[Session],
        *,
        rules_dir: Path | None,
        forwarding_config: Path | None,
        collector_id: str,
        policy: AlertPolicy | None = None,
    ) -> None:
        self.sessions = sessions
        self.rules_dir = rules_dir or default_rules_dir()
        self.engine: RuleEngine | None = None
        if self.rules_dir is not None:
            # A pack with errors refuses to start the collector (RulePackError lists them all).
            self.engine = RuleEngine(load_rule_pack(self.rules_dir))
            log.info("loaded %d rules from %s", len(self.engine.rule_ids), self.rules_dir)
        targets = (
            build_targets(ForwardingSettings.from_file(forwarding_config))
            if forwarding_config is not None
            else []
        )
        self.forwarder = Forwarder(sessions, targets)
        self.manager = AlertManager(
            sessions, settings=policy, collector_id=collector_id, on_notifications=self._enqueue
        )
        self.notifications_total = 0
        self.reload_failures_total = 0
        self._lock = threading.Lock()

    # --- ingest sink -------------------------------------------------------------------

    def handle(
        self, session: Session, batch: Sequence[DecodedMessage], context: BatchContext
    ) -> None:
        if self.engine is None or not batch:
            return
        # The engine keeps state and emits each transition once, so it must see a message
        # only once its batch is committed: a batch whose commit fails is tried again, and
        # a firing signal computed in the failed attempt would be lost with that attempt.
        changes = [context.asset_changes.get(decoded.message.id) for decoded in batch]
        context.after_commit.append(lambda: self._evaluate(batch, changes))

    def _evaluate(
        self, batch: Sequence[DecodedMessage], changes: Sequence[list[AssetChange] | None]
    ) -> None:
        assert self.engine is not None
        signals: list[AlertSignal] = []
        with self._lock:
            for decoded, asset_changes in zip(batch, changes, strict=True):
                signals.extend(self.engine.process(decoded))
                if asset_changes:
                    signals.extend(
                        self.engine.process_asset_changes(
                            decoded.message.site, asset_changes, decoded.received_at
                        )
                    )
        if signals:
            self.apply(signals)

    def apply(self, signals: Sequence[AlertSignal], now: datetime | None = None) -> None:
        self.manager.process(signals, now or utc_now())
        self.forwarder.wake()

    def tick(self, now: datetime | None = None) -> None:
        moment = now or utc_now()
        signals: list[AlertSignal] = []
        if self.engine is not None:
            with self._lock:
                signals = self.engine.evaluate_tick(moment)
        if signals:
            self.manager.process(signals, moment)
        self.manager.tick(moment)
        self.forwarder.wake()

    def reload_rules(self) -> bool:
        """Hot reload: a pack with errors is refused and the last good pack stays."""
        if self.rules_dir is None or self.engine is None:
            return False
        try:
            pack = load_rule_pack(self.rules_dir)
        except RulePackError as exc:
            self.reload_failures_total += 1
            log.error("rule pack in %s refused, keeping the last good one: %s", self.rules_dir, exc)
            return False
        with self._lock:
            signals = self.engine.replace_pack(pack)
        if signals:
            self.apply(signals)
        return True

    def _enqueue(self, session: Session, notifications: list[AlertNotification]) -> None:
        self.notifications_total += len(notifications)
        names = self.forwarder.destination_names
        if names:
            Outbox.enqueue(session, notifications, names)

    # --- lifecycle and metrics -----------------------------------------------------------

    def restore_state(self) -> None:
        """Warm the rules engine from the register before ingest starts (see
        ``RuleEngine.restore``): the engine's own state lives in memory only."""
        if self.engine is None:
            return
        try:
            with self.sessions() as session:
                open_alerts = [
                    (rule_id, site_id, _entity_of(labels))
                    for rule_id, site_id, labels in session.execute(
                        select(Alert.rule_id, Alert.site_id, Alert.labels).where(
                            Alert.state.in_(OPEN_STATES)
                        )
                    )
                ]
                latest = list(stored_latest_messages(session))
        except Exception:
            # Ingest matters more than warm rules: start cold rather than not at all.
            log.exception("could not read the register to warm the rules engine; starting cold")
            return
        with self._lock:
            self.engine.restore(latest, open_alerts)
        log.info(
            "rules engine warmed from the register: %d latest messages, %d open alerts",
            len(latest),
            len(open_alerts),
        )

    def start(self) -> None:
        self.forwarder.start()

    def stop(self) -> None:
        self.forwarder.stop()

    def metrics(self) -> Iterator[Metric]:
        if self.engine is not None:
            for key, value in sorted(self.engine.stats().items()):
                family = GaugeMetricFamily(f"campuswatch_rules_{key}", f"rules engine: {key}")
                family.add_metric([], value)
                yield family
        sent = CounterMetricFamily(
            "campuswatch_alerts_notifications", "Alert notifications produced for the SOC"
        )
        sent.add_metric([], self.notifications_total)
        yield sent
        rejected = CounterMetricFamily(
            "campuswatch_alerts_rejected_signals", "Rule signals refused", labels=["reason"]
        )
        for reason, count in sorted(self.manager.rejected.items()):
            rejected.add_metric([reason], count)
        yield rejected
        # One family per statistic with a sample per destination: a family repeated per
        # destination would repeat its HELP/TYPE lines, which strict scrapers refuse.
        families: dict[str, CounterMetricFamily | GaugeMetricFamily] = {}
        for name, stats in sorted(self.forwarder.stats().items()):
            for field_name, value in sorted(dataclasses.asdict(stats).items()):
                if isinstance(value, bool) or not isinstance(value, int | float):
                    continue
                statistic = families.get(field_name)
                if statistic is None:
                    statistic = families[field_name] = (
                        CounterMetricFamily if field_name.endswith("_total") else GaugeMetricFamily
                    )(
                        f"campuswatch_forward_{field_name.removesuffix('_total')}",
                        f"SOC forwarding: {field_name}",
                        labels=["destination"],
                    )
                statistic.add_metric([name], value)
        yield from families.values()


def _entity_of(labels: object) -> str | None:
    """The engine's subject entity as its signals labelled it; None for site-wide alerts."""
    entity = labels.get("entity") if isinstance(labels, dict) else None
    return entity if isinstance(entity, str) else None
