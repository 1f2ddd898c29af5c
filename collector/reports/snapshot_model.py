"""``kpi_snapshots``: the live KPIs (antivirus, broadband) of each site, once a day.

Antivirus and broadband exist only as "now" (each device's latest report), so a report of a
closed period must read them from what was recorded while that period ran, never from
today's state. The report scheduler writes one row per site and local day
(``snapshots.take_daily_snapshot``); a closed period reads the rows of its last recorded
day. The register KPIs need no snapshot: ``register_history`` rebuilds them exactly.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from sqlalchemy import JSON, Boolean, Date, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from campuswatch.collector.db.models import Base


class KpiSnapshot(Base):
    __tablename__ = "kpi_snapshots"

    day: Mapped[date] = mapped_column(Date, primary_key=True)
    """The reporting calendar's local day the figures belong to."""
    site_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    """The site the computers stand at ("" for assets placed nowhere); schools have a row
    even without computers, for broadband. Not a foreign key: history outlives a site."""
    taken_at: Mapped[datetime] = mapped_column()
    is_school: Mapped[bool] = mapped_column(Boolean, default=False)
    uplink_type: Mapped[str | None] = mapped_column(String(16))
    reachable: Mapped[bool] = mapped_column(Boolean, default=False)
    """A school whose devices saw the Internet within ``REACHABILITY_MAX_AGE``."""
    computers: Mapped[int] = mapped_column(Integer, default=0)
    av_protected: Mapped[int] = mapped_column(Integer, default=0)
    av_parts: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    """Counts per ``kpis.AV_PARTS`` name other than ``protected``."""
