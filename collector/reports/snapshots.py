"""The daily KPI snapshot: today's live figures kept so a closed period reports its own.

``take_daily_snapshot`` (re)writes the rows of the current local day at every scheduler
pass, so the snapshot of a period's last day is the state at the last pass before the
period ended; days gone by are never touched again.
"""

from __future__ import annotations

from datetime import date, datetime

from sqlalchemy import delete
from sqlalchemy.orm import Session

from campuswatch.collector.reports.kpis import MAX_SIGNATURE_AGE_HOURS, measure_live
from campuswatch.collector.reports.snapshot_model import KpiSnapshot


def take_daily_snapshot(
    session: Session,
    day: date,
    now: datetime,
    *,
    max_signature_age_hours: float = MAX_SIGNATURE_AGE_HOURS,
) -> int:
    """Replace ``day``'s rows with the live figures at ``now``; returns the rows written.
    The caller commits (one transaction: a day is never left half-written)."""
    state = measure_live(session, now, max_signature_age_hours)
    session.execute(delete(KpiSnapshot).where(KpiSnapshot.day == day))
    rows: dict[str, KpiSnapshot] = {}
    for site_id, site in state.sites.items():
        rows[site_id] = KpiSnapshot(
            day=day,
            site_id=site_id,
            taken_at=now,
            is_school=False,
            uplink_type=None,
            reachable=False,
            computers=site.computers,
            av_protected=site.protected,
            av_parts=dict(site.parts),
        )
    for school_id, (uplink, reachable) in state.schools.items():
        row = rows.get(school_id)
        if row is None:
            row = rows[school_id] = KpiSnapshot(
                day=day,
                site_id=school_id,
                taken_at=now,
                computers=0,
                av_protected=0,
                av_parts={},
            )
        row.is_school, row.uplink_type, row.reachable = True, uplink, reachable
    session.add_all(rows.values())
    session.flush()
    return len(rows)
