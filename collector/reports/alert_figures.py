"""Alerts of a period: how many by level, and how fast people acknowledged them.

An alert belongs to the period in which it first fired (``first_seen``). Time to
acknowledge is from ``first_seen`` to the *first* ``acknowledged`` entry of its audit trail:
``alerts.acknowledged_at`` is cleared by an "unacknowledge", and the first reaction is what
the incident-response target is about. Alerts the rule cleared before anyone acknowledged
them are counted as ``auto_resolved``, those still waiting as ``unacknowledged``.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from campuswatch.collector.alerts.models import Alert, AlertAudit
from campuswatch.collector.signals import LEVELS


@dataclass(frozen=True, slots=True)
class AlertFigures:
    by_level: dict[str, int]
    by_site: dict[str, int] = field(default_factory=dict)
    acknowledged: int = 0
    unacknowledged: int = 0
    auto_resolved: int = 0
    ack_median_s: float | None = None
    ack_p90_s: float | None = None

    @property
    def total(self) -> int:
        return sum(self.by_level.values())


def percentile(values: Sequence[float], share: float) -> float | None:
    """Nearest-rank percentile (p50 of 1, 2, 3, 4 is 2): always a value that occurred."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(share * len(ordered)))
    return ordered[rank - 1]


def alert_figures(
    session: Session, start: datetime, end: datetime, site_ids: Collection[str] | None
) -> AlertFigures:
    first_ack = (
        select(AlertAudit.alert_id, func.min(AlertAudit.at).label("acked_at"))
        .where(AlertAudit.action == "acknowledged")
        .group_by(AlertAudit.alert_id)
        .subquery()
    )
    query = (
        select(Alert.level, Alert.site_id, Alert.first_seen, Alert.state, first_ack.c.acked_at)
        .outerjoin(first_ack, first_ack.c.alert_id == Alert.id)
        .where(Alert.first_seen >= start, Alert.first_seen < end)
    )
    if site_ids is not None:
        query = query.where(Alert.site_id.in_(list(site_ids)))
    by_level: dict[str, int] = dict.fromkeys(LEVELS, 0)
    by_site: dict[str, int] = {}
    delays: list[float] = []
    unacknowledged = auto_resolved = 0
    for level, site_id, first_seen, state, acked_at in session.execute(query):
        by_level[level] = by_level.get(level, 0) + 1
        by_site[site_id] = by_site.get(site_id, 0) + 1
        if acked_at is not None:
            # MIN() keeps the column's UtcDateTime type, so both values are aware UTC.
            delays.append(max(0.0, (acked_at - first_seen).total_seconds()))
        elif state == "resolved":
            auto_resolved += 1
        else:
            unacknowledged += 1
    return AlertFigures(
        by_level=by_level,
        by_site=by_site,
        acknowledged=len(delays),
        unacknowledged=unacknowledged,
        auto_resolved=auto_resolved,
        ack_median_s=percentile(delays, 0.5),
        ack_p90_s=percentile(delays, 0.9),
    )
