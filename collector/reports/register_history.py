"""The asset register as it stood at a past instant, rebuilt from ``asset_history``.

Reports compare a period with the one before, so "registered / all assets" must be known at
the end of last month too, not only now. Every manual or automatic field change writes an
``AssetHistory`` row with the old value, so undoing the rows newer than the instant, newest
first, gives each tracked field's value at that instant. Assets created after the instant
did not exist yet. Only the fields the KPIs read are rebuilt.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, replace
from datetime import date, datetime
from typing import Any, Final

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from campuswatch.collector.db.models import Asset, AssetHistory

TRACKED_FIELDS: Final = (
    "status",
    "registered",
    "kind",
    "site_id",
    "security_level",
    "protection_plan_approved_on",
)


@dataclass(frozen=True, slots=True)
class AssetAt:
    """The KPI-relevant fields of one asset at one instant."""

    id: int
    kind: str
    site_id: str | None
    status: str
    registered: bool
    security_level: int | None
    protection_plan_approved_on: date | None
    created_at: datetime


def _parse(field: str, text: str | None) -> object:
    """Inverse of ``register.assets.render_value`` for the tracked fields."""
    if text is None:
        return None
    if field == "registered":
        return text == "true"
    if field == "security_level":
        return int(text)
    if field == "protection_plan_approved_on":
        return date.fromisoformat(text[:10])
    return text


def assets_as_of(
    session: Session, at: datetime, site_ids: Collection[str] | None = None
) -> list[AssetAt]:
    """Assets that existed at ``at`` with their fields as of then; ``site_ids`` filters on
    the site the asset was at *then* (an asset moved away since still counts here)."""
    moved_since = select(AssetHistory.asset_id).where(
        AssetHistory.field == "site_id", AssetHistory.at >= at
    )
    query = select(
        Asset.id,
        Asset.kind,
        Asset.site_id,
        Asset.status,
        Asset.registered,
        Asset.security_level,
        Asset.protection_plan_approved_on,
        Asset.created_at,
    ).where(
        Asset.created_at < at,
        # Hosts a person marked "ignored" (visitors' phones) are not school equipment at all;
        # when they were ignored is not tracked, so they are left out of every period.
        Asset.ignored.is_(False),
    )
    if site_ids is not None:
        query = query.where(or_(Asset.site_id.in_(list(site_ids)), Asset.id.in_(moved_since)))
    current = {row.id: AssetAt(*row) for row in session.execute(query)}
    if not current:
        return []
    changes = session.execute(
        select(AssetHistory.asset_id, AssetHistory.field, AssetHistory.old_value)
        .where(AssetHistory.at >= at, AssetHistory.field.in_(TRACKED_FIELDS))
        .order_by(AssetHistory.at.desc(), AssetHistory.id.desc())
    )
    for asset_id, field, old_value in changes:
        state = current.get(asset_id)
        if state is not None:
            undone: dict[str, Any] = {field: _parse(field, old_value)}
            current[asset_id] = replace(state, **undone)
    wanted = None if site_ids is None else set(site_ids)
    return [
        state
        for state in sorted(current.values(), key=lambda item: item.id)
        if wanted is None or state.site_id in wanted
    ]
