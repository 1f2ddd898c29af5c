"""The rules engine: decoded messages and clock ticks in, alert transitions out.

One runtime per rule holds that rule's state; a shared device table holds what every rule
may need about a device (type, last message time per kind, online state). Everything is
bounded (LRU by last use, evictions counted). The engine emits ``firing`` once when a
(rule, subject) starts firing and ``resolved`` once when it clears — never one signal per
message — so a site whose uplink drops produces one alert, not a storm.

Time is the collector's receive time (``DecodedMessage.received_at``), not the device's
clock: lab PCs with a wrong clock must neither hide from absence rules nor stretch windows.
"""

from __future__ import annotations

import hashlib
import heapq
import ipaddress
import math
from abc import ABC, abstractmethod
from collections import OrderedDict, deque
from collections.abc import Callable, Collection, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import count, islice
from typing import TYPE_CHECKING, Any, Final, Generic, TypeVar

import msgspec

from campuswatch.collector.rules.conditions import (
    compile_where,
    field_paths,
    values_equal,
)
from campuswatch.collector.rules.fields import Getter, compile_getter
from campuswatch.collector.rules.model import (
    LANGUAGES,
    AbsenceCondition,
    ChangeCondition,
    MatchCondition,
    NewEntityCondition,
    RatioCondition,
    Rule,
    RulePack,
    ThresholdCondition,
    parse_duration,
    version_key,
)
from campuswatch.collector.rules.privacy import minimise_paths
from campuswatch.collector.rules.templates import human_number, render
from campuswatch.collector.signals import AlertSignal, Evidence
from campuswatch.wire.codec import DecodedMessage
from campuswatch.wire.messages import (
    DiscoveredHost,
    DiscoveryMessage,
    InventoryMessage,
    Message,
    StateMessage,
)

if TYPE_CHECKING:
    from campuswatch.collector.register.assets import AssetChange

Clock = Callable[[], datetime]
IsRegistered = Callable[[str, str], bool]
"""``is_registered(site_id, key)``: key is a MAC (discovered hosts) or a device id."""
SubjectKey = tuple[str, str | None]
"""(site, entity): entity is a device id, ``mac:…`` for a discovered host, None for a site."""

K = TypeVar("K")
V = TypeVar("V")

_EXCERPT_VALUES: Final = 5
_EXCERPT_TEXT: Final = 120
_RATIO_EVIDENCE: Final = 5


def fingerprint(rule_id: str, site_id: str, entity: str | None) -> str:
    """Stable identity of one alert subject: same rule + site + entity → same alert."""
    text = f"{rule_id}\x1f{site_id}\x1f{entity or ''}"
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class EngineLimits:
    max_devices: int = 250_000
    max_subjects_per_rule: int = 250_000
    max_window_samples: int = 10_000


class _Bounded(OrderedDict[K, V], Generic[K, V]):
    """An LRU map that drops its least recently used entry when full and counts it."""

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.limit = limit
        self.evicted = 0

    def put(self, key: K, value: V) -> None:
        self[key] = value
        self.move_to_end(key)
        if len(self) > self.limit:
            self.popitem(last=False)
            self.evicted += 1


# --- shared device table ---------------------------------------------------------------------


class _DueQueue(Generic[V]):
    """Items that wait for a time, soonest first: what a tick has to look at again. An
    item may be stale by the time it is due (its subject evicted or forgotten); the caller
    skips those, and ``keep`` drops them early so a flood of short-lived subjects cannot
    grow the queue past the tables it serves."""

    __slots__ = ("_heap", "_order")

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, V]] = []
        self._order = count()  # ties in time never compare the items

    def __len__(self) -> int:
        return len(self._heap)

    def push(self, due_s: float, item: V) -> None:
        heapq.heappush(self._heap, (due_s, next(self._order), item))

    def pop_due(self, now_s: float) -> list[V]:
        heap, due = self._heap, []
        while heap and heap[0][0] <= now_s:
            due.append(heapq.heappop(heap)[2])
        return due

    def keep(self, wanted: Callable[[V], bool], live: int) -> bool:
        """Drop the items ``wanted`` refuses once the queue holds over twice the ``live``
        subjects it serves (cheap to ask at every tick); True if it did."""
        if len(self._heap) <= 2 * live + _QUEUE_SLACK:
            return False
        self._heap = [entry for entry in self._heap if wanted(entry[2])]
        heapq.heapify(self._heap)
        return True

    def clear(self) -> None:
        self._heap.clear()


_QUEUE_SLACK: Final = 64


class DeviceRecord:
    __slots__ = ("device_type", "hostname", "ip", "last_any", "last_ref", "last_seen", "offline")

    def __init__(self) -> None:
        self.device_type: str | None = None
        # From the newest inventory: alerts about the device name its host and address,
        # which the SOC needs to find the PC (CEF src, ECS host.ip, OCSF device.ip).
        self.hostname: str | None = None
        self.ip: str | None = None
        self.last_seen: dict[str, float] = {}
        self.last_ref: dict[str, tuple[str, datetime]] = {}
        self.last_any = 0.0
        self.offline = False


def _short(value: object) -> object:
    if isinstance(value, str):
        value = minimise_paths(value)
        return value if len(value) <= _EXCERPT_TEXT else value[:_EXCERPT_TEXT] + "…"
    if isinstance(value, bool | int | float) or value is None:
        return value
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, list | tuple):
        return [_short(item) for item in list(value)[:_EXCERPT_VALUES]]
    return _short(str(msgspec.to_builtins(value)))


def _evidence(message: Message, kind: str, excerpt: dict[str, object]) -> Evidence:
    return Evidence(message.id, kind, message.ts, excerpt)


def _as_datetime(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, tz=UTC)


# --- rule runtimes ---------------------------------------------------------------------------


class _Alert:
    __slots__ = ("evidence", "firing", "last_active", "pending_since", "values")

    def __init__(self) -> None:
        self.firing = False
        self.pending_since: float | None = None
        self.last_active = 0.0
        self.evidence: tuple[Evidence, ...] = ()
        self.values: dict[str, object] = {}


class _Repeat:
    """Triggers of a subject already firing, folded until the alert manager takes them."""

    __slots__ = ("at_s", "count", "evidence", "values")

    def __init__(self) -> None:
        self.count = 0
        self.at_s = 0.0
        self.evidence: tuple[Evidence, ...] = ()
        self.values: dict[str, object] = {}


class _RuleRuntime(ABC):
    """State and transitions of one rule; subclasses decide when the condition holds."""

    kinds: tuple[str, ...] | None = None
    """Message kinds this rule reads; None means every kind."""

    def __init__(self, rule: Rule, limits: EngineLimits) -> None:
        self.rule = rule
        self.limits = limits
        self.device_types = frozenset(rule.device_types)
        self.alerts: _Bounded[SubjectKey, _Alert] = _Bounded(limits.max_subjects_per_rule)
        self.pending: set[SubjectKey] = set()
        self.firing: set[SubjectKey] = set()
        self.for_s = 0.0
        self.resolve_after_s: float | None = None
        # Messages that satisfied the rule while its subject was already firing: counted
        # in memory (no signal per message), taken in batches by ``take_repeats``.
        self.repeats: dict[SubjectKey, _Repeat] = {}
        self._ticking = False

    # subclasses override ------------------------------------------------------------------
    @abstractmethod
    def on_message(
        self, decoded: DecodedMessage, record: DeviceRecord, at_s: float, out: list[AlertSignal]
    ) -> None:
        """Judge one message of a kind this rule reads; append signals to ``out``."""

    def on_tick(
        self, now_s: float, devices: _Bounded[SubjectKey, DeviceRecord], out: list[AlertSignal]
    ) -> None:
        """Condition-specific work on a tick; the pending/auto-resolve part is shared."""
        return None  # most conditions have nothing to do on a tick

    # shared -------------------------------------------------------------------------------
    def subject_of(self, site: str, device_id: str) -> SubjectKey:
        return (site, device_id) if self.rule.subject == "device" else (site, None)

    def set_active(
        self,
        key: SubjectKey,
        active: bool | None,
        at_s: float,
        out: list[AlertSignal],
        evidence: tuple[Evidence, ...] = (),
        values: dict[str, object] | None = None,
    ) -> None:
        """Feed one observation: True holds, False clears, None keeps (hysteresis band)."""
        alert = self.alerts.get(key)
        if active is None:
            return
        if not active:
            if alert is None:
                return
            if alert.firing:
                self._emit("resolved", key, alert, at_s, out)
            self._forget(key)
            return
        if alert is None:
            alert = _Alert()
            evicted_before = self.alerts.evicted
            self.alerts.put(key, alert)
            if self.alerts.evicted != evicted_before:
                self._prune_sets()
        alert.last_active = at_s
        if alert.firing:
            if not self._ticking:  # a tick re-judging a held condition is no new trigger
                self._repeat(key, at_s, evidence, values)
            return
        alert.evidence = evidence
        alert.values = values or {}
        if self.for_s <= 0:
            self._fire(key, alert, at_s, out)
        elif alert.pending_since is None:
            alert.pending_since = at_s
            self.pending.add(key)
        elif at_s - alert.pending_since >= self.for_s:
            self._fire(key, alert, at_s, out)

    def _fire(self, key: SubjectKey, alert: _Alert, at_s: float, out: list[AlertSignal]) -> None:
        alert.firing = True
        alert.pending_since = None
        self.pending.discard(key)
        self.firing.add(key)
        self._emit("firing", key, alert, at_s, out)

    def _repeat(
        self,
        key: SubjectKey,
        at_s: float,
        evidence: tuple[Evidence, ...],
        values: dict[str, object] | None,
    ) -> None:
        repeat = self.repeats.get(key)
        if repeat is None:
            repeat = self.repeats[key] = _Repeat()
        repeat.count += 1
        repeat.at_s = max(repeat.at_s, at_s)
        repeat.evidence = evidence or repeat.evidence
        repeat.values = values or repeat.values

    def take_repeats(
        self, out: list[AlertSignal], subjects: Collection[SubjectKey] | None = None
    ) -> None:
        """One firing signal per repeated subject (count, newest time and evidence)."""
        for key in list(self.repeats) if subjects is None else subjects:
            repeat = self.repeats.pop(key, None)
            if repeat is None:
                continue
            folded = _Alert()
            folded.evidence, folded.values = repeat.evidence, repeat.values
            self._emit("firing", key, folded, repeat.at_s, out, occurrences=repeat.count)

    def _forget(self, key: SubjectKey) -> None:
        self.alerts.pop(key, None)
        self.pending.discard(key)
        self.firing.discard(key)

    def _prune_sets(self) -> None:
        self.pending &= self.alerts.keys()
        self.firing &= self.alerts.keys()

    def _subject_tables(self) -> list[dict[SubjectKey, Any]]:
        """Every per-subject table; a runtime with more state adds its own."""
        return [self.alerts, self.repeats]

    def forget_sites(self, sites: Collection[str]) -> None:
        """Drop all state of subjects at ``sites``, silently (no signal)."""
        for table in self._subject_tables():
            for key in [key for key in table if key[0] in sites]:
                del table[key]
        self._prune_sets()

    def tick(
        self, now_s: float, devices: _Bounded[SubjectKey, DeviceRecord], out: list[AlertSignal]
    ) -> None:
        self._ticking = True
        try:
            self.on_tick(now_s, devices, out)
        finally:
            self._ticking = False
        for key in list(self.pending):
            alert = self.alerts.get(key)
            if alert is None or alert.pending_since is None:
                self.pending.discard(key)
            elif now_s - alert.pending_since >= self.for_s:
                self._fire(key, alert, now_s, out)
        if self.resolve_after_s is not None:
            for key in list(self.firing):
                alert = self.alerts.get(key)
                if alert is not None and now_s - alert.last_active >= self.resolve_after_s:
                    self.set_active(key, False, now_s, out)

    def resolve_all(self, now_s: float) -> list[AlertSignal]:
        out: list[AlertSignal] = []
        for key in list(self.firing):
            self.set_active(key, False, now_s, out)
        return out

    def _emit(
        self,
        status: str,
        key: SubjectKey,
        alert: _Alert,
        at_s: float,
        out: list[AlertSignal],
        *,
        occurrences: int = 1,
    ) -> None:
        rule = self.rule
        site, entity = key
        device_id = entity if entity is not None and not entity.startswith("mac:") else None
        values: dict[str, Any] = {
            "site_id": site,
            "device_id": device_id or "",
            "entity": entity or site,
            "rule_title": rule.text("title", "en"),
            "level": rule.level,
            "device_type": alert.values.get("device_type", ""),
            **alert.values,
        }
        # Labels are machine data for the SOC: rendered once, in English.
        labels = {name: _render(text, values) for name, text in rule.labels.items()}
        values.update(labels)
        labels.update(
            {
                "condition": rule.condition_kind(),
                "rule_status": rule.status,
                **{
                    name: text
                    for name, value in alert.values.items()
                    if (text := _label_text(value))
                },
            }
        )
        if entity is not None:
            labels["entity"] = entity
        texts = {
            language: {
                "title": rule.text("title", language),
                "summary": _render(
                    rule.text("summary", language),
                    {**values, "rule_title": rule.text("title", language)},
                    language,
                ),
                "description": rule.text("description", language),
            }
            for language in LANGUAGES
        }
        out.append(
            AlertSignal(
                rule_id=rule.id,
                rule_title=texts["en"]["title"],
                level=rule.level,
                status="firing" if status == "firing" else "resolved",
                fingerprint=fingerprint(rule.id, site, entity),
                site_id=site,
                device_id=device_id,
                summary=texts["en"]["summary"],
                at=_as_datetime(at_s),
                labels=labels,
                tags=tuple(rule.tags),
                description=texts["en"]["description"],
                runbook_en=rule.text("runbook", "en"),
                runbook_vi=rule.text("runbook", "vi"),
                evidence=alert.evidence,
                occurrences=occurrences,
                texts=texts,
            )
        )


def _render(template: str, values: dict[str, Any], language: str = "en") -> str:
    # Minimised after rendering: a fact, a value or the template itself may hold a path.
    return minimise_paths(render(template, values, language))


def _label_text(value: object) -> str:
    """A value as a label: numbers for people, lists joined, nothing for unknown."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return human_number(value)
    if isinstance(value, int | str):
        return minimise_paths(str(value))
    if isinstance(value, list | tuple):
        return ", ".join(text for item in value if (text := _label_text(item)))
    return ""


class _Facts:
    """A rule's ``facts``: read from the message that made it fire.

    Re-read from ``rule.facts`` when a hot reload swapped the rule under a runtime whose
    logic did not change (facts are prose, not logic).
    """

    def __init__(self) -> None:
        self._source: dict[str, str] | None = None
        self._getters: list[tuple[str, str, Getter]] = []

    def read(self, rule: Rule, message: object) -> tuple[dict[str, object], dict[str, object]]:
        """(placeholder values by fact name, evidence excerpt by field path)."""
        if rule.facts is not self._source:
            self._source = rule.facts
            self._getters = [
                (name, path, compile_getter(path)) for name, path in rule.facts.items()
            ]
        values: dict[str, object] = {}
        excerpt: dict[str, object] = {}
        for name, path, get in self._getters:
            found = get(message)
            if not found:
                values[name] = ""
                continue
            shown = _short(found[0] if len(found) == 1 else found)
            values[name] = shown
            excerpt[path] = shown
        return values, excerpt


def _duration(text: str | None) -> float | None:
    return None if text is None else parse_duration(text)


class _MatchRuntime(_RuleRuntime):
    def __init__(self, rule: Rule, condition: MatchCondition, limits: EngineLimits) -> None:
        super().__init__(rule, limits)
        self.kinds = (condition.kind,)
        self.kind = condition.kind
        self.predicate = compile_where(condition.where)
        self.excerpt_getters = _excerpt_getters(field_paths(condition.where))
        self.facts = _Facts()
        self.for_s = _duration(condition.for_) or 0.0
        self.resolve_after_s = _duration(condition.resolve_after)

    def on_message(
        self, decoded: DecodedMessage, record: DeviceRecord, at_s: float, out: list[AlertSignal]
    ) -> None:
        message = decoded.message
        key = (message.site, message.device_id)
        if self.predicate(message):
            excerpt = _excerpt(self.excerpt_getters, message)
            first = next(iter(excerpt.values()), None)
            facts, fact_excerpt = self.facts.read(self.rule, message)
            excerpt.update(fact_excerpt)
            # Lists stay lists so that a format spec ({value:hours}) applies to each item.
            values: dict[str, object] = {"value": "" if first is None else first, **facts}
            if record.device_type:
                values["device_type"] = record.device_type
            evidence = (_evidence(message, self.kind, excerpt),)
            self.set_active(key, True, at_s, out, evidence, values)
        elif self.resolve_after_s is None and key in self.alerts:
            self.set_active(key, False, at_s, out)


def _host_excerpt(host: DiscoveredHost) -> dict[str, object]:
    return {
        "mac": host.mac or "",
        "ip": host.ip,
        "vendor": host.vendor or "",
        "hostname": host.hostname or "",
    }


def _primary_address(message: InventoryMessage) -> str | None:
    """The address the SOC would find the PC at: first IPv4 of an interface that is up."""
    fallback: str | None = None
    for interface in message.interfaces:
        if interface.up is False:
            continue
        for address in [*interface.ipv4, *interface.ipv6]:
            try:
                parsed = ipaddress.ip_address(address.split("/")[0].split("%")[0])
            except ValueError:
                continue
            if parsed.is_loopback or parsed.is_link_local or parsed.is_unspecified:
                continue
            if parsed.version == 4:
                return str(parsed)
            fallback = fallback or str(parsed)
    return fallback


def _excerpt_getters(paths: Iterable[str]) -> list[tuple[str, Getter]]:
    unique = dict.fromkeys(paths)
    return [(path, compile_getter(path)) for path in unique]


def _excerpt(getters: list[tuple[str, Getter]], message: object) -> dict[str, object]:
    excerpt: dict[str, object] = {}
    for path, get in getters:
        found = get(message)
        excerpt[path] = _short(found[0] if len(found) == 1 else found)
    return excerpt


def _label_value(value: object) -> object:
    if isinstance(value, list):
        return ", ".join(map(str, value))
    return value if value is not None else ""


def _bound_tests(
    condition: ThresholdCondition | RatioCondition,
) -> tuple[Callable[[float], bool], Callable[[float], bool]]:
    """(fires?, clears?) for a value; between the two the alert keeps its state."""
    if condition.above is not None:
        bound, upward, inclusive = float(condition.above), True, False
    elif condition.at_least is not None:
        bound, upward, inclusive = float(condition.at_least), True, True
    elif condition.below is not None:
        bound, upward, inclusive = float(condition.below), False, False
    else:
        assert condition.at_most is not None
        bound, upward, inclusive = float(condition.at_most), False, True
    if upward:

        def fires(value: float) -> bool:
            return value >= bound if inclusive else value > bound

        clear_below = condition.clear_below
        if clear_below is None:
            return fires, lambda value: not fires(value)
        low = float(clear_below)
        return fires, lambda value: value < low

    def fires_low(value: float) -> bool:
        return value <= bound if inclusive else value < bound

    clear_above = condition.clear_above
    if clear_above is None:
        return fires_low, lambda value: not fires_low(value)
    high = float(clear_above)
    return fires_low, lambda value: value > high


_Sample = tuple[float, float, str, datetime]
"""At (engine seconds), value, and the message's id and ``ts``: the evidence, made only
when the window fires. A district's classroom sensors keep ~17 samples each in two
10-minute windows; an evidence record per sample was ~250 bytes of them."""


class _Window:
    """Samples in a sliding time window; running sum and monotonic deques for max/min."""

    __slots__ = ("extreme", "samples", "total")

    def __init__(self) -> None:
        self.samples: deque[_Sample] = deque()
        self.extreme: deque[tuple[float, float]] = deque()
        self.total = 0.0


class _ThresholdRuntime(_RuleRuntime):
    def __init__(self, rule: Rule, condition: ThresholdCondition, limits: EngineLimits) -> None:
        super().__init__(rule, limits)
        self.kinds = (condition.kind,)
        self.kind = condition.kind
        self.aggregate = condition.aggregate
        self.window_s = parse_duration(condition.window) or 0.0
        self.predicate = compile_where(condition.where)
        self.getter = compile_getter(condition.field) if condition.field else None
        self.fires, self.clears = _bound_tests(condition)
        self.for_s = _duration(condition.for_) or 0.0
        self.windows: _Bounded[SubjectKey, _Window] = _Bounded(limits.max_subjects_per_rule)
        # Each live window, due when its oldest sample leaves it.
        self.expiries: _DueQueue[tuple[SubjectKey, _Window]] = _DueQueue()
        self.dropped_samples = 0

    def _subject_tables(self) -> list[dict[SubjectKey, Any]]:
        return [*super()._subject_tables(), self.windows]

    def on_message(
        self, decoded: DecodedMessage, record: DeviceRecord, at_s: float, out: list[AlertSignal]
    ) -> None:
        message = decoded.message
        if not self.predicate(message):
            return
        if self.getter is None:
            samples = [1.0]
        else:
            samples = [
                float(value)
                for value in self.getter(message)
                if isinstance(value, int | float) and not isinstance(value, bool)
            ]
            if not samples:
                return
        key = self.subject_of(message.site, message.device_id)
        window = self.windows.get(key)
        if window is None:
            window = _Window()
            self.windows.put(key, window)
            self.expiries.push(at_s + self.window_s, (key, window))
        else:
            self.windows.move_to_end(key)
        for sample in samples:
            self._add(window, at_s, sample, message.id, message.ts)
        self._evaluate(key, window, at_s, out)

    def _add(
        self, window: _Window, at_s: float, value: float, message_id: str, ts: datetime
    ) -> None:
        window.samples.append((at_s, value, message_id, ts))
        window.total += value
        if self.aggregate in ("max", "min"):
            extreme = window.extreme
            if self.aggregate == "max":
                while extreme and extreme[-1][1] <= value:
                    extreme.pop()
            else:
                while extreme and extreme[-1][1] >= value:
                    extreme.pop()
            extreme.append((at_s, value))
        if len(window.samples) > self.limits.max_window_samples:
            self._drop_oldest(window)
            self.dropped_samples += 1

    def _drop_oldest(self, window: _Window) -> None:
        value = window.samples.popleft()[1]
        window.total -= value
        oldest = window.samples[0][0] if window.samples else math.inf
        while window.extreme and window.extreme[0][0] < oldest:
            window.extreme.popleft()

    def _expire(self, window: _Window, now_s: float) -> None:
        horizon = now_s - self.window_s
        while window.samples and window.samples[0][0] <= horizon:
            self._drop_oldest(window)
        if not window.samples:
            window.total = 0.0  # forget accumulated float error with the samples
            window.extreme.clear()

    def _value(self, window: _Window) -> float | None:
        if not window.samples:
            return 0.0 if self.aggregate == "count" else None
        if self.aggregate == "count":
            return float(len(window.samples))
        if self.aggregate == "avg":
            return window.total / len(window.samples)
        return window.extreme[0][1]

    def _evaluate(
        self, key: SubjectKey, window: _Window, at_s: float, out: list[AlertSignal]
    ) -> None:
        self._expire(window, at_s)
        value = self._value(window)
        if value is None:
            # No data in the window: nothing shows a problem (absence rules cover silence).
            self.set_active(key, False, at_s, out)
            return
        if self.fires(value):
            # The newest three samples, oldest first; each sample's own value, not the
            # aggregate (``value``) that fired.
            newest = reversed(list(islice(reversed(window.samples), 3)))
            recent = tuple(
                Evidence(message_id, self.kind, ts, {"value": sample})
                for _, sample, message_id, ts in newest
            )
            values: dict[str, object] = {
                "value": round(value, 3),
                "aggregate": self.aggregate,
                "window": self.window_s,  # seconds: `{window:seconds}` says "10 minutes"
            }
            self.set_active(key, True, at_s, out, recent, values)
        elif self.clears(value):
            self.set_active(key, False, at_s, out)
        else:
            self.set_active(key, None, at_s, out)

    def _live(self, item: tuple[SubjectKey, _Window]) -> bool:
        return self.windows.get(item[0]) is item[1]

    def on_tick(
        self, now_s: float, devices: _Bounded[SubjectKey, DeviceRecord], out: list[AlertSignal]
    ) -> None:
        # A window's value changes only when a message adds to it (judged then) or a sample
        # leaves it. Each window waits in ``expiries`` for its oldest sample to leave, so a
        # tick looks only at those: a district's classroom sensors keep 120,000 windows, and
        # reaching each of them every 10 s was most of this rule's share of the tick.
        # (Pending ``for`` timers are the shared tick's.)
        self.expiries.keep(self._live, len(self.windows))
        horizon = now_s - self.window_s
        later: list[tuple[SubjectKey, _Window]] = []
        for key, window in self.expiries.pop_due(now_s):
            if not self._live((key, window)):
                continue  # emptied, evicted or forgotten since it was scheduled
            if not window.samples or window.samples[0][0] <= horizon:
                self._evaluate(key, window, now_s, out)
            # else its oldest sample left earlier (a message's judgement, or the bound)
            if window.samples:
                later.append((key, window))
            else:
                del self.windows[key]
        for key, window in later:  # after the loop: a due rounded down cannot spin
            self.expiries.push(window.samples[0][0] + self.window_s, (key, window))


class _AbsenceRuntime(_RuleRuntime):
    def __init__(self, rule: Rule, condition: AbsenceCondition, limits: EngineLimits) -> None:
        super().__init__(rule, limits)
        self.kind = condition.kind
        self.kinds = (condition.kind,) if condition.kind else None
        self.silence_s = parse_duration(condition.for_) or 0.0
        self.ignore_when_offline = condition.ignore_when_offline
        # A device rule judges a device when its silence may be due, not at every tick:
        # one entry per device in ``scheduled``. The first tick (after a start, a restore or
        # a reload) looks at every device and fills them.
        self.due: _DueQueue[SubjectKey] = _DueQueue()
        self.scheduled: set[SubjectKey] = set()
        self._look_at_all = True

    def on_message(
        self, decoded: DecodedMessage, record: DeviceRecord, at_s: float, out: list[AlertSignal]
    ) -> None:
        message = decoded.message
        key = self.subject_of(message.site, message.device_id)
        if key in self.alerts:
            self.set_active(key, False, at_s, out)
        if key[1] is not None and key not in self.scheduled:
            self._schedule(at_s + self.silence_s, key)

    def look_at_all_devices(self) -> None:
        """Judge every device at the next tick, and time their silences afresh from there."""
        self._look_at_all = True

    def _schedule(self, due_s: float, key: SubjectKey) -> None:
        self.due.push(due_s, key)
        self.scheduled.add(key)

    def _forget(self, key: SubjectKey) -> None:
        super()._forget(key)
        # Resolved (by a report, or by a person while the device stays silent): judged again
        # at the next tick, as every device was before.
        if key[1] is not None and key not in self.scheduled:
            self._schedule(0.0, key)

    def forget_sites(self, sites: Collection[str]) -> None:
        super().forget_sites(sites)
        # Their queue entries find no device when due (the engine forgets the devices too).
        self.scheduled = {key for key in self.scheduled if key[0] not in sites}

    def _last(self, record: DeviceRecord) -> float | None:
        if self.kind is None:
            return record.last_any
        return record.last_seen.get(self.kind)

    def on_tick(
        self, now_s: float, devices: _Bounded[SubjectKey, DeviceRecord], out: list[AlertSignal]
    ) -> None:
        if self.rule.subject == "device":
            # A device is its own subject: no grouping to do, and a district's 100,000
            # devices need not be looked at by every absence rule at every tick.
            self._judge_due_devices(now_s, devices, out)
            for key in list(self.firing):
                watched = devices.get(key)
                if watched is None or self._watched_last(watched) is None:
                    # switched off on purpose, filtered, or forgotten
                    self.set_active(key, False, now_s, out)
            return
        latest: dict[SubjectKey, tuple[float, DeviceRecord]] = {}
        for (site, device_id), record in devices.items():
            last = self._watched_last(record)
            if last is None:
                continue
            assert device_id is not None
            key = self.subject_of(site, device_id)
            known = latest.get(key)
            if known is None or last > known[0]:
                latest[key] = (last, record)
        for key, (last, record) in latest.items():
            self._judge(key, last, record, now_s, out)
        for key in list(self.firing):
            if key not in latest:  # switched off on purpose, filtered, or forgotten
                self.set_active(key, False, now_s, out)

    def _judge_due_devices(
        self, now_s: float, devices: _Bounded[SubjectKey, DeviceRecord], out: list[AlertSignal]
    ) -> None:
        if self._look_at_all:
            self._look_at_all = False
            self.due.clear()
            self.scheduled.clear()
            candidates: list[SubjectKey] = list(devices)
        else:
            # Devices evicted from ``devices`` (a flood of made-up ids) leave the queue
            # here, not a whole silence later.
            if self.due.keep(devices.__contains__, len(devices)):
                self.scheduled &= devices.keys()
            candidates = self.due.pop_due(now_s)
            self.scheduled.difference_update(candidates)
        later: list[tuple[float, SubjectKey]] = []
        for key in candidates:
            record = devices.get(key)
            if record is None:
                continue  # evicted or forgotten: the firing loop resolves its alert
            if self.device_types and record.device_type not in self.device_types:
                continue  # not watched; a report after its type changed schedules it
            if self.ignore_when_offline and record.offline:
                # Back online needs no report of this rule's kind: looked at every tick.
                later.append((now_s, key))
                continue
            last = self._last(record)
            if last is None:
                continue  # never sent what this rule watches; its first report schedules it
            self._judge(key, last, record, now_s, out)
            if key not in self.firing:  # a firing device waits for its report (on_message)
                later.append((last + self.silence_s, key))
        for due_s, key in later:  # after the loop: a device due again now waits a tick
            if key not in self.scheduled:
                self._schedule(due_s, key)

    def _watched_last(self, record: DeviceRecord) -> float | None:
        """When the device last sent what this rule watches; None if the rule ignores it."""
        if self.device_types and record.device_type not in self.device_types:
            return None
        if self.ignore_when_offline and record.offline:
            return None
        return self._last(record)

    def _judge(
        self,
        key: SubjectKey,
        last: float,
        record: DeviceRecord,
        now_s: float,
        out: list[AlertSignal],
    ) -> None:
        """One subject whose newest watched report came at ``last``."""
        silent = now_s - last
        if silent >= self.silence_s:
            if key not in self.firing:
                ref = record.last_ref.get(self.kind) if self.kind else None
                if ref is None and record.last_ref:
                    ref = max(record.last_ref.values(), key=lambda item: item[1])
                evidence = (
                    (
                        Evidence(
                            ref[0],
                            self.kind or "any",
                            ref[1],
                            {"last_seen": _as_datetime(last).isoformat()},
                        ),
                    )
                    if ref
                    else ()
                )
                values: dict[str, object] = {
                    "last_seen": _as_datetime(last).isoformat(timespec="seconds"),
                    # seconds: `{silent_for:seconds}` says "15 minutes" / "15 phút"
                    "silent_for": round(silent),
                }
                if record.device_type and key[1] is not None:
                    values["device_type"] = record.device_type
                self.set_active(key, True, now_s, out, evidence, values)
        elif key in self.alerts:
            self.set_active(key, False, now_s, out)


class _LastValue:
    __slots__ = ("at_s", "evidence", "value")

    def __init__(self, value: object, at_s: float, evidence: Evidence) -> None:
        self.value = value
        self.at_s = at_s
        self.evidence = evidence


class _ChangeRuntime(_RuleRuntime):
    def __init__(self, rule: Rule, condition: ChangeCondition, limits: EngineLimits) -> None:
        super().__init__(rule, limits)
        self.kinds = (condition.kind,)
        self.kind = condition.kind
        self.path = condition.field
        self.getter = compile_getter(condition.field)
        self.from_ = condition.from_
        self.to = condition.to
        self.direction = condition.direction
        self.version = condition.compare == "version"
        self.within_s = _duration(condition.within)
        self.resolve_after_s = _duration(condition.resolve_after)
        self.facts = _Facts()
        self.last: _Bounded[SubjectKey, _LastValue] = _Bounded(limits.max_subjects_per_rule)

    def _subject_tables(self) -> list[dict[SubjectKey, Any]]:
        return [*super()._subject_tables(), self.last]

    def on_message(
        self, decoded: DecodedMessage, record: DeviceRecord, at_s: float, out: list[AlertSignal]
    ) -> None:
        message = decoded.message
        found = self.getter(message)
        if not found:
            return  # unknown is not a change
        value: object = found[0] if len(found) == 1 else tuple(found)
        key = (message.site, message.device_id)
        facts, fact_excerpt = self.facts.read(self.rule, message)
        evidence = Evidence(
            message.id, self.kind, message.ts, {self.path: _short(value), **fact_excerpt}
        )
        previous = self.last.get(key)
        self.last.put(key, _LastValue(value, at_s, evidence))
        if previous is None or values_equal(previous.value, value):
            return
        recent = self.within_s is None or at_s - previous.at_s <= self.within_s
        if recent and self._matches(previous.value, value):
            values: dict[str, object] = {
                "value": _label_value(value),
                "previous": _label_value(previous.value),
                **facts,
            }
            self.set_active(key, True, at_s, out, (previous.evidence, evidence), values)
        elif self.resolve_after_s is None and key in self.firing:
            self.set_active(key, False, at_s, out)

    def _matches(self, before: object, after: object) -> bool:
        if self.from_ is not msgspec.UNSET and not values_equal(before, self.from_):
            return False
        if self.to is not msgspec.UNSET and not values_equal(after, self.to):
            return False
        if self.direction == "any":
            return True
        try:
            if self.version:
                older, newer = version_key(before), version_key(after)
                return newer < older if self.direction == "decrease" else newer > older
            if isinstance(before, int | float) and isinstance(after, int | float):
                return after < before if self.direction == "decrease" else after > before
        except TypeError:
            return False
        return False


class _NewEntityRuntime(_RuleRuntime):
    def __init__(
        self,
        rule: Rule,
        condition: NewEntityCondition,
        limits: EngineLimits,
        is_registered: IsRegistered | None,
    ) -> None:
        super().__init__(rule, limits)
        self.entity = condition.entity
        self.kinds = ("discovery",) if condition.entity == "discovered_host" else ("hello",)
        self.resolve_after_s = _duration(condition.resolve_after)
        self.is_registered = is_registered

    def on_message(
        self, decoded: DecodedMessage, record: DeviceRecord, at_s: float, out: list[AlertSignal]
    ) -> None:
        if self.is_registered is None:
            return  # fed through RuleEngine.process_asset_changes instead
        message = decoded.message
        if isinstance(message, DiscoveryMessage):
            for host in message.hosts:
                if host.mac is None:
                    continue  # without a MAC a host cannot be told apart from the next one
                values = _host_excerpt(host)
                evidence = Evidence(message.id, "discovery", message.ts, dict(values))
                registered = self.is_registered(message.site, host.mac)
                self.observe(
                    message.site, f"mac:{host.mac}", not registered, at_s, out, (evidence,), values
                )
        else:
            registered = self.is_registered(message.site, message.device_id)
            evidence = Evidence(message.id, decoded.topic.kind, message.ts, {})
            self.observe(
                message.site, message.device_id, not registered, at_s, out, (evidence,), {}
            )

    def observe(
        self,
        site: str,
        entity: str,
        unknown: bool,
        at_s: float,
        out: list[AlertSignal],
        evidence: tuple[Evidence, ...],
        values: dict[str, object],
    ) -> None:
        key = (site, entity)
        if unknown:
            self.set_active(key, True, at_s, out, evidence, values)
        elif key in self.alerts:
            self.set_active(key, False, at_s, out)


class _RatioEntry:
    __slots__ = ("at_s", "evidence", "matches")

    def __init__(self, matches: bool, at_s: float, evidence: Evidence) -> None:
        self.matches = matches
        self.at_s = at_s
        self.evidence = evidence


class _RatioRuntime(_RuleRuntime):
    def __init__(self, rule: Rule, condition: RatioCondition, limits: EngineLimits) -> None:
        super().__init__(rule, limits)
        self.kinds = (condition.kind,)
        self.kind = condition.kind
        self.predicate = compile_where(condition.where)
        self.excerpt_getters = _excerpt_getters(field_paths(condition.where))
        self.fires, self.clears = _bound_tests(condition)
        self.upward = condition.above is not None or condition.at_least is not None
        self.max_age_s = _duration(condition.max_age)
        self.min_devices = condition.min_devices
        self.for_s = _duration(condition.for_) or 0.0
        self.latest: _Bounded[SubjectKey, _RatioEntry] = _Bounded(limits.max_devices)

    def _subject_tables(self) -> list[dict[SubjectKey, Any]]:
        return [*super()._subject_tables(), self.latest]

    def on_message(
        self, decoded: DecodedMessage, record: DeviceRecord, at_s: float, out: list[AlertSignal]
    ) -> None:
        # Judge the message now, keep one boolean: cheaper than keeping every latest message.
        message = decoded.message
        matches = self.predicate(message)
        evidence = _evidence(message, self.kind, _excerpt(self.excerpt_getters, message))
        self.latest.put((message.site, message.device_id), _RatioEntry(matches, at_s, evidence))

    def _population(
        self, devices: _Bounded[SubjectKey, DeviceRecord]
    ) -> Iterator[tuple[SubjectKey, _RatioEntry | None]]:
        if self.device_types:
            for key, record in devices.items():
                if record.device_type in self.device_types:
                    yield key, self.latest.get(key)
        else:
            yield from self.latest.items()

    def on_tick(
        self, now_s: float, devices: _Bounded[SubjectKey, DeviceRecord], out: list[AlertSignal]
    ) -> None:
        totals: dict[str, list[int]] = {}
        pushing: dict[str, list[Evidence]] = {}
        for (site, _device), entry in self._population(devices):
            if self.max_age_s is not None and (
                entry is None or now_s - entry.at_s > self.max_age_s
            ):
                continue  # not part of today's picture (switched off, or no fresh report)
            counts = totals.setdefault(site, [0, 0])
            counts[1] += 1
            matches = entry is not None and entry.matches
            if matches:
                counts[0] += 1
            if entry is not None and matches == self.upward:
                found = pushing.setdefault(site, [])
                if len(found) < _RATIO_EVIDENCE:
                    found.append(entry.evidence)
        for site, (matching, total) in totals.items():
            key: SubjectKey = (site, None)
            if total < self.min_devices:
                self.set_active(key, False, now_s, out)
                continue
            ratio = 100.0 * matching / total
            if self.fires(ratio):
                values: dict[str, object] = {
                    "ratio_pct": round(ratio, 1),
                    "matching": matching,
                    "total": total,
                }
                evidence = tuple(pushing.get(site, ()))
                self.set_active(key, True, now_s, out, evidence, values)
            elif self.clears(ratio):
                self.set_active(key, False, now_s, out)
        for key in list(self.alerts):
            if key[0] not in totals:
                self.set_active(key, False, now_s, out)


# --- the engine ------------------------------------------------------------------------------


def _runtime_for(
    rule: Rule, limits: EngineLimits, is_registered: IsRegistered | None
) -> _RuleRuntime:
    condition = rule.condition
    if condition.match is not None:
        return _MatchRuntime(rule, condition.match, limits)
    if condition.threshold is not None:
        return _ThresholdRuntime(rule, condition.threshold, limits)
    if condition.absence is not None:
        return _AbsenceRuntime(rule, condition.absence, limits)
    if condition.change is not None:
        return _ChangeRuntime(rule, condition.change, limits)
    if condition.new_entity is not None:
        return _NewEntityRuntime(rule, condition.new_entity, limits, is_registered)
    assert condition.ratio is not None
    return _RatioRuntime(rule, condition.ratio, limits)


def compile_rule(rule: Rule) -> None:
    """Build ``rule``'s runtime exactly as the engine will; raises what the engine would.

    ``rules check`` calls this, so a rule the collector would refuse at start fails the
    check instead of passing it.
    """
    _runtime_for(rule, EngineLimits(), None)


class RuleEngine:
    """Evaluates a validated rule pack; not thread-safe (one ingest loop owns it)."""

    def __init__(
        self,
        pack: RulePack,
        *,
        is_registered: IsRegistered | None = None,
        clock: Clock | None = None,
        limits: EngineLimits | None = None,
    ) -> None:
        self._limits = limits or EngineLimits()
        self._is_registered = is_registered
        self._clock: Clock = clock or (lambda: datetime.now(UTC))
        self._devices: _Bounded[SubjectKey, DeviceRecord] = _Bounded(self._limits.max_devices)
        # What the newest sweep said about each discovered host: the register's verdicts
        # (process_asset_changes) carry only MAC and IP, the alert also wants vendor and name.
        self._hosts: _Bounded[tuple[str, str], tuple[DiscoveredHost, Evidence]] = _Bounded(
            self._limits.max_devices
        )
        self._runtimes: list[_RuleRuntime] = []
        self._by_kind: dict[str, list[_RuleRuntime]] = {}
        self.messages_processed = 0
        self._install(
            [_runtime_for(loaded.rule, self._limits, is_registered) for loaded in pack.rules]
        )

    def _install(self, runtimes: list[_RuleRuntime]) -> None:
        self._runtimes = runtimes
        by_kind: dict[str, list[_RuleRuntime]] = {}
        every_kind = [runtime for runtime in runtimes if runtime.kinds is None]
        from campuswatch.wire.messages import KIND_TYPES

        for kind in KIND_TYPES:
            by_kind[kind] = [
                runtime
                for runtime in runtimes
                if runtime.kinds is not None and kind in runtime.kinds
            ] + every_kind
        self._by_kind = by_kind

    @property
    def rule_ids(self) -> tuple[str, ...]:
        return tuple(runtime.rule.id for runtime in self._runtimes)

    def process(self, decoded: DecodedMessage) -> list[AlertSignal]:
        """Evaluate one validated message; the transitions it caused (usually none)."""
        message = decoded.message
        kind = decoded.topic.kind
        at_s = decoded.received_at.timestamp()
        self.messages_processed += 1
        record = self._observe(message, kind, at_s)
        out: list[AlertSignal] = []
        for runtime in self._by_kind.get(kind, ()):
            if runtime.device_types and record.device_type not in runtime.device_types:
                continue
            runtime.on_message(decoded, record, at_s, out)
        self._add_device_identity(out)
        return out

    def _add_device_identity(self, signals: list[AlertSignal]) -> None:
        """Host name and address of the device an alert is about, as labels.

        The alert manager turns the ``hostname`` / ``ip`` labels into the notification's
        fields, which the forwarders map to CEF ``shost``/``src``, ECS ``host.*`` and OCSF
        ``device.*``. A rule's own value (a discovered host's IP) wins.
        """
        for signal in signals:
            if signal.device_id is None:
                continue
            record = self._devices.get((signal.site_id, signal.device_id))
            if record is None:
                continue
            if record.ip and not signal.labels.get("ip"):
                signal.labels["ip"] = record.ip
            if record.hostname and not signal.labels.get("hostname"):
                signal.labels["hostname"] = record.hostname

    def _observe(self, message: Message, kind: str, at_s: float) -> DeviceRecord:
        key = (message.site, message.device_id)
        devices = self._devices
        record = devices.get(key)
        if record is None:
            record = DeviceRecord()
            devices.put(key, record)
        else:
            devices.move_to_end(key)
        device_type = getattr(message, "device_type", None)
        if device_type is not None:
            record.device_type = device_type
        if isinstance(message, StateMessage):
            record.offline = message.status == "offline"
        elif record.offline:
            record.offline = False  # anything but a state message proves it is up again
        if isinstance(message, InventoryMessage):
            record.hostname = message.hostname or record.hostname
            record.ip = _primary_address(message) or record.ip
        elif isinstance(message, DiscoveryMessage):
            for host in message.hosts:
                if host.mac is not None:
                    seen = Evidence(message.id, kind, message.ts, _host_excerpt(host))
                    self._hosts.put((message.site, host.mac), (host, seen))
        record.last_seen[kind] = at_s
        record.last_ref[kind] = (message.id, message.ts)
        record.last_any = max(record.last_any, at_s)
        return record

    def restore(
        self,
        latest: Iterable[DecodedMessage],
        open_alerts: Iterable[tuple[str, str, str | None]],
        now: datetime | None = None,
    ) -> None:
        """Warm start after a restart, from what the register kept; emits nothing.

        ``latest``: each device's newest message of each kind, as stored. They rebuild
        what absence rules time from (when each device last sent each kind) and the last
        values change and ratio rules compare with, so a PC silent since before the
        restart still raises "agent silent" and an antivirus switched off just after it
        still counts as a change. ``open_alerts``: (rule id, site, entity) of alerts open in
        the register; those rules treat them as firing again, so the alerts resolve when
        their condition clears instead of staying open with nothing left to clear them.

        ``for:`` timers of match rules come back too: the stored message starts them at
        the time it was received, so a projector whose will arrived shortly before the
        restart still raises "device offline" when its 10 minutes are up (the broker's
        redelivered retained will is a duplicate and never reaches the engine again).

        Not restored: threshold windows (they refill within their window).
        """
        replayed: list[_RuleRuntime] = [
            runtime
            for runtime in self._runtimes
            if isinstance(runtime, _ChangeRuntime | _RatioRuntime)
            # Only timed match rules: an instant one would fire on the replay, and its
            # alerts, if still open, come back below anyway.
            or (isinstance(runtime, _MatchRuntime) and runtime.for_s > 0)
        ]
        discarded: list[AlertSignal] = []
        for decoded in sorted(latest, key=lambda item: item.received_at):
            kind = decoded.topic.kind
            at_s = decoded.received_at.timestamp()
            record = self._observe(decoded.message, kind, at_s)
            for runtime in replayed:
                if runtime.kinds is not None and kind not in runtime.kinds:
                    continue
                if runtime.device_types and record.device_type not in runtime.device_types:
                    continue
                runtime.on_message(decoded, record, at_s, discarded)
        now_s = (now or self._clock()).timestamp()
        by_id = {runtime.rule.id: runtime for runtime in self._runtimes}
        for rule_id, site, entity in open_alerts:
            owner = by_id.get(rule_id)
            if owner is None:
                continue  # a rule removed while the collector was down; left to people
            key: SubjectKey = (site, entity)
            alert = owner.alerts.get(key)
            if alert is None:
                alert = _Alert()
                owner.alerts.put(key, alert)
            alert.firing = True
            alert.pending_since = None
            alert.last_active = now_s
            owner.pending.discard(key)
            owner.firing.add(key)
        for each in self._runtimes:
            each._prune_sets()  # restored alerts may have pushed older ones out of a bound
            if isinstance(each, _AbsenceRuntime):
                # The restored devices sent nothing through this engine that would have
                # timed their silence (a partition taken over while running): the next
                # tick looks at every device again.
                each.look_at_all_devices()

    def take_repeats(
        self, subjects: Iterable[tuple[str, str, str | None]] | None = None
    ) -> list[AlertSignal]:
        """Triggers of firing subjects since the last call, one signal per subject with
        ``occurrences`` = their count: all of them, or those of ``subjects`` (rule id,
        site, entity as labelled on the signal; None for a site-wide alert).

        The caller takes them at its own pace (the collector: every housekeeping tick, and
        for subjects that resolve, just before the resolution) so an alert that keeps
        firing costs no database work per message."""
        out: list[AlertSignal] = []
        wanted: dict[str, set[SubjectKey]] | None = None
        if subjects is not None:
            wanted = {}
            for rule_id, site_id, entity in subjects:
                wanted.setdefault(rule_id, set()).add((site_id, entity))
        for runtime in self._runtimes:
            if wanted is None:
                runtime.take_repeats(out)
            elif runtime.rule.id in wanted:
                runtime.take_repeats(out, wanted[runtime.rule.id])
        self._add_device_identity(out)
        return out

    def forget(self, rule_id: str, site_id: str, entity: str | None) -> bool:
        """Drop what the engine holds about one subject's alert (resolved by a person while
        its condition still holds), so the next trigger fires it again; True if it was
        firing here."""
        for runtime in self._runtimes:
            if runtime.rule.id != rule_id:
                continue
            key: SubjectKey = (site_id, entity)
            alert = runtime.alerts.get(key)
            if alert is None or not alert.firing:
                return False
            runtime._forget(key)
            return True
        return False

    def forget_sites(self, sites: Collection[str]) -> None:
        """Drop everything held about devices and subjects of ``sites``, emitting nothing:
        another collector runs them now (docs/scale.md#ownership), and state left here would
        time out as silence or keep stale alerts firing."""
        wanted = frozenset(sites)
        for runtime in self._runtimes:
            runtime.forget_sites(wanted)
        for device in [key for key in self._devices if key[0] in wanted]:
            del self._devices[device]
        for host in [key for key in self._hosts if key[0] in wanted]:
            del self._hosts[host]

    def evaluate_tick(self, now: datetime | None = None) -> list[AlertSignal]:
        """Time-driven work: absence, ratio, expiring windows, ``for:`` and auto-resolve."""
        now_s = (now or self._clock()).timestamp()
        out: list[AlertSignal] = []
        for runtime in self._runtimes:
            runtime.tick(now_s, self._devices, out)
        self._add_device_identity(out)
        return out

    def process_asset_changes(
        self, site_id: str, changes: Iterable[AssetChange], at: datetime
    ) -> list[AlertSignal]:
        """The register's verdicts (``apply_message`` results) for ``new_entity`` rules.

        Use this when the engine has no ``is_registered`` callback: the register already
        decided which discovered hosts are unknown, so the engine need not ask again.
        """
        at_s = at.timestamp()
        out: list[AlertSignal] = []
        hosts = [runtime for runtime in self._runtimes if isinstance(runtime, _NewEntityRuntime)]
        for change in changes:
            if change.mac is None:
                continue
            sighting = self._hosts.get((site_id, change.mac))
            values: dict[str, object] = {"mac": change.mac, "ip": change.ip or ""}
            evidence: tuple[Evidence, ...] = ()
            if sighting is not None:
                host, seen = sighting
                values = {**_host_excerpt(host), **{k: v for k, v in values.items() if v}}
                evidence = (seen,)
            else:
                values.update(vendor="", hostname="")
            for runtime in hosts:
                if runtime.entity != "discovered_host":
                    continue
                if change.unknown_device:
                    runtime.observe(site_id, f"mac:{change.mac}", True, at_s, out, evidence, values)
                elif change.registered or change.ignored:
                    runtime.observe(site_id, f"mac:{change.mac}", False, at_s, out, (), values)
        return out

    def replace_pack(self, pack: RulePack) -> list[AlertSignal]:
        """Hot reload. Rules whose logic is unchanged keep their state (only prose changed);
        removed or changed rules resolve their open alerts, which would otherwise stay open
        forever with nothing left to clear them."""
        now_s = self._clock().timestamp()
        old = {runtime.rule.id: runtime for runtime in self._runtimes}
        out: list[AlertSignal] = []
        runtimes: list[_RuleRuntime] = []
        for loaded in pack.rules:
            previous = old.pop(loaded.rule.id, None)
            if previous is not None and previous.rule.state_key() == loaded.rule.state_key():
                previous.rule = loaded.rule
                runtimes.append(previous)
                continue
            if previous is not None:
                out.extend(previous.resolve_all(now_s))
            runtimes.append(_runtime_for(loaded.rule, self._limits, self._is_registered))
        for removed in old.values():
            out.extend(removed.resolve_all(now_s))
        self._install(runtimes)
        self._add_device_identity(out)
        return out

    def stats(self) -> dict[str, int]:
        """Sizes and drop counters for /metrics (campuswatch_rules_*)."""
        return {
            "messages_processed": self.messages_processed,
            "devices_tracked": len(self._devices),
            "devices_evicted": self._devices.evicted,
            "alert_states": sum(len(runtime.alerts) for runtime in self._runtimes),
            "alerts_firing": sum(len(runtime.firing) for runtime in self._runtimes),
            "subjects_evicted": sum(runtime.alerts.evicted for runtime in self._runtimes),
            "window_samples_dropped": sum(
                runtime.dropped_samples
                for runtime in self._runtimes
                if isinstance(runtime, _ThresholdRuntime)
            ),
        }
