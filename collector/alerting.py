"""Rules → alert lifecycle → outbox → SOC destinations, wired into ingest.

The rules engine sees every fresh message (and the register's verdict on discovered hosts)
once the ingest batch has committed, and its signals go to the alert manager; the manager
writes the resulting notifications to the outbox inside its own transaction, and the
forwarders deliver them per destination in the background, so a slow SIEM never slows ingest.

Only transitions (firing, resolved) cost a transaction when a message is evaluated. Repeats
of a firing alert are counted by the engine in memory and handed to the manager once per
housekeeping tick (or just before their subject resolves), so a PC that reports the same
problem every minute raises the alert's count without a database write per message. Each
tick also looks for alerts a person resolved since the last one and makes the engine forget
them, so an alert whose condition still holds fires again on its next trigger (reopened, or
a new alert after the flap window) on whichever collector evaluates it.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections.abc import Callable, Collection, Iterator, Sequence
from datetime import datetime
from pathlib import Path

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from campuswatch.collector.alerts.manager import AlertManager
from campuswatch.collector.alerts.models import SYSTEM_ACTOR, Alert, AlertAudit
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
# Beside the package, not the checkout: in a clone campuswatch/rules is a symlink to rules/,
# in an installed wheel it is the rule pack itself (package data).
SHIPPED_RULES = Path(__file__).parents[1] / "rules"
_AUDIT_OVERLAP = 10_000
"""Audit ids read again each tick (see ``Alerting._resolved_by_hand``)."""


def default_rules_dir() -> Path | None:
    return SHIPPED_RULES if SHIPPED_RULES.is_dir() else None


class Alerting:
    name = "rules"

    def __init__(
        self,
        sessions: sessionmaker[Session],
        *,
        rules_dir: Path | None,
        forwarding_config: Path | ForwardingSettings | None,
        collector_id: str,
        policy: AlertPolicy | None = None,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self.sessions = sessions
        # Injectable so a benchmark can run a simulated school day in minutes.
        self._clock = clock
        self.rules_dir = rules_dir or default_rules_dir()
        self.engine: RuleEngine | None = None
        if self.rules_dir is not None:
            # A pack with errors refuses to start the collector (RulePackError lists them all).
            self.engine = RuleEngine(load_rule_pack(self.rules_dir))
            log.info("loaded %d rules from %s", len(self.engine.rule_ids), self.rules_dir)
        if isinstance(forwarding_config, Path):  # a separate file, else inline settings
            forwarding_config = ForwardingSettings.from_file(forwarding_config)
        targets = build_targets(forwarding_config) if forwarding_config is not None else []
        self.forwarder = Forwarder(sessions, targets)
        self.manager = AlertManager(
            sessions,
            settings=policy,
            clock=clock,
            collector_id=collector_id,
            on_notifications=self._enqueue,
        )
        self.notifications_total = 0
        self.reload_failures_total = 0
        self._lock = threading.Lock()
        # Audit rows of people resolving alerts, read each tick (see _forget_resolved_by_hand).
        self._audit_mark = 0
        self._forgotten: set[int] = set()

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
            resolving = [
                (signal.rule_id, signal.site_id, _entity_of(signal.labels))
                for signal in signals
                if signal.status == "resolved"
            ]
            if resolving:
                # Their repeats happened before they resolved: counted first, same transaction.
                signals = self.engine.take_repeats(resolving) + signals
        if signals:
            self.apply(signals)

    def apply(self, signals: Sequence[AlertSignal], now: datetime | None = None) -> None:
        self.manager.process(signals, now or self._clock())
        self.forwarder.wake()

    def tick(self, now: datetime | None = None) -> None:
        moment = now or self._clock()
        signals: list[AlertSignal] = []
        if self.engine is not None:
            resolved_by_hand = self._resolved_by_hand()
            with self._lock:
                for rule_id, site_id, entity in resolved_by_hand:
                    self.engine.forget(rule_id, site_id, entity)
                signals = self.engine.evaluate_tick(moment)
                # Folded repeats first: some may belong to subjects this tick resolved.
                signals = self.engine.take_repeats() + signals
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
            repeats = self.engine.take_repeats()  # replaced rules take theirs with them
            signals = repeats + self.engine.replace_pack(pack)
        if signals:
            self.apply(signals)
        return True

    def _enqueue(self, session: Session, notifications: list[AlertNotification]) -> None:
        self.notifications_total += len(notifications)
        names = self.forwarder.destination_names
        if names:
            Outbox.enqueue(session, notifications, names)

    def _resolved_by_hand(self) -> list[tuple[str, str, str | None]]:
        """(rule, site, entity) of alerts people resolved since the last call.

        Read from the audit trail by id, with an overlap: on PostgreSQL a transaction that
        took a lower id can commit after a higher one was read. Cheap (a primary-key range)
        and it sees resolutions made through any collector's API."""
        try:
            with self.sessions() as session:
                rows = session.execute(
                    select(AlertAudit.id, Alert.rule_id, Alert.site_id, Alert.labels)
                    .join(Alert, Alert.id == AlertAudit.alert_id)
                    .where(
                        AlertAudit.id > self._audit_mark - _AUDIT_OVERLAP,
                        AlertAudit.action == "resolved",
                        AlertAudit.actor != SYSTEM_ACTOR,
                        Alert.state == "resolved",
                    )
                ).all()
                top = session.scalar(select(func.max(AlertAudit.id))) or 0
        except Exception:
            log.exception("could not read manual resolutions; trying again next tick")
            return []
        found = [
            (rule_id, site_id, _entity_of(labels))
            for audit_id, rule_id, site_id, labels in rows
            if audit_id not in self._forgotten
        ]
        self._forgotten.update(audit_id for audit_id, *_ in rows)
        self._audit_mark = max(self._audit_mark, top)
        floor = self._audit_mark - _AUDIT_OVERLAP
        self._forgotten = {audit_id for audit_id in self._forgotten if audit_id > floor}
        return found

    # --- lifecycle and metrics -----------------------------------------------------------

    def restore_state(self, sites: Collection[str] | None = None) -> None:
        """Warm the rules engine from the register before ingest starts (see
        ``RuleEngine.restore``): the engine's own state lives in memory only.

        ``sites``: only the devices and alerts of these sites, for a partition this
        collector has just taken over (docs/scale.md#ownership); None: everything."""
        if self.engine is None:
            return
        try:
            with self.sessions() as session:
                query = select(Alert.rule_id, Alert.site_id, Alert.labels).where(
                    Alert.state.in_(OPEN_STATES)
                )
                if sites is not None:
                    query = query.where(Alert.site_id.in_(sorted(sites)))
                open_alerts = [
                    (rule_id, site_id, _entity_of(labels))
                    for rule_id, site_id, labels in session.execute(query)
                ]
                latest = list(stored_latest_messages(session, sites))
                if sites is None or not self._audit_mark:
                    # Resolved before the restart: not restored as firing, nothing to forget.
                    self._audit_mark = session.scalar(select(func.max(AlertAudit.id))) or 0
        except Exception:
            # Ingest matters more than warm rules: start cold rather than not at all.
            log.exception("could not read the register to warm the rules engine; starting cold")
            return
        with self._lock:
            if sites is not None:
                self.engine.forget_sites(sites)  # what it knew from an earlier turn is stale
            self.engine.restore(latest, open_alerts)
        log.info(
            "rules engine warmed from the register: %d latest messages, %d open alerts%s",
            len(latest),
            len(open_alerts),
            f" of {len(sites)} sites" if sites is not None else "",
        )

    def forget_sites(self, sites: Collection[str]) -> None:
        """Drop the rules engine's state of ``sites``: another collector runs them now.
        Repeats counted for them are handed to the alert manager first."""
        if self.engine is None:
            return
        with self._lock:
            # Every subject's folded repeats (due at the next tick anyway), so those of the
            # sites let go reach their alerts before the engine forgets them.
            repeats = self.engine.take_repeats()
            self.engine.forget_sites(sites)
        if repeats:
            self.apply(repeats)

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
