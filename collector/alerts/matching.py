"""Label matching for silences and inhibition rules.

An alert is matched on its labels plus the built-in ``rule_id``, ``site_id``,
``device_id``, ``level`` and ``fingerprint``; the pseudo-label ``tag`` matches against
the alert's tags (``tag = x``: some tag is x; ``tag != x``: none is). Regular expressions
are anchored at both ends, as in Alertmanager, so ``school-1`` does not match ``school-10``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final

from campuswatch.collector.alerts.models import MATCHER_OPS, Alert
from campuswatch.collector.alerts.policy import InhibitionRule

TAG_LABEL: Final = "tag"
MAX_MATCHERS: Final = 32
MAX_MATCHER_TEXT: Final = 512


class MatcherError(ValueError):
    """A silence matcher that cannot be used; the message says which and why."""


@dataclass(frozen=True, slots=True)
class Matcher:
    label: str
    op: str
    value: str

    def as_dict(self) -> dict[str, str]:
        return {"label": self.label, "op": self.op, "value": self.value}


def alert_labels(alert: Alert) -> dict[str, str]:
    labels = {str(key): str(value) for key, value in (alert.labels or {}).items()}
    labels.update(
        rule_id=alert.rule_id,
        site_id=alert.site_id,
        device_id=alert.device_id or "",
        level=alert.level,
        fingerprint=alert.fingerprint,
    )
    return labels


def parse_matchers(raw: object) -> list[Matcher]:
    """Validated matchers from API input; all problems are reported together."""
    if not isinstance(raw, Sequence) or isinstance(raw, str | bytes):
        raise MatcherError("matchers must be a list of {label, op, value}")
    if not raw:
        # An empty list would match every alert: a silence for everything is never intended.
        raise MatcherError("at least one matcher is needed")
    if len(raw) > MAX_MATCHERS:
        raise MatcherError(f"at most {MAX_MATCHERS} matchers")
    matchers: list[Matcher] = []
    problems: list[str] = []
    for index, item in enumerate(raw):
        if not isinstance(item, Mapping):
            problems.append(f"matcher {index}: not an object")
            continue
        label, op, value = item.get("label"), item.get("op", "="), item.get("value")
        if not isinstance(label, str) or not label.strip():
            problems.append(f"matcher {index}: label must be a non-empty string")
            continue
        if op not in MATCHER_OPS:
            problems.append(f"matcher {index}: op must be one of {', '.join(MATCHER_OPS)}")
            continue
        if not isinstance(value, str) or len(value) > MAX_MATCHER_TEXT:
            problems.append(f"matcher {index}: value must be a string of <= {MAX_MATCHER_TEXT}")
            continue
        if op in ("=~", "!~"):
            try:
                re.compile(value)
            except re.error as exc:
                problems.append(f"matcher {index}: invalid regular expression: {exc}")
                continue
        matchers.append(Matcher(label.strip(), str(op), value))
    if problems:
        raise MatcherError("; ".join(problems))
    return matchers


def _test(op: str, pattern: str, candidate: str) -> bool:
    if op in ("=", "!="):
        return candidate == pattern
    return re.fullmatch(pattern, candidate) is not None


def matcher_matches(matcher: Matcher, labels: Mapping[str, str], tags: Iterable[str]) -> bool:
    positive = matcher.op in ("=", "=~")
    if matcher.label == TAG_LABEL:
        hit = any(_test(matcher.op, matcher.value, tag) for tag in tags)
    else:
        # A missing label reads as "", so ``device_id = ""`` selects site-wide alerts.
        hit = _test(matcher.op, matcher.value, labels.get(matcher.label, ""))
    return hit if positive else not hit


def stored_matchers(raw: object) -> list[Matcher]:
    """Matchers read back from the database; a damaged row matches nothing, never crashes."""
    try:
        return parse_matchers(raw)
    except MatcherError:
        return []


def silence_matches(matchers: Sequence[Matcher], alert: Alert) -> bool:
    if not matchers:
        return False
    labels = alert_labels(alert)
    tags = alert.tags or []
    return all(matcher_matches(matcher, labels, tags) for matcher in matchers)


def _equality_match(match: Mapping[str, str], labels: Mapping[str, str], tags: list[str]) -> bool:
    for label, value in match.items():
        if label == TAG_LABEL:
            if value not in tags:
                return False
        elif labels.get(label) != value:
            return False
    return True


def inhibition_involves(rules: Sequence[InhibitionRule], alert: Alert) -> bool:
    """Whether some rule's source or target matchers match ``alert``: only then can its
    opening, closing or change alter which alerts are inhibited."""
    labels = alert_labels(alert)
    tags = list(alert.tags or [])
    return any(
        _equality_match(rule.source_match, labels, tags)
        or _equality_match(rule.target_match, labels, tags)
        for rule in rules
    )


def inhibitors(rules: Sequence[InhibitionRule], open_alerts: Sequence[Alert]) -> dict[int, int]:
    """Alert id → id of the open alert that inhibits it, for every inhibited alert.

    The oldest matching source wins, so the answer is stable between evaluations. An alert
    never inhibits itself, and an inhibited source still inhibits: the uplink alert muted by
    a wider outage still explains its school's offline devices.
    """
    result: dict[int, int] = {}
    views = [(alert, alert_labels(alert), list(alert.tags or [])) for alert in open_alerts]
    for rule in rules:
        sources: dict[tuple[str, ...], int] = {}
        for alert, labels, tags in views:
            if _equality_match(rule.source_match, labels, tags):
                key = tuple(labels.get(name, "") for name in rule.equal)
                if key not in sources or alert.id < sources[key]:
                    sources[key] = alert.id
        if not sources:
            continue
        for alert, labels, tags in views:
            if alert.id in result or not _equality_match(rule.target_match, labels, tags):
                continue
            source_id = sources.get(tuple(labels.get(name, "") for name in rule.equal))
            if source_id is not None and source_id != alert.id:
                result[alert.id] = source_id
    return result
