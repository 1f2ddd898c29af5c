"""The alert lifecycle: signals in, notifications for the SOC out, all state in the database.

``process`` turns rule signals into alerts (one open alert per fingerprint), ``tick`` does
what time alone causes (repeats, escalations, silences ending, group reports), and the
human actions (acknowledge, resolve, comment, silence) write the audit trail. Each call is
one transaction; the notifications it returns are what that transaction committed, so the
caller hands them to the outbox and nothing is told to the SOC that the database forgot.

Notification rules, chosen to avoid alert storms (see docs/alerts.md):
- A group is the open alerts of one rule at one site. A new group waits ``group_wait``
  before its first notification, so an inhibiting alert (the school's uplink) that arrives a
  few seconds after the device alerts still mutes them. Then ONE member, the group's
  representative, is notified ("opened", with the group size); members that join later are
  reported together on the representative ("updated") at most every ``group_interval``.
- Only alerts the SOC was told about individually get "repeated", "escalated", "updated"
  (level change) and "resolved" notifications. Human actions are always forwarded.
- A fingerprint that fires again within ``flap_window`` of resolving reopens the same
  alert ("reopened") instead of opening a new one; later, it opens a new alert. This holds
  for an alert a person resolved while its condition still held, too.
- Repeats of an open alert (``AlertSignal.occurrences``, folded by the engine) raise its
  count, move ``last_seen`` and refresh its evidence; the SOC hears about them as one
  "updated" at most every ``update_interval`` per alert.
- Superseding (rule tag ``campuswatch.family.<name>``): on one device, the most severe open
  alert of a family stands for the family. A milder alert of the family does not open while
  a more severe one is open (counted as rejected, reason ``superseded``), and an open milder
  one is resolved "superseded by #N" when a more severe one opens; the SOC hears that as a
  "resolved" only if it had been told about the milder alert.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Final, Generic, Literal, Protocol, TypeVar, cast

from sqlalchemy import Select, delete, func, select, text
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from campuswatch.collector.alerts import queries
from campuswatch.collector.alerts.matching import (
    MatcherError,
    inhibition_involves,
    inhibitors,
    parse_matchers,
    silence_matches,
    stored_matchers,
)
from campuswatch.collector.alerts.models import (
    ACTOR_LENGTH,
    DEVICE_ID_LENGTH,
    FINGERPRINT_LENGTH,
    OPEN_ALERT_CONDITION,
    RULE_ID_LENGTH,
    SITE_ID_LENGTH,
    SYSTEM_ACTOR,
    TITLE_LENGTH,
    Alert,
    AlertAudit,
    AlertEvidence,
    Silence,
)
from campuswatch.collector.alerts.policy import AlertPolicy, EscalationStep, families_of
from campuswatch.collector.alerts.queries import (
    OPEN_STATES,
    AlertDetail,
    AlertGroup,
    AlertNotFound,
)
from campuswatch.collector.db.models import Asset, Device, Site, utc_now
from campuswatch.collector.signals import (
    LEVELS,
    AlertEventType,
    AlertNotification,
    AlertSignal,
    Evidence,
    Level,
    bounded_texts,
)
from campuswatch.wire.ids import new_message_id

__all__ = [
    "AlertError",
    "AlertInputError",
    "AlertManager",
    "AlertNotFound",
    "AlertStateError",
]

logger = logging.getLogger(__name__)

MAX_ATTEMPTS: Final = 5
MAX_EXCERPT_CHARS: Final = 8192
MAX_TEXT_CHARS: Final = 16_384
# PostgreSQL: deadlock and serialization failure; both succeed when simply tried again.
_RETRY_SQLSTATES: Final = frozenset({"40P01", "40001"})
# Arbitrary constant: only one collector at a time runs tick() (pg_try_advisory_xact_lock).
_TICK_LOCK_KEY: Final = 0x63770A1E
_GROUP_NOTE_DEVICES: Final = 10
_LOOKUP_CHUNK: Final = 500
"""Fingerprints per query when finding a batch's current alerts (bound parameters)."""
_EVIDENCE_CHUNK: Final = 200
"""Alerts per evidence query (their ids and their new items' message ids are parameters)."""

_T = TypeVar("_T")
NotificationState = Literal["firing", "acknowledged", "resolved", "silenced"]


class _AlertTiming(Protocol):
    """What the tick decides on: an ``Alert`` or a row of ``_TIMING_COLUMNS``."""

    @property
    def id(self) -> int: ...
    @property
    def state(self) -> str: ...
    @property
    def level(self) -> str: ...
    @property
    def silenced(self) -> bool: ...
    @property
    def inhibited(self) -> bool: ...
    @property
    def opened_at(self) -> datetime: ...
    @property
    def last_seen(self) -> datetime: ...
    @property
    def last_notified_at(self) -> datetime | None: ...
    @property
    def pending_since(self) -> datetime | None: ...
    @property
    def group_reported_at(self) -> datetime | None: ...
    @property
    def group_key(self) -> str: ...
    @property
    def escalation_step(self) -> int: ...


# How often the tick looks at every open alert's silence and inhibition when nothing asked.
_RECONCILE_EVERY: Final = timedelta(minutes=5)

_TIMING_COLUMNS: Final = (
    Alert.id,
    Alert.state,
    Alert.level,
    Alert.silenced,
    Alert.inhibited,
    Alert.opened_at,
    Alert.last_seen,
    Alert.last_notified_at,
    Alert.pending_since,
    Alert.group_reported_at,
    Alert.group_key,
    Alert.escalation_step,
)

_Timing = TypeVar("_Timing", bound=_AlertTiming)


def _open_timings_in_groups(
    session: Session, group_keys: Sequence[str], chunk: int = 500
) -> dict[str, list[_AlertTiming]]:
    """The timings of each group's open alerts, oldest first: one query per ``chunk``
    groups, and no alert loaded (the session's pending changes are flushed first)."""
    members: dict[str, list[_AlertTiming]] = {key: [] for key in group_keys}
    for start in range(0, len(group_keys), chunk):
        rows = session.execute(
            select(*_TIMING_COLUMNS)
            .where(Alert.group_key.in_(group_keys[start : start + chunk]))
            .where(Alert.state.in_(OPEN_STATES))
            .order_by(Alert.id)
        )
        for row in rows:
            timing = cast(_AlertTiming, row)
            members[timing.group_key].append(timing)
    return members


@dataclass
class _GroupRelease(Generic[_Timing]):
    head: _Timing
    event: Literal["opened", "updated"]
    deliverable: list[_Timing]
    listed: list[_Timing]
    """The waiting members the note names: all of them (opened), or those that joined."""


class AlertError(Exception):
    """Base for errors the API turns into 4xx answers."""


class AlertStateError(AlertError):
    """The action does not apply to the alert's (or silence's) current state."""


class AlertInputError(AlertError):
    """An argument is unusable (empty actor, bad matcher, end before start)."""


@dataclass
class _Pass:
    """What one transaction has done so far and still has to tell the SOC."""

    session: Session
    now: datetime
    notifications: list[AlertNotification] = field(default_factory=list)
    groups: set[str] = field(default_factory=set)
    sites: dict[str, dict[str, str]] = field(default_factory=dict)
    devices: dict[str, tuple[str | None, str | None]] = field(default_factory=dict)
    evidence: dict[Alert, _PendingEvidence] = field(default_factory=dict)
    """Alert → evidence to store with the pass (``AlertManager._store_evidence``)."""
    unflushed_audits: list[tuple[AlertAudit, Alert]] = field(default_factory=list)
    """Audit rows of alerts opened in this pass and not yet flushed (no id yet)."""
    unflushed_alerts: set[int] = field(default_factory=set)
    """``id()`` of the alerts in ``unflushed_audits``."""
    ticked: bool = False
    """A tick: it ran (another collector's tick held the lock otherwise)."""
    reconciled: bool = False
    """A tick: it looked at every open alert's silence and inhibition."""
    subjects: dict[tuple[str, str | None], list[Alert]] = field(default_factory=dict)
    """(site, device or None) → its alerts open when read, and those opened since; for the
    families (``_family_members``), read together for the pass's family signals."""


@dataclass
class _PendingEvidence:
    items: list[Evidence]
    known_alert: bool
    """The alert existed before this pass: it may hold these items already, or too many."""


class AlertManager:
    def __init__(
        self,
        session_factory: sessionmaker[Session],
        *,
        settings: AlertPolicy | None = None,
        clock: Callable[[], datetime] = utc_now,
        collector_id: str = "collector",
        on_notifications: Callable[[Session, list[AlertNotification]], None] | None = None,
    ) -> None:
        self._session_factory = session_factory
        # Called inside the alert transaction, so the outbox rows commit with the transition
        # that caused them (at-least-once delivery to the SOC).
        self.on_notifications = on_notifications
        self.policy = settings or AlertPolicy()
        self._clock = clock
        self._collector_id = collector_id
        # Signals refused by reason; exported as campuswatch_alerts_rejected_total{reason}.
        self.rejected: Counter[str] = Counter()
        # When this manager's last tick ran (None: never): silences that started since then
        # are the tick's to apply. And when it last looked at every open alert's silence and
        # inhibition (a safety net for changes two collectors made at once without seeing
        # each other's, e.g. a source and its target opened by two $share collectors).
        self._ticked_at: datetime | None = None
        self._reconciled_at: datetime | None = None

    # --- signals --------------------------------------------------------------------------

    def process(self, signals: Sequence[AlertSignal], now: datetime) -> list[AlertNotification]:
        """Apply rule signals; returns the notifications to forward, already committed."""
        accepted = [clean for clean in map(self._clean_signal, signals) if clean is not None]
        if not accepted:
            return []
        return self._transaction(now, lambda run: self._process(run, accepted))

    def _process(self, run: _Pass, signals: list[AlertSignal]) -> None:
        session = run.session
        self._lock_keys(session, sorted({f"alert:{signal.fingerprint}" for signal in signals}))
        current = self._current_alerts(session, {signal.fingerprint for signal in signals})
        self._read_subjects(
            run,
            {(signal.site_id, signal.device_id) for signal in signals if families_of(signal.tags)},
        )
        # Keyed by id(): an alert opened in this batch has no database id before its flush.
        level_changed: dict[int, Alert] = {}
        reopened: dict[int, Alert] = {}
        resolved: list[Alert] = []
        superseded: list[tuple[Alert, str]] = []
        # What a silence or an inhibition can have changed for. A district repeats thousands
        # of open alerts all day (a classroom's CO2 alert carries its current average), and
        # re-reading every open alert of their schools for each batch was most of the alert
        # cost of ingest. Sites where an alert an inhibition rule matches opened, closed or
        # changed: every open alert there is looked at again. Alerts no inhibition rule
        # matches that opened or changed what matchers see (level, labels, tags): only their
        # own silence can have changed.
        rules = self.policy.inhibitions
        inhibition_sites: set[str] = set()
        silence_checks: dict[int, Alert] = {}

        def changed(alert: Alert, *, was_inhibition_matched: bool) -> None:
            if was_inhibition_matched or inhibition_involves(rules, alert):
                inhibition_sites.add(alert.site_id)
            else:
                silence_checks[id(alert)] = alert

        # Most severe first (stable, so one fingerprint's signals keep their order): when the
        # 3-day and 7-day signature rules fire for one message, the 7-day alert opens first
        # and the 3-day one never opens at all.
        for signal in sorted(signals, key=lambda item: -_rank(item.level)):
            alert = current.get(signal.fingerprint)
            if signal.status == "resolved":
                if alert is None or alert.state == "resolved":
                    self.rejected["resolved_without_open_alert"] += 1
                    continue
                self._auto_resolve(run, alert, signal)
                resolved.append(alert)
                if inhibition_involves(rules, alert):
                    inhibition_sites.add(alert.site_id)
                continue
            if alert is not None and alert.state != "resolved":
                was_inhibition_matched = inhibition_involves(rules, alert)
                matched_on = _matched_on(alert)
                if self._update_firing(run, alert, signal):
                    level_changed[id(alert)] = alert
                if _matched_on(alert) != matched_on:
                    changed(alert, was_inhibition_matched=was_inhibition_matched)
                # A repeat changes nothing a group waits for: the tick releases what time
                # makes due.
                self._resolve_milder(run, alert, signal.at, superseded, inhibition_sites)
                continue
            if self._more_severe_open(run, signal) is not None:
                # The family's more severe alert already says this, and more.
                self.rejected["superseded"] += 1
                continue
            elif (
                alert is not None
                and alert.resolved_by is not None
                and alert.resolved_at is not None
                and signal.at <= alert.resolved_at
            ):
                # Seen before the person resolved it (folded repeats travel late): what
                # they decided on; only a trigger after their decision opens it again.
                self.rejected["fired_before_manual_resolve"] += 1
                continue
            elif (
                alert is not None
                and alert.resolved_at is not None
                and signal.at - alert.resolved_at <= self.policy.flap_window
            ):
                self._reopen(run, alert, signal)
                reopened[alert.id] = alert
            else:
                alert = current[signal.fingerprint] = self._open(run, signal)
            changed(alert, was_inhibition_matched=False)
            run.groups.add(alert.group_key)
            members = run.subjects.get((alert.site_id, alert.device_id))
            if members is not None and alert not in members:
                members.append(alert)
            self._resolve_milder(run, alert, signal.at, superseded, inhibition_sites)
        self._flush_new_alerts(run)
        session.flush()

        suppression = self._alerts_for_suppression(session, inhibition_sites)
        looked_at = {alert.id for alert in suppression}
        suppression += [alert for alert in silence_checks.values() if alert.id not in looked_at]
        self._apply_suppression(run, suppression)
        for alert in resolved:
            if alert.last_notified_at is not None:
                self._notify(run, alert, "resolved")
        for alert, note in superseded:
            if alert.last_notified_at is not None:
                self._notify(run, alert, "resolved", note=note)
        for alert in reopened.values():
            if alert.last_notified_at is not None and _deliverable(alert):
                self._notify(run, alert, "reopened")
        for alert in level_changed.values():
            told = alert.last_notified_at is not None
            if told and alert.id not in reopened and _deliverable(alert):
                self._notify(run, alert, "updated", note=f"level is now {alert.level}")
        self._release_groups(run, run.groups)

    @staticmethod
    def _current_alerts(session: Session, fingerprints: Collection[str]) -> dict[str, Alert]:
        """Each fingerprint's open alert, else its most recent resolved one (if it has had
        any): two indexed queries per 500 fingerprints, not two per signal."""
        current: dict[str, Alert] = {}
        ordered = sorted(fingerprints)
        for start in range(0, len(ordered), _LOOKUP_CHUNK):
            chunk = ordered[start : start + _LOOKUP_CHUNK]
            for alert in session.scalars(open_alerts_query(chunk).with_for_update()):
                current[alert.fingerprint] = alert
            rest = [fingerprint for fingerprint in chunk if fingerprint not in current]
            if rest:
                for alert in session.scalars(latest_alerts_query(rest).with_for_update()):
                    current[alert.fingerprint] = alert
        return current

    @staticmethod
    def _read_subjects(run: _Pass, subjects: Collection[tuple[str, str | None]]) -> None:
        """Read the open alerts of (site, device or None) subjects, a query per 500 of them:
        a district's stale-signature PCs repeat their family alert with every AV report."""
        wanted = set(subjects) - run.subjects.keys()
        devices = sorted({device for _site, device in wanted if device is not None})
        sites = sorted({site for site, device in wanted if device is None})
        for column, values in ((Alert.device_id, devices), (Alert.site_id, sites)):
            for start in range(0, len(values), _LOOKUP_CHUNK):
                query = select(Alert).where(
                    column.in_(values[start : start + _LOOKUP_CHUNK]),
                    Alert.state.in_(OPEN_STATES),
                )
                if column is Alert.site_id:
                    query = query.where(Alert.device_id.is_(None))
                for alert in run.session.scalars(query.order_by(Alert.id)):
                    key = (alert.site_id, alert.device_id)
                    if key in wanted:
                        run.subjects.setdefault(key, []).append(alert)
        for key in wanted:
            run.subjects.setdefault(key, [])

    @classmethod
    def _family_members(cls, run: _Pass, site_id: str, device_id: str | None) -> list[Alert]:
        """Open alerts of the subject (one device, or the site itself for site alerts)."""
        cls._read_subjects(run, [(site_id, device_id)])
        members = run.subjects[(site_id, device_id)]
        return [alert for alert in members if alert.state in OPEN_STATES]

    def _more_severe_open(self, run: _Pass, signal: AlertSignal) -> Alert | None:
        """An open alert of the signal's family on its subject, more severe than it."""
        families = families_of(signal.tags)
        if not families:
            return None
        for alert in self._family_members(run, signal.site_id, signal.device_id):
            if families & families_of(alert.tags) and _rank(alert.level) > _rank(signal.level):
                return alert
        return None

    def _resolve_milder(
        self,
        run: _Pass,
        alert: Alert,
        at: datetime,
        superseded: list[tuple[Alert, str]],
        inhibition_sites: set[str],
    ) -> None:
        for milder in self._supersede_milder(run, alert, at):
            superseded.append((milder, f"superseded by #{alert.id}"))
            if inhibition_involves(self.policy.inhibitions, milder):
                inhibition_sites.add(milder.site_id)

    def _supersede_milder(self, run: _Pass, alert: Alert, at: datetime) -> list[Alert]:
        """Resolve the open alerts of ``alert``'s family on its subject that are milder."""
        families = families_of(alert.tags)
        if not families:
            return []
        milder = [
            other
            for other in self._family_members(run, alert.site_id, alert.device_id)
            if other is not alert
            and families & families_of(other.tags)
            and _rank(other.level) < _rank(alert.level)
        ]
        if milder and alert.id is None:
            run.session.flush()  # the note names the alert opened in this pass: its id
        for other in milder:
            from_state = other.state
            other.state = "resolved"
            other.resolved_at = max(at, other.last_seen)
            other.resolved_by = None
            other.pending_since = None
            self._audit(
                run, other, "resolved", None, from_state, "resolved",
                note=f"superseded by #{alert.id}",
            )  # fmt: skip
            run.groups.add(other.group_key)
        return milder

    def _open(self, run: _Pass, signal: AlertSignal) -> Alert:
        alert = Alert(
            fingerprint=signal.fingerprint,
            rule_id=signal.rule_id,
            rule_title=signal.rule_title,
            level=signal.level,
            state="firing",
            silenced=False,
            inhibited=False,
            site_id=signal.site_id,
            device_id=signal.device_id,
            summary=signal.summary,
            description=signal.description,
            labels=dict(signal.labels),
            tags=list(signal.tags),
            runbook_en=signal.runbook_en,
            runbook_vi=signal.runbook_vi,
            texts=signal.texts,
            first_seen=signal.at,
            last_seen=signal.at,
            opened_at=signal.at,
            occurrences=signal.occurrences,
            escalation_step=0,
            pending_since=run.now,
            group_key=group_key_for(signal.site_id, signal.rule_id),
        )
        # Not flushed here: a batch's new alerts are inserted together (a flush per alert was
        # most of the cost of a district's first reports); their audit rows wait for the ids.
        run.session.add(alert)
        self._audit(run, alert, "opened", None, None, "firing", note=signal.summary or None)
        self._add_evidence(run, alert, signal.evidence, known_alert=False)
        return alert

    def _update_firing(self, run: _Pass, alert: Alert, signal: AlertSignal) -> bool:
        """Fold a repeat of the signal into the open alert; True if its level changed."""
        alert.last_seen = max(alert.last_seen, signal.at)
        alert.occurrences += signal.occurrences
        self._refresh_text(alert, signal)
        self._add_evidence(run, alert, signal.evidence, known_alert=True)
        if alert.level == signal.level:
            return False
        old_level, alert.level = alert.level, signal.level
        self._audit(
            run, alert, "updated", None, alert.state, alert.state,
            note=f"level {old_level} -> {signal.level}",
        )  # fmt: skip
        return True

    def _reopen(self, run: _Pass, alert: Alert, signal: AlertSignal) -> None:
        # Flap damping: same alert, same episode (opened_at, escalation step kept), so a link
        # that bounces every few minutes is one alert that escalates, not a stream of new ones.
        alert.state = "firing"
        alert.resolved_at = None
        alert.resolved_by = None
        alert.acknowledged_at = None
        alert.acknowledged_by = None
        alert.level = signal.level
        alert.last_seen = max(alert.last_seen, signal.at)
        alert.occurrences += signal.occurrences
        if alert.last_notified_at is None:
            alert.pending_since = run.now
        self._refresh_text(alert, signal)
        self._add_evidence(run, alert, signal.evidence, known_alert=True)
        self._audit(run, alert, "reopened", None, "resolved", "firing", note=signal.summary or None)

    def _auto_resolve(self, run: _Pass, alert: Alert, signal: AlertSignal) -> None:
        from_state = alert.state
        alert.state = "resolved"
        alert.resolved_at = max(signal.at, alert.last_seen)
        alert.resolved_by = None
        alert.pending_since = None
        self._add_evidence(run, alert, signal.evidence, known_alert=True)
        self._audit(
            run, alert, "resolved", None, from_state, "resolved", note=signal.summary or None
        )
        run.groups.add(alert.group_key)

    @staticmethod
    def _refresh_text(alert: Alert, signal: AlertSignal) -> None:
        # The newest signal describes the problem best (e.g. the current signature age).
        alert.rule_title = signal.rule_title
        alert.summary = signal.summary
        alert.description = signal.description
        alert.labels = dict(signal.labels)
        alert.tags = list(signal.tags)
        alert.runbook_en = signal.runbook_en
        alert.runbook_vi = signal.runbook_vi
        alert.texts = signal.texts

    @staticmethod
    def _add_evidence(
        run: _Pass, alert: Alert, evidence: Iterable[Evidence], *, known_alert: bool
    ) -> None:
        """Keep ``evidence`` for the alert; stored with the rest of the pass's at its end."""
        items = list(evidence)
        if not items:
            return
        pending = run.evidence.get(alert)
        if pending is None:
            run.evidence[alert] = _PendingEvidence(items, known_alert)
        else:
            pending.items += items
            pending.known_alert = pending.known_alert or known_alert

    def _store_evidence(self, run: _Pass) -> None:
        """Store the pass's evidence: each alert keeps its newest ``evidence_per_alert``
        items, and a redelivered message adds nothing. A few statements per pass, whatever
        the number of alerts (a tick folds the repeats of every firing alert at once; one
        flush and two queries per alert made that tick the collector's costliest step)."""
        by_alert, run.evidence = run.evidence, {}
        if not by_alert:
            return
        session = run.session
        self._flush_new_alerts(run)
        pending = {alert.id: entry for alert, entry in by_alert.items()}
        known = sorted(alert_id for alert_id, entry in pending.items() if entry.known_alert)
        stored: set[tuple[int, str]] = set()
        for start in range(0, len(known), _EVIDENCE_CHUNK):
            chunk = known[start : start + _EVIDENCE_CHUNK]
            message_ids = {item.message_id[:64] for i in chunk for item in pending[i].items}
            rows = session.execute(
                select(AlertEvidence.alert_id, AlertEvidence.message_id).where(
                    AlertEvidence.alert_id.in_(chunk),
                    AlertEvidence.message_id.in_(sorted(message_ids)),
                )
            )
            stored.update((alert_id, message_id) for alert_id, message_id in rows)
        keep = self.policy.evidence_per_alert
        may_overflow: list[int] = []
        for alert_id, entry in pending.items():
            for item in entry.items:
                key = (alert_id, item.message_id[:64])
                if key in stored:
                    continue  # a redelivered message must not push real evidence out
                stored.add(key)
                session.add(
                    AlertEvidence(
                        alert_id=alert_id,
                        message_id=key[1],
                        kind=item.kind[:32],
                        ts=item.ts,
                        excerpt=_json_safe(item.excerpt),
                    )
                )
            if entry.known_alert or len(entry.items) > keep:
                may_overflow.append(alert_id)
        if not may_overflow:
            return
        session.flush()
        for start in range(0, len(may_overflow), _EVIDENCE_CHUNK):
            ranked = (
                select(
                    AlertEvidence.id,
                    func.row_number()
                    .over(
                        partition_by=AlertEvidence.alert_id,
                        order_by=(AlertEvidence.ts.desc(), AlertEvidence.id.desc()),
                    )
                    .label("newest"),
                )
                .where(AlertEvidence.alert_id.in_(may_overflow[start : start + _EVIDENCE_CHUNK]))
                .subquery()
            )
            surplus = list(session.scalars(select(ranked.c.id).where(ranked.c.newest > keep)))
            if surplus:
                session.execute(delete(AlertEvidence).where(AlertEvidence.id.in_(surplus)))

    def _clean_signal(self, signal: object) -> AlertSignal | None:
        """The signal with over-long text cut to fit, or None (counted) if it is unusable."""
        reason = _reject_reason(signal)
        if reason is not None:
            self.rejected[reason] += 1
            logger.warning("alert signal rejected (%s): %r", reason, signal)
            return None
        assert isinstance(signal, AlertSignal)
        fingerprint = signal.fingerprint
        if len(fingerprint) > FINGERPRINT_LENGTH:
            # Still one stable identity per subject, just shorter.
            fingerprint = "sha256:" + hashlib.sha256(fingerprint.encode()).hexdigest()
        return AlertSignal(
            rule_id=signal.rule_id,
            rule_title=str(signal.rule_title)[:TITLE_LENGTH],
            level=signal.level,
            status=signal.status,
            fingerprint=fingerprint,
            site_id=signal.site_id,
            device_id=signal.device_id or None,
            summary=str(signal.summary)[:MAX_TEXT_CHARS],
            at=signal.at,
            labels={str(key): str(value) for key, value in dict(signal.labels).items()},
            tags=tuple(str(tag) for tag in signal.tags),
            description=str(signal.description)[:MAX_TEXT_CHARS],
            runbook_en=str(signal.runbook_en)[:MAX_TEXT_CHARS],
            runbook_vi=str(signal.runbook_vi)[:MAX_TEXT_CHARS],
            evidence=tuple(item for item in signal.evidence if _usable_evidence(item)),
            occurrences=signal.occurrences,
            texts=bounded_texts(signal.texts, MAX_TEXT_CHARS),
        )

    # --- time -----------------------------------------------------------------------------

    def tick(self, now: datetime) -> list[AlertNotification]:
        """Repeats, escalations, silences starting and ending, inhibition released, groups."""
        runs: list[_Pass] = []

        def work(run: _Pass) -> None:
            runs.append(run)
            run.ticked = self._tick(run)

        notifications = self._transaction(now, work)
        # After the commit: a tick rolled back must be done again in full.
        if runs and runs[-1].ticked:
            self._ticked_at = now
            if runs[-1].reconciled:
                self._reconciled_at = now
        return notifications

    def _tick(self, run: _Pass) -> bool:
        """One tick's work; False if another collector's tick holds the lock."""
        session = run.session
        if session.get_bind().dialect.name == "postgresql":
            # Two collectors ticking at once would both send each repeat; one is enough.
            got_lock = session.scalar(select(func.pg_try_advisory_xact_lock(_TICK_LOCK_KEY)))
            if not got_lock:
                return False
        ended = list(
            session.scalars(
                select(Silence).where(Silence.expired_at.is_(None), Silence.ends_at <= run.now)
            )
        )
        for silence in ended:
            silence.expired_at = silence.ends_at
            silence.expired_by = SYSTEM_ACTOR
        reconciled = self._reconciled_at
        if (
            ended
            or reconciled is None
            or run.now - reconciled >= _RECONCILE_EVERY
            or self._silences_started(session, run.now)
        ):
            # Only time starts and ends silences on its own (everything else that changes a
            # silence or an inhibition applies it in its own transaction): then every open
            # alert is looked at; and every few minutes anyway.
            session.flush()
            self._apply_suppression(run, self._open_alerts(session))
            run.reconciled = True
        # Open alerts are read as plain rows first, and loaded only where something is due: a
        # district keeps tens of thousands open (every unknown host its schools' scans find),
        # and loading each of them every tick made the tick most of a collector's work.
        rows = session.execute(select(*_TIMING_COLUMNS).where(Alert.state.in_(OPEN_STATES)))
        due: list[int] = []
        by_group: dict[str, list[_AlertTiming]] = {}
        for row in sorted(rows, key=lambda item: item.id):
            timing = cast(_AlertTiming, row)
            if self._notification_due(timing, run.now):
                due.append(timing.id)
            by_group.setdefault(timing.group_key, []).append(timing)
        for alert in queries.alerts_by_id(session, due):
            self._tick_notify(run, alert)
        run.groups.update(
            key for key, members in by_group.items() if self._group_release(run.now, members)
        )
        self._release_groups(run, run.groups)
        return True

    def _silences_started(self, session: Session, now: datetime) -> bool:
        """Whether a silence started since this manager's last tick (and is still on)."""
        query = select(Silence.id).where(
            Silence.expired_at.is_(None),
            Silence.starts_at <= now,
            Silence.ends_at > now,
        )
        if self._ticked_at is not None:
            query = query.where(Silence.starts_at > self._ticked_at)
        return session.scalar(query.limit(1)) is not None

    def _notification_due(self, alert: _AlertTiming, now: datetime) -> bool:
        """Whether ``_tick_notify`` has something to send for the alert."""
        told = alert.last_notified_at
        if told is None or not _deliverable(alert):
            return False
        if alert.state == "firing" and self._due_escalation(alert, now) is not None:
            return True
        if self._news_due(alert, now):
            return True
        return alert.state == "firing" and now - told >= self.policy.repeat_interval

    def _tick_notify(self, run: _Pass, alert: Alert) -> None:
        if alert.last_notified_at is None or not _deliverable(alert):
            return
        due = self._due_escalation(alert, run.now) if alert.state == "firing" else None
        if due is not None:
            index, step = due
            alert.escalation_step = index + 1
            note = f"not acknowledged after {step.after}: escalate to {step.notify}"
            self._audit(run, alert, "escalated", None, "firing", "firing", note=note)
            extra = {"escalation_step": str(index + 1), "escalate_to": step.notify}
            self._notify(run, alert, "escalated", note=note, extra_labels=extra)
        elif self._news_due(alert, run.now):
            # Count and last_seen moved since the SOC last heard: one update per
            # update_interval at most (the notification carries both).
            note = f"seen {alert.occurrences} times, last at {alert.last_seen.isoformat()}"
            self._notify(run, alert, "updated", note=note)
        elif (
            alert.state == "firing"
            and run.now - alert.last_notified_at >= self.policy.repeat_interval
        ):
            self._notify(run, alert, "repeated")

    def _news_due(self, alert: _AlertTiming, now: datetime) -> bool:
        """Repeats since the last notification, and that one is update_interval old."""
        told = alert.last_notified_at
        assert told is not None
        return alert.last_seen > told and now - told >= self.policy.update_interval

    def _due_escalation(
        self, alert: _AlertTiming, now: datetime
    ) -> tuple[int, EscalationStep] | None:
        """The furthest step now due that the alert has not taken yet, if any."""
        due: tuple[int, EscalationStep] | None = None
        steps = self.policy.escalations
        for index in range(alert.escalation_step, len(steps)):
            step = steps[index]
            if now - alert.opened_at < step.after:
                break
            if step.level_at_least is not None and _rank(alert.level) < _rank(step.level_at_least):
                continue
            due = (index, step)
        return due

    # --- silences and inhibition ------------------------------------------------------------

    def _alerts_for_suppression(self, session: Session, sites: Collection[str]) -> list[Alert]:
        """Open alerts whose inhibition may have changed: same sites when rules allow it."""
        if not sites:
            return []
        query = select(Alert).where(Alert.state.in_(OPEN_STATES)).order_by(Alert.id)
        rules = self.policy.inhibitions
        if all("site_id" in rule.equal for rule in rules):
            # Every rule pairs alerts of one site, so other sites cannot be affected.
            query = query.where(Alert.site_id.in_(sorted(sites)))
        return list(session.scalars(query))

    def _apply_suppression(
        self, run: _Pass, alerts: Sequence[Alert], *, actor: str | None = None
    ) -> None:
        """Set silenced / inhibited on ``alerts`` from the active silences and open sources.

        ``alerts`` must include every open alert that could inhibit them (see
        ``_alerts_for_suppression``); ``actor`` is recorded on silence changes a person made.
        """
        if not alerts:
            return
        silences = [
            (silence, stored_matchers(silence.matchers))
            for silence in queries.active_silences(run.session, run.now)
        ]
        inhibited_by = inhibitors(self.policy.inhibitions, alerts)
        for alert in alerts:
            was_deliverable = _deliverable(alert)
            silence = next((s for s, m in silences if silence_matches(m, alert)), None)
            if silence is not None and not alert.silenced:
                alert.silenced, alert.silence_id = True, silence.id
                self._audit(run, alert, "silenced", actor, alert.state, alert.state,
                            note=f"silence {silence.id}: {silence.comment}")  # fmt: skip
            elif silence is not None:
                alert.silence_id = silence.id
            elif alert.silenced:
                alert.silenced, alert.silence_id = False, None
                self._audit(run, alert, "unsilenced", actor, alert.state, alert.state)
            source = inhibited_by.get(alert.id)
            if source is not None and not alert.inhibited:
                alert.inhibited, alert.inhibited_by = True, source
                self._audit(run, alert, "inhibited", None, alert.state, alert.state,
                            note=f"by alert {source}")  # fmt: skip
            elif source is not None:
                alert.inhibited_by = source
            elif alert.inhibited:
                alert.inhibited, alert.inhibited_by = False, None
                self._audit(run, alert, "uninhibited", None, alert.state, alert.state)
            if not was_deliverable and _deliverable(alert):
                self._deliverable_again(run, alert)

    def _deliverable_again(self, run: _Pass, alert: Alert) -> None:
        if alert.state != "firing":
            return
        if alert.last_notified_at is not None:
            self._notify(run, alert, "updated", note="no longer silenced or inhibited")
            return
        # Waits group_wait like a new alert: when an uplink returns, its devices usually
        # reconnect within seconds and need never be reported at all.
        alert.pending_since = run.now
        run.groups.add(alert.group_key)

    # --- groups -----------------------------------------------------------------------------

    def _release_groups(self, run: _Pass, group_keys: Iterable[str]) -> None:
        """Release each group's waiting alerts that are due."""
        keys = sorted(set(group_keys))
        self._lock_keys(run.session, [f"group:{key}" for key in keys])
        # Timings first, whole alerts only for groups with news: a batch that opens a few
        # alerts in each of a hundred schools' groups rarely has any (a member joining a
        # reported group waits for the group interval), and loading every open member of
        # each was much of what a district's first antivirus reports cost.
        timings = _open_timings_in_groups(run.session, keys)
        with_news = [key for key in keys if self._group_release(run.now, timings[key])]
        members = queries.open_alerts_in_groups(run.session, with_news)
        for key in with_news:
            self._release_group(run, key, members[key])

    def _group_release(
        self, now: datetime, members: Sequence[_Timing]
    ) -> _GroupRelease[_Timing] | None:
        """What a group (its open alerts, oldest first) has to tell the SOC now, if anything.
        Reads timings only, so the tick can ask it of rows before loading any alert."""
        deliverable = [alert for alert in members if _deliverable(alert)]
        waiting = [
            alert
            for alert in deliverable
            if alert.state == "firing"
            and alert.last_notified_at is None
            and alert.pending_since is not None
        ]
        if not waiting:
            return None
        heads = [alert for alert in deliverable if alert.last_notified_at is not None]
        if not heads:
            if now - min(_since(alert) for alert in waiting) < self.policy.group_wait:
                return None
            head = max(waiting, key=lambda alert: (_rank(alert.level), -alert.id))
            return _GroupRelease(head, "opened", deliverable, waiting)
        head = heads[0]
        reported_at = head.group_reported_at or head.last_notified_at
        assert reported_at is not None
        joined = [alert for alert in waiting if _since(alert) > reported_at]
        if not joined or now - reported_at < self.policy.group_interval:
            return None
        return _GroupRelease(head, "updated", deliverable, joined)

    def _release_group(self, run: _Pass, group_key: str, members: Sequence[Alert]) -> None:
        release = self._group_release(run.now, members)
        if release is None:
            return
        head, size = release.head, len(release.deliverable)
        if release.event == "opened":
            others = size - 1
            note = _members_note("more alert(s) of this rule at this site", release.listed, head)
            self._notify(
                run, head, "opened", note=note if others else None,
                extra_labels=_group_labels(group_key, size, others),
            )  # fmt: skip
        else:
            note = _members_note("alert(s) joined this group", release.listed, None)
            self._notify(
                run, head, "updated", note=note,
                extra_labels=_group_labels(group_key, size, len(release.listed)),
            )  # fmt: skip
        head.group_reported_at = run.now

    # --- human actions ----------------------------------------------------------------------

    def acknowledge(
        self, alert_id: int, actor: str, note: str | None = None
    ) -> list[AlertNotification]:
        def act(run: _Pass, alert: Alert, who: str) -> None:
            if alert.state != "firing":
                raise AlertStateError(
                    f"alert {alert_id} is {alert.state}; only firing can be acknowledged"
                )
            alert.state = "acknowledged"
            alert.acknowledged_by, alert.acknowledged_at = who, run.now
            self._audit(run, alert, "acknowledged", who, "firing", "acknowledged", note=note)
            self._notify(run, alert, "acknowledged", actor=who, note=note)

        return self._human_action(alert_id, actor, act)

    def unacknowledge(
        self, alert_id: int, actor: str, note: str | None = None
    ) -> list[AlertNotification]:
        def act(run: _Pass, alert: Alert, who: str) -> None:
            if alert.state != "acknowledged":
                raise AlertStateError(f"alert {alert_id} is {alert.state}, not acknowledged")
            alert.state = "firing"
            alert.acknowledged_by = alert.acknowledged_at = None
            self._audit(run, alert, "unacknowledged", who, "acknowledged", "firing", note=note)
            # No "unacknowledged" event type exists for the SOC; an update with the note is it.
            self._notify(run, alert, "updated", actor=who, note=note or "unacknowledged")

        return self._human_action(alert_id, actor, act)

    def resolve(
        self, alert_id: int, actor: str, note: str | None = None
    ) -> list[AlertNotification]:
        def act(run: _Pass, alert: Alert, who: str) -> None:
            if alert.state == "resolved":
                raise AlertStateError(f"alert {alert_id} is already resolved")
            from_state = alert.state
            alert.state = "resolved"
            alert.resolved_by, alert.resolved_at = who, run.now
            alert.pending_since = None
            self._audit(run, alert, "resolved", who, from_state, "resolved", note=note)
            self._notify(run, alert, "resolved", actor=who, note=note)
            # A resolved source stops inhibiting; its group may need a new representative.
            self._apply_suppression(run, self._alerts_for_suppression(run.session, {alert.site_id}))
            run.groups.add(alert.group_key)
            self._release_groups(run, run.groups)

        return self._human_action(alert_id, actor, act)

    def comment(self, alert_id: int, actor: str, note: str) -> list[AlertNotification]:
        """Adds a note to the audit trail; comments stay in CampusWatch (nothing forwarded)."""
        if not note or not note.strip():
            raise AlertInputError("a comment needs text")

        def act(run: _Pass, alert: Alert, who: str) -> None:
            self._audit(run, alert, "commented", who, alert.state, alert.state, note=note.strip())

        return self._human_action(alert_id, actor, act)

    def create_silence(
        self,
        matchers: object,
        ends_at: datetime,
        actor: str,
        comment: str = "",
        *,
        starts_at: datetime | None = None,
    ) -> Silence:
        """A new silence, applied at once to matching open alerts (silencing is not forwarded)."""
        who = _actor(actor)
        try:
            parsed = parse_matchers(matchers)
        except MatcherError as exc:
            raise AlertInputError(str(exc)) from exc
        now = self._clock()
        start = starts_at or now
        if start.tzinfo is None or ends_at.tzinfo is None:
            raise AlertInputError("starts_at and ends_at need a time zone")
        if ends_at <= start or ends_at <= now:
            raise AlertInputError("ends_at must be after starts_at and in the future")

        def act(run: _Pass) -> Silence:
            silence = Silence(
                matchers=[matcher.as_dict() for matcher in parsed],
                starts_at=start,
                ends_at=ends_at,
                created_by=who,
                created_at=run.now,
                comment=(comment or "").strip(),
            )
            run.session.add(silence)
            run.session.flush()
            if start <= run.now:
                for alert in self._open_alerts(run.session):
                    if not alert.silenced and silence_matches(parsed, alert):
                        alert.silenced, alert.silence_id = True, silence.id
                        self._audit(run, alert, "silenced", who, alert.state, alert.state,
                                    note=f"silence {silence.id}: {silence.comment}")  # fmt: skip
            return silence

        return self._transaction_returning(now, act)

    def expire_silence(self, silence_id: int, actor: str) -> list[AlertNotification]:
        """Ends a silence now; alerts it muted that still fire are notified (see module doc)."""
        who = _actor(actor)

        def act(run: _Pass) -> None:
            silence = run.session.get(Silence, silence_id, with_for_update=True)
            if silence is None:
                raise AlertNotFound(f"silence {silence_id} does not exist")
            if silence.expired_at is not None or silence.ends_at <= run.now:
                raise AlertStateError(f"silence {silence_id} has already ended")
            silence.expired_at, silence.expired_by = run.now, who
            run.session.flush()
            muted = list(
                run.session.scalars(
                    select(Alert).where(
                        Alert.silence_id == silence_id, Alert.state.in_(OPEN_STATES)
                    )
                )
            )
            sites = {alert.site_id for alert in muted}
            related = self._alerts_for_suppression(run.session, sites)
            self._apply_suppression(run, related, actor=who)
            self._release_groups(run, run.groups)

        return self._transaction(self._clock(), act)

    # --- queries for the API ----------------------------------------------------------------

    list_alerts = staticmethod(queries.list_alerts)
    get_alert = staticmethod(queries.get_alert)
    list_groups = staticmethod(queries.list_groups)

    def list_silences(self, session: Session, *, active_only: bool = True) -> list[Silence]:
        return queries.list_silences(session, now=self._clock(), active_only=active_only)

    def alert_detail(self, alert_id: int) -> AlertDetail:
        """``get_alert`` in a session of its own (rows stay readable after it closes)."""
        with self._session_factory() as session:
            return queries.get_alert(session, alert_id)

    def groups(self, site_ids: Collection[str] | None = None) -> list[AlertGroup]:
        with self._session_factory() as session:
            return queries.list_groups(session, site_ids=site_ids)

    # --- plumbing ---------------------------------------------------------------------------

    def _human_action(
        self, alert_id: int, actor: str, act: Callable[[_Pass, Alert, str], None]
    ) -> list[AlertNotification]:
        who = _actor(actor)

        def run_action(run: _Pass) -> None:
            alert = run.session.get(Alert, alert_id, with_for_update=True)
            if alert is None:
                raise AlertNotFound(f"alert {alert_id} does not exist")
            act(run, alert, who)

        return self._transaction(self._clock(), run_action)

    def _transaction(self, now: datetime, work: Callable[[_Pass], None]) -> list[AlertNotification]:
        def collect(run: _Pass) -> list[AlertNotification]:
            work(run)
            self._store_evidence(run)
            self._flush_new_alerts(run)
            if run.notifications and self.on_notifications is not None:
                self.on_notifications(run.session, run.notifications)
            return run.notifications

        return self._transaction_returning(now, collect)

    def _transaction_returning(self, now: datetime, work: Callable[[_Pass], _T]) -> _T:
        """Run ``work`` in one transaction, retrying what concurrency alone made fail."""
        if now.tzinfo is None:
            raise AlertInputError("now must carry a time zone")
        for attempt in range(1, MAX_ATTEMPTS + 1):
            with self._session_factory() as session:
                try:
                    result = work(_Pass(session, now))
                    session.commit()
                    return result
                except (IntegrityError, OperationalError) as exc:
                    session.rollback()
                    if attempt == MAX_ATTEMPTS or not _retryable(exc):
                        raise
                    logger.info("alert transaction retried after %s", type(exc.orig).__name__)
        raise AssertionError("unreachable")

    @staticmethod
    def _lock_keys(session: Session, keys: Sequence[str]) -> None:
        """PostgreSQL: serialise collectors per fingerprint / group (sorted: no deadlocks)."""
        if session.get_bind().dialect.name != "postgresql" or not keys:
            return
        # One statement for the batch (a round trip per key was a tenth of ingest's time at
        # a district's load); unnest hands the locks out in the array's order.
        session.execute(
            text(
                "SELECT pg_advisory_xact_lock(hashtextextended(key, 0)) "
                "FROM unnest(CAST(:keys AS text[])) AS key"
            ),
            {"keys": sorted(keys)},
        )

    @staticmethod
    def _open_alerts(session: Session) -> list[Alert]:
        return list(
            session.scalars(select(Alert).where(Alert.state.in_(OPEN_STATES)).order_by(Alert.id))
        )

    def _audit(
        self,
        run: _Pass,
        alert: Alert,
        action: str,
        actor: str | None,
        from_state: str | None,
        to_state: str | None,
        *,
        note: str | None = None,
    ) -> None:
        row = AlertAudit(
            alert_id=alert.id,
            at=run.now,
            action=action,
            actor=actor or SYSTEM_ACTOR,
            note=note[:MAX_TEXT_CHARS] if note else None,
            from_state=from_state,
            to_state=to_state,
        )
        if alert.id is None or id(alert) in run.unflushed_alerts:
            # Also once an autoflush gave it an id: its audit rows keep their order.
            run.unflushed_audits.append((row, alert))
            run.unflushed_alerts.add(id(alert))
        else:
            run.session.add(row)

    @staticmethod
    def _flush_new_alerts(run: _Pass) -> None:
        """Insert the pass's new alerts (one flush) and then their audit rows."""
        if not run.unflushed_audits:
            return
        run.session.flush()
        for row, alert in run.unflushed_audits:
            row.alert_id = alert.id
            run.session.add(row)
        run.unflushed_audits.clear()
        run.unflushed_alerts.clear()

    def _notify(
        self,
        run: _Pass,
        alert: Alert,
        event: AlertEventType,
        *,
        actor: str | None = None,
        note: str | None = None,
        extra_labels: dict[str, str] | None = None,
    ) -> None:
        alert.last_notified_at = run.now
        hierarchy = self._hierarchy(run, alert.site_id)
        hostname, mac = self._device_identity(run, alert.device_id)
        labels = {str(key): str(value) for key, value in (alert.labels or {}).items()}
        labels.update(extra_labels or {})
        state: NotificationState = cast(NotificationState, alert.state)
        if alert.silenced and alert.state != "resolved":
            state = "silenced"
        run.notifications.append(
            AlertNotification(
                alert_id=alert.id,
                event=event,
                event_id=new_message_id(),
                fingerprint=alert.fingerprint,
                rule_id=alert.rule_id,
                rule_title=alert.rule_title,
                level=cast(Level, alert.level),
                state=state,
                site_id=alert.site_id,
                summary=alert.summary,
                at=run.now,
                first_seen=alert.first_seen,
                last_seen=alert.last_seen,
                occurrences=alert.occurrences,
                school_id=hierarchy.get("school"),
                district_id=hierarchy.get("district"),
                province_id=hierarchy.get("province"),
                device_id=alert.device_id,
                hostname=labels.get("hostname") or hostname,
                ip=labels.get("ip"),
                mac=labels.get("mac") or mac,
                tags=tuple(alert.tags or ()),
                labels=labels,
                description=alert.description,
                runbook_en=alert.runbook_en,
                runbook_vi=alert.runbook_vi,
                texts=dict(alert.texts or {}),
                actor=actor,
                note=note,
                collector_id=self._collector_id,
            )
        )
        self._audit(run, alert, "notified", actor, alert.state, alert.state, note=event)

    @staticmethod
    def _hierarchy(run: _Pass, site_id: str) -> dict[str, str]:
        """level → site id for the site and its ancestors (room … province)."""
        cached = run.sites.get(site_id)
        if cached is not None:
            return cached
        chain: dict[str, str] = {}
        current: str | None = site_id
        visited: set[str] = set()
        # A parent cycle (bad manual edit) must end the walk, not loop forever.
        while current is not None and current not in visited:
            visited.add(current)
            site = run.session.get(Site, current)
            if site is None:
                break
            chain.setdefault(site.level, site.id)
            current = site.parent_id
        run.sites[site_id] = chain
        return chain

    @staticmethod
    def _device_identity(run: _Pass, device_id: str | None) -> tuple[str | None, str | None]:
        """(hostname, mac) of the device from the asset register, when it is known there."""
        if device_id is None:
            return None, None
        if device_id in run.devices:
            return run.devices[device_id]
        identity: tuple[str | None, str | None] = (None, None)
        device = run.session.get(Device, device_id)
        if device is not None and device.asset_id is not None:
            asset = run.session.get(Asset, device.asset_id)
            if asset is not None:
                identity = (asset.name, asset.mac_list[0] if asset.macs else None)
        run.devices[device_id] = identity
        return identity


def open_alerts_query(fingerprints: Collection[str]) -> Select[Alert]:
    """The open alerts of ``fingerprints`` (one each at most, ``ux_alerts_open_fingerprint``)."""
    return select(Alert).where(
        Alert.fingerprint.in_(fingerprints),
        # Spelled as the partial index's own condition, so SQLite may use that index.
        text(f"alerts.{OPEN_ALERT_CONDITION}"),
    )


def latest_alerts_query(fingerprints: Collection[str]) -> Select[Alert]:
    """The most recent alert of each of ``fingerprints`` (``ix_alerts_fingerprint_id``)."""
    latest = (
        select(func.max(Alert.id))
        .where(Alert.fingerprint.in_(fingerprints))
        .group_by(Alert.fingerprint)
    )
    return select(Alert).where(Alert.id.in_(latest))


def group_key_for(site_id: str, rule_id: str) -> str:
    return f"{site_id}/{rule_id}"


def _matched_on(alert: Alert) -> tuple[str, dict[str, Any], list[str]]:
    """What silences and inhibition rules look at that a repeat can change."""
    return alert.level, dict(alert.labels or {}), list(alert.tags or ())


def _deliverable(alert: _AlertTiming) -> bool:
    return not alert.silenced and not alert.inhibited


def _since(alert: _AlertTiming) -> datetime:
    assert alert.pending_since is not None
    return alert.pending_since


def _rank(level: str) -> int:
    return LEVELS.index(level) if level in LEVELS else -1


def _group_labels(group_key: str, size: int, new: int) -> dict[str, str]:
    return {"group_key": group_key, "group_size": str(size), "group_new": str(new)}


def _members_note(what: str, members: Sequence[Alert], head: Alert | None) -> str:
    others = [alert for alert in members if alert is not head]
    names = [alert.device_id or alert.fingerprint for alert in others[:_GROUP_NOTE_DEVICES]]
    more = len(others) - len(names)
    listed = ", ".join(names) + (f" and {more} more" if more > 0 else "")
    return f"{len(others)} {what}: {listed}"


def _actor(actor: object) -> str:
    if not isinstance(actor, str) or not actor.strip():
        raise AlertInputError("actor must be a non-empty user name")
    return actor.strip()[:ACTOR_LENGTH]


def _retryable(exc: IntegrityError | OperationalError) -> bool:
    if isinstance(exc, IntegrityError):
        # Another collector opened the same fingerprint first; the retry finds its alert.
        return "ux_alerts_open_fingerprint" in str(exc.orig) or "alerts.fingerprint" in str(
            exc.orig
        )
    sqlstate = getattr(exc.orig, "sqlstate", None)
    return sqlstate in _RETRY_SQLSTATES or "database is locked" in str(exc.orig)


def _reject_reason(signal: object) -> str | None:
    if not isinstance(signal, AlertSignal):
        return "not_a_signal"
    checks: list[tuple[bool, str]] = [
        (signal.status in ("firing", "resolved"), "status"),
        (signal.level in LEVELS, "level"),
        (isinstance(signal.fingerprint, str) and bool(signal.fingerprint.strip()), "fingerprint"),
        (_short_text(signal.rule_id, RULE_ID_LENGTH), "rule_id"),
        (_short_text(signal.site_id, SITE_ID_LENGTH), "site_id"),
        (
            signal.device_id is None
            or (isinstance(signal.device_id, str) and len(signal.device_id) <= DEVICE_ID_LENGTH),
            "device_id",
        ),
        (isinstance(signal.at, datetime) and signal.at.tzinfo is not None, "at"),
        (isinstance(signal.labels, dict), "labels"),
        (isinstance(signal.tags, tuple | list), "tags"),
        (isinstance(signal.evidence, tuple | list), "evidence"),
        (
            isinstance(signal.occurrences, int)
            and not isinstance(signal.occurrences, bool)
            and signal.occurrences >= 1,
            "occurrences",
        ),
    ]
    return next((reason for ok, reason in checks if not ok), None)


def _short_text(value: object, limit: int) -> bool:
    return isinstance(value, str) and bool(value.strip()) and len(value) <= limit


def _usable_evidence(item: object) -> bool:
    return (
        isinstance(item, Evidence)
        and isinstance(item.message_id, str)
        and isinstance(item.kind, str)
        and isinstance(item.ts, datetime)
        and item.ts.tzinfo is not None
    )


def _json_safe(excerpt: object) -> dict[str, Any]:
    """The excerpt as plain JSON (dates as ISO text), cut down if it is too big to keep."""
    try:
        text = json.dumps(excerpt, default=str, ensure_ascii=False)
    except (TypeError, ValueError):
        text = json.dumps(str(excerpt), ensure_ascii=False)
    if len(text) > MAX_EXCERPT_CHARS:
        return {"truncated": True, "text": text[:MAX_EXCERPT_CHARS]}
    value = json.loads(text)
    return value if isinstance(value, dict) else {"value": value}
