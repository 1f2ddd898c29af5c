"""Read-only questions the API and UI ask about alerts, groups and silences.

Every function takes the caller's Session (the API request owns it) and never writes.
``site_ids`` is the caller's scope (from ``site_subtree_ids``): None means every site, an
empty list means none, so a scoping mistake shows nothing rather than everything.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime
from typing import Final, Literal

from sqlalchemy import case, false, func, select
from sqlalchemy.orm import Session

from campuswatch.collector.alerts.models import (
    Alert,
    AlertAudit,
    AlertEvidence,
    Silence,
    fold_for_search,
)
from campuswatch.collector.signals import LEVELS

MAX_PAGE_SIZE: Final = 500
OPEN_STATES: Final = ("firing", "acknowledged")


class AlertNotFound(LookupError):
    pass


@dataclass(frozen=True, slots=True)
class AlertDetail:
    alert: Alert
    evidence: list[AlertEvidence]
    audit: list[AlertAudit]
    silence: Silence | None


@dataclass(frozen=True, slots=True)
class AlertGroup:
    """Open alerts of one rule at one site, as the UI lists them."""

    group_key: str
    site_id: str
    rule_id: str
    rule_title: str
    level: str
    """The highest level among the group's open alerts."""
    open: int
    firing: int
    acknowledged: int
    silenced: int
    inhibited: int
    first_seen: datetime
    last_seen: datetime


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _as_list(value: str | Collection[str] | None) -> list[str] | None:
    if value is None:
        return None
    if isinstance(value, str):
        return [value]
    return list(value)


def list_alerts(
    session: Session,
    *,
    state: str | Collection[str] | None = None,
    level: str | Collection[str] | None = None,
    site_ids: Collection[str] | None = None,
    rule_id: str | None = None,
    device_id: str | None = None,
    search: str | None = None,
    since: datetime | None = None,
    page: int = 1,
    page_size: int = 50,
    order: Literal["recent", "severity"] = "recent",
) -> tuple[list[Alert], int]:
    """One page of alerts, newest activity first, and the total matching the filters.

    ``order="severity"`` is the SOC's work order: most severe first and, within a level,
    the longest-waiting (oldest ``opened_at``) first, so nothing severe ages at the bottom.

    ``state`` takes ``firing`` / ``acknowledged`` / ``resolved`` or ``open`` (both unresolved
    states); ``since`` keeps alerts seen at or after that time; ``search`` looks for the
    text (case-insensitive) in the summary, rule title, device id and fingerprint.
    """
    query = select(Alert)
    states = _as_list(state)
    if states is not None:
        expanded = {
            item for name in states for item in (OPEN_STATES if name == "open" else (name,))
        }
        query = query.where(Alert.state.in_(sorted(expanded)))
    levels = _as_list(level)
    if levels is not None:
        query = query.where(Alert.level.in_(levels))
    if site_ids is not None:
        scope = list(site_ids)
        query = query.where(Alert.site_id.in_(scope) if scope else false())
    if rule_id is not None:
        query = query.where(Alert.rule_id == rule_id)
    if device_id is not None:
        query = query.where(Alert.device_id == device_id)
    if since is not None:
        query = query.where(Alert.last_seen >= since)
    if search and search.strip():
        pattern = f"%{_escape_like(fold_for_search(search.strip()))}%"
        query = query.where(Alert.search_text.like(pattern, escape="\\"))
    total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
    size = min(max(page_size, 1), MAX_PAGE_SIZE)
    offset = (max(page, 1) - 1) * size
    if order == "severity":
        rank = case({level: index for index, level in enumerate(LEVELS)}, value=Alert.level)
        query = query.order_by(rank.desc(), Alert.opened_at.asc(), Alert.id.asc())
    else:
        query = query.order_by(Alert.last_seen.desc(), Alert.id.desc())
    rows = session.scalars(query.offset(offset).limit(size))
    return list(rows), total


def get_alert(session: Session, alert_id: int) -> AlertDetail:
    alert = session.get(Alert, alert_id)
    if alert is None:
        raise AlertNotFound(f"alert {alert_id} does not exist")
    evidence = session.scalars(
        select(AlertEvidence)
        .where(AlertEvidence.alert_id == alert_id)
        .order_by(AlertEvidence.ts.desc(), AlertEvidence.id.desc())
    )
    audit = session.scalars(
        select(AlertAudit).where(AlertAudit.alert_id == alert_id).order_by(AlertAudit.id)
    )
    silence = session.get(Silence, alert.silence_id) if alert.silence_id is not None else None
    return AlertDetail(alert, list(evidence), list(audit), silence)


def list_silences(session: Session, *, now: datetime, active_only: bool = True) -> list[Silence]:
    """Silences newest first; ``active_only`` keeps those muting (or about to mute) alerts."""
    query = select(Silence)
    if active_only:
        query = query.where(Silence.expired_at.is_(None), Silence.ends_at > now)
    return list(session.scalars(query.order_by(Silence.id.desc())))


def active_silences(session: Session, now: datetime) -> list[Silence]:
    return list(
        session.scalars(
            select(Silence)
            .where(
                Silence.expired_at.is_(None),
                Silence.starts_at <= now,
                Silence.ends_at > now,
            )
            .order_by(Silence.id)
        )
    )


def list_groups(session: Session, *, site_ids: Collection[str] | None = None) -> list[AlertGroup]:
    """Open alerts grouped by site and rule, largest groups first."""
    query = select(
        Alert.group_key,
        Alert.site_id,
        Alert.rule_id,
        Alert.state,
        Alert.level,
        Alert.silenced,
        Alert.inhibited,
        func.count(),
        func.min(Alert.first_seen),
        func.max(Alert.last_seen),
        func.max(Alert.rule_title),
    ).where(Alert.state.in_(OPEN_STATES))
    if site_ids is not None:
        scope = list(site_ids)
        query = query.where(Alert.site_id.in_(scope) if scope else false())
    query = query.group_by(
        Alert.group_key, Alert.site_id, Alert.rule_id, Alert.state, Alert.level,
        Alert.silenced, Alert.inhibited,
    )  # fmt: skip
    totals: dict[str, _GroupTotals] = {}
    for row in session.execute(query):
        key, site_id, rule_id, state, level, silenced, inhibited, count = row[:8]
        first_seen, last_seen, title = row[8], row[9], row[10]
        group = totals.get(key)
        if group is None:
            group = totals[key] = _GroupTotals(
                site_id, rule_id, title, level, first_seen=first_seen, last_seen=last_seen
            )
        group.open += count
        if state == "firing":
            group.firing += count
        else:
            group.acknowledged += count
        group.silenced += count if silenced else 0
        group.inhibited += count if inhibited else 0
        if _rank(level) > _rank(group.level):
            group.level = level
        group.first_seen = min(group.first_seen, first_seen)
        group.last_seen = max(group.last_seen, last_seen)
    groups = [
        AlertGroup(
            group_key=key,
            site_id=totals_.site_id,
            rule_id=totals_.rule_id,
            rule_title=totals_.rule_title,
            level=totals_.level,
            open=totals_.open,
            firing=totals_.firing,
            acknowledged=totals_.acknowledged,
            silenced=totals_.silenced,
            inhibited=totals_.inhibited,
            first_seen=totals_.first_seen,
            last_seen=totals_.last_seen,
        )
        for key, totals_ in totals.items()
    ]
    groups.sort(key=lambda group: (-group.open, group.group_key))
    return groups


@dataclass(slots=True)
class _GroupTotals:
    site_id: str
    rule_id: str
    rule_title: str
    level: str
    first_seen: datetime
    last_seen: datetime
    open: int = 0
    firing: int = 0
    acknowledged: int = 0
    silenced: int = 0
    inhibited: int = 0


def _rank(level: str) -> int:
    return LEVELS.index(level) if level in LEVELS else -1


def alerts_by_id(session: Session, ids: Collection[int], chunk: int = 500) -> list[Alert]:
    """The alerts of ``ids``, oldest first: one query per ``chunk``."""
    ordered = sorted(ids)
    found: list[Alert] = []
    for start in range(0, len(ordered), chunk):
        query = select(Alert).where(Alert.id.in_(ordered[start : start + chunk]))
        found += session.scalars(query.order_by(Alert.id))
    return found


def open_alerts_in_groups(
    session: Session, group_keys: Collection[str], chunk: int = 500
) -> dict[str, list[Alert]]:
    """The open alerts of each group, oldest first: one query per ``chunk`` groups (an
    ingest batch touches the groups of a hundred schools at once)."""
    members: dict[str, list[Alert]] = {key: [] for key in group_keys}
    ordered = sorted(members)
    for start in range(0, len(ordered), chunk):
        query = (
            select(Alert)
            .where(Alert.group_key.in_(ordered[start : start + chunk]))
            .where(Alert.state.in_(OPEN_STATES))
            .order_by(Alert.id)
        )
        for alert in session.scalars(query):
            members[alert.group_key].append(alert)
    return members
