"""Alert tables: alerts, their evidence and audit trail, and silences.

They live on the register's declarative ``Base`` so one Alembic history and one database
hold assets and alerts together (an alert names a site and device of that register).
``site_id`` / ``device_id`` are deliberately not foreign keys: an alert is a historical
record and must survive a site being merged or a device being removed from the register.
"""

from __future__ import annotations

import unicodedata
from datetime import datetime
from typing import Any, Final

from sqlalchemy import (
    JSON,
    Boolean,
    CheckConstraint,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    event,
    text,
)
from sqlalchemy.orm import Mapped, Mapper, mapped_column

from campuswatch.collector.db.models import Base, utc_now
from campuswatch.collector.signals import LEVELS

ALERT_STATES: Final = ("firing", "acknowledged", "resolved")
AUDIT_ACTIONS: Final = (
    "opened",
    "updated",
    "acknowledged",
    "unacknowledged",
    "resolved",
    "reopened",
    "silenced",
    "unsilenced",
    "inhibited",
    "uninhibited",
    "escalated",
    "notified",
    "commented",
)
MATCHER_OPS: Final = ("=", "!=", "=~", "!~")
SYSTEM_ACTOR: Final = "system"
# Shared by the model and migration 0002: the partial index must read the same on both.
OPEN_ALERT_CONDITION: Final = "state <> 'resolved'"

FINGERPRINT_LENGTH: Final = 256
RULE_ID_LENGTH: Final = 128
TITLE_LENGTH: Final = 512
SITE_ID_LENGTH: Final = 64
DEVICE_ID_LENGTH: Final = 64
ACTOR_LENGTH: Final = 128
GROUP_KEY_LENGTH: Final = SITE_ID_LENGTH + 1 + RULE_ID_LENGTH


def _in_list(column: str, values: tuple[str, ...]) -> str:
    quoted = ", ".join(f"'{value}'" for value in values)
    return f"{column} IN ({quoted})"


class Silence(Base):
    """Mutes notifications of alerts whose labels match every matcher, for a time window."""

    __tablename__ = "silences"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    # [{"label": "site_id", "op": "=", "value": "school-1"}, ...]
    matchers: Mapped[list[dict[str, str]]] = mapped_column(JSON)
    starts_at: Mapped[datetime] = mapped_column()
    ends_at: Mapped[datetime] = mapped_column(index=True)
    created_by: Mapped[str] = mapped_column(String(ACTOR_LENGTH))
    created_at: Mapped[datetime] = mapped_column(default=utc_now)
    comment: Mapped[str] = mapped_column(Text, default="")
    # Set when the silence ended: by its own end time (by "system") or removed early by a person.
    expired_at: Mapped[datetime | None] = mapped_column()
    expired_by: Mapped[str | None] = mapped_column(String(ACTOR_LENGTH))


class Alert(Base):
    """One problem of one subject (fingerprint), from first firing to resolution."""

    __tablename__ = "alerts"
    __table_args__ = (
        CheckConstraint(_in_list("state", ALERT_STATES), name="state"),
        CheckConstraint(_in_list("level", LEVELS), name="level"),
        # One open alert per fingerprint, even with several collectors writing at once.
        Index(
            "ux_alerts_open_fingerprint",
            "fingerprint",
            unique=True,
            sqlite_where=text(OPEN_ALERT_CONDITION),
            postgresql_where=text(OPEN_ALERT_CONDITION),
        ),
        # A batch's latest alert of each fingerprint (``manager.latest_alerts_query``).
        Index("ix_alerts_fingerprint_id", "fingerprint", "id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    fingerprint: Mapped[str] = mapped_column(String(FINGERPRINT_LENGTH))
    rule_id: Mapped[str] = mapped_column(String(RULE_ID_LENGTH), index=True)
    rule_title: Mapped[str] = mapped_column(String(TITLE_LENGTH))
    level: Mapped[str] = mapped_column(String(16))
    state: Mapped[str] = mapped_column(String(16), index=True)
    silenced: Mapped[bool] = mapped_column(Boolean, default=False)
    silence_id: Mapped[int | None] = mapped_column(
        ForeignKey("silences.id", ondelete="SET NULL"), index=True
    )
    inhibited: Mapped[bool] = mapped_column(Boolean, default=False)
    inhibited_by: Mapped[int | None] = mapped_column(
        ForeignKey("alerts.id", ondelete="SET NULL"), index=True
    )
    site_id: Mapped[str] = mapped_column(String(SITE_ID_LENGTH), index=True)
    device_id: Mapped[str | None] = mapped_column(String(DEVICE_ID_LENGTH), index=True)
    summary: Mapped[str] = mapped_column(Text, default="")
    description: Mapped[str] = mapped_column(Text, default="")
    labels: Mapped[dict[str, Any]] = mapped_column(default=dict)
    tags: Mapped[list[str]] = mapped_column(default=list)
    runbook_en: Mapped[str] = mapped_column(Text, default="")
    runbook_vi: Mapped[str] = mapped_column(Text, default="")
    # language → {title, summary, description}; the columns above hold the English ones.
    texts: Mapped[dict[str, Any]] = mapped_column(default=dict, server_default=text("'{}'"))
    # What the alert list's search looks in: every language's title and summary, the device
    # and fingerprint, folded (``fold_for_search``); kept by an ORM hook on every write.
    search_text: Mapped[str] = mapped_column(Text, default="", server_default="")
    first_seen: Mapped[datetime] = mapped_column()
    last_seen: Mapped[datetime] = mapped_column(index=True)
    # Start of the current episode; a reopen inside the flap window keeps it, so a flapping
    # problem still escalates.
    opened_at: Mapped[datetime] = mapped_column()
    occurrences: Mapped[int] = mapped_column(Integer, default=1)
    acknowledged_by: Mapped[str | None] = mapped_column(String(ACTOR_LENGTH))
    acknowledged_at: Mapped[datetime | None] = mapped_column()
    # resolved_by NULL with resolved_at set means the rule itself cleared the alert.
    resolved_by: Mapped[str | None] = mapped_column(String(ACTOR_LENGTH))
    resolved_at: Mapped[datetime | None] = mapped_column()
    escalation_step: Mapped[int] = mapped_column(Integer, default=0)
    # NULL until the SOC has been told about this alert by itself (not only as a group member).
    last_notified_at: Mapped[datetime | None] = mapped_column()
    # When the alert became due for a first notification (opened, unsilenced, uninhibited).
    pending_since: Mapped[datetime | None] = mapped_column()
    # When this alert, as its group's representative, last reported the group's members.
    group_reported_at: Mapped[datetime | None] = mapped_column()
    group_key: Mapped[str] = mapped_column(String(GROUP_KEY_LENGTH), index=True)


class AlertEvidence(Base):
    """A message that made the alert fire; only the newest few per alert are kept."""

    __tablename__ = "alert_evidence"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    alert_id: Mapped[int] = mapped_column(ForeignKey("alerts.id", ondelete="CASCADE"), index=True)
    message_id: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(32))
    ts: Mapped[datetime] = mapped_column()
    excerpt: Mapped[dict[str, Any]] = mapped_column(default=dict)


class AlertAudit(Base):
    """Who did what to an alert and when: the incident-response record."""

    __tablename__ = "alert_audit"
    __table_args__ = (CheckConstraint(_in_list("action", AUDIT_ACTIONS), name="action"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    alert_id: Mapped[int] = mapped_column(ForeignKey("alerts.id", ondelete="CASCADE"), index=True)
    at: Mapped[datetime] = mapped_column()
    action: Mapped[str] = mapped_column(String(24))
    actor: Mapped[str] = mapped_column(String(ACTOR_LENGTH))
    note: Mapped[str | None] = mapped_column(Text)
    from_state: Mapped[str | None] = mapped_column(String(16))
    to_state: Mapped[str | None] = mapped_column(String(16))


def fold_for_search(text: str) -> str:
    """Lower case without accents (``Chữ ký`` → ``chu ky``), as people type a search: the
    same on SQLite, whose ``lower()`` knows only ASCII, and on PostgreSQL in any locale."""
    decomposed = unicodedata.normalize("NFD", text.replace("đ", "d").replace("Đ", "D"))
    return "".join(char for char in decomposed if not unicodedata.combining(char)).casefold()


def alert_search_text(
    summary: str | None,
    rule_title: str | None,
    device_id: str | None,
    fingerprint: str | None,
    texts: object,
) -> str:
    parts: list[str] = [summary or "", rule_title or "", device_id or "", fingerprint or ""]
    if isinstance(texts, dict):
        for language in sorted(texts):
            prose = texts[language]
            if isinstance(prose, dict):
                parts.extend(str(prose.get(part) or "") for part in ("title", "summary"))
    return fold_for_search("\n".join(part for part in parts if part))


@event.listens_for(Alert, "before_insert")
@event.listens_for(Alert, "before_update")
def _keep_search_text(_mapper: Mapper[Alert], _connection: object, alert: Alert) -> None:
    alert.search_text = alert_search_text(
        alert.summary, alert.rule_title, alert.device_id, alert.fingerprint, alert.texts
    )
