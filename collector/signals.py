"""The types that connect the rules engine, the alert lifecycle and the SOC forwarders.

rules (evaluate messages) --AlertSignal--> alerts (dedup, silence, inhibit, ack, escalate)
    --AlertNotification--> outbox --> syslog CEF / JSON webhook (ECS, OCSF) / MQTT

Kept in one small module so each side can be built and tested without the others.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Literal

Level = Literal["info", "low", "medium", "high", "critical"]
LEVELS: tuple[Level, ...] = ("info", "low", "medium", "high", "critical")
# CEF severity 0–10 and syslog severity for each level (RFC 5424: 2 crit … 6 info).
CEF_SEVERITY: dict[Level, int] = {"info": 1, "low": 3, "medium": 5, "high": 8, "critical": 10}
SYSLOG_SEVERITY: dict[Level, int] = {"info": 6, "low": 5, "medium": 4, "high": 3, "critical": 2}
TEXT_LANGUAGES: tuple[str, ...] = ("vi", "en")
TextPart = Literal["title", "summary", "description"]
AlertTexts = dict[str, dict[str, str]]
"""language → {"title", "summary", "description"}: an alert's prose in every language, rendered
when it fired, so each reader (UI user, report, SOC destination) gets it in theirs."""


def text_in(texts: AlertTexts, language: str, part: TextPart, fallback: str) -> str:
    """``part`` of an alert in ``language``; ``fallback`` (the English text) when the alert
    predates two-language rules or the language is not one the rules are written in."""
    return texts.get(language, {}).get(part) or fallback


def bounded_texts(texts: object, max_chars: int) -> AlertTexts:
    """Only the known languages and parts, as bounded text (a signal is not trusted input)."""
    if not isinstance(texts, dict):
        return {}
    kept: AlertTexts = {}
    for language in TEXT_LANGUAGES:
        parts = texts.get(language)
        if isinstance(parts, dict):
            kept[language] = {
                part: str(parts[part])[:max_chars]
                for part in ("title", "summary", "description")
                if parts.get(part) is not None
            }
    return kept


@dataclass(frozen=True, slots=True)
class Evidence:
    """A message that made a rule fire, small enough to store with the alert."""

    message_id: str
    kind: str
    ts: datetime
    excerpt: dict[str, object]


@dataclass(frozen=True, slots=True)
class AlertSignal:
    """What the rules engine says about one (rule, subject) at one moment.

    ``fingerprint`` identifies the subject of the alert (rule id + site + device or other
    entity); the same fingerprint firing again updates the existing alert, never a new one.
    ``occurrences``: how many triggers a firing signal stands for. The engine emits a
    transition once and folds later triggers of a firing subject into one signal with
    their count and the newest evidence (``RuleEngine.take_repeats``).
    """

    rule_id: str
    rule_title: str
    level: Level
    status: Literal["firing", "resolved"]
    fingerprint: str
    site_id: str
    device_id: str | None
    summary: str
    at: datetime
    labels: dict[str, str] = field(default_factory=dict)
    tags: tuple[str, ...] = ()
    description: str = ""
    runbook_en: str = ""
    runbook_vi: str = ""
    evidence: tuple[Evidence, ...] = ()
    occurrences: int = 1
    texts: AlertTexts = field(default_factory=dict)
    """``rule_title``, ``summary`` and ``description`` (English) in every language."""


AlertEventType = Literal[
    "opened", "updated", "repeated", "escalated", "acknowledged", "resolved", "reopened"
]


@dataclass(frozen=True, slots=True)
class AlertNotification:
    """One alert event as it leaves for the SOC; forwarders render it as CEF / ECS / OCSF."""

    alert_id: int
    event: AlertEventType
    event_id: str
    """Unique per notification (UUIDv7), so a SIEM can drop redelivered duplicates."""
    fingerprint: str
    rule_id: str
    rule_title: str
    level: Level
    state: Literal["firing", "acknowledged", "resolved", "silenced"]
    site_id: str
    summary: str
    at: datetime
    first_seen: datetime
    last_seen: datetime
    occurrences: int
    school_id: str | None = None
    district_id: str | None = None
    province_id: str | None = None
    device_id: str | None = None
    hostname: str | None = None
    ip: str | None = None
    mac: str | None = None
    tags: tuple[str, ...] = ()
    labels: dict[str, str] = field(default_factory=dict)
    description: str = ""
    runbook_en: str = ""
    runbook_vi: str = ""
    actor: str | None = None
    note: str | None = None
    collector_id: str = "collector"
    url: str | None = None
    texts: AlertTexts = field(default_factory=dict)
    """The title, summary and description in every language (each destination picks one)."""


def notification_in(n: AlertNotification, language: str) -> AlertNotification:
    """``n`` with its title, summary and description in ``language`` (a destination's)."""
    return replace(
        n,
        rule_title=text_in(n.texts, language, "title", n.rule_title),
        summary=text_in(n.texts, language, "summary", n.summary),
        description=text_in(n.texts, language, "description", n.description),
    )
