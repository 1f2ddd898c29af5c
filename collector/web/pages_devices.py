"""Live state per device, its latest report of every kind, and a sparkline per series."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Annotated, Any, Final

from fastapi import APIRouter, HTTPException, Query, Request, status
from fastapi.responses import HTMLResponse
from sqlalchemy import select
from sqlalchemy.orm import Session

from campuswatch.collector.api.deps import Context, DbSession
from campuswatch.collector.api.devices import list_devices
from campuswatch.collector.db.models import Asset, Device, Site
from campuswatch.collector.register.assets import device_names, display_name
from campuswatch.collector.tsdb import points
from campuswatch.collector.web.deps import PageUser, require_visible
from campuswatch.collector.web.labels import LIVENESS
from campuswatch.collector.web.rendering import render
from campuswatch.collector.web.sparkline import Sparkline, sparkline
from campuswatch.wire.ids import utc_now

router = APIRouter(prefix="/ui/devices")
PAGE_SIZE: Final = 50
SERIES_HOURS: Final = 24
SERIES_STEP: Final = timedelta(minutes=5)
MAX_SERIES: Final = 24
MEASUREMENTS: Final = (
    points.MEASUREMENT_HEALTH,
    points.MEASUREMENT_NET,
    points.MEASUREMENT_AV,
    points.MEASUREMENT_TELEMETRY,
    points.MEASUREMENT_DISK,
)


@dataclass(frozen=True, slots=True)
class SeriesView:
    measurement: str
    field: str
    tags: dict[str, str]
    chart: Sparkline


@router.get("", response_class=HTMLResponse)
def device_list(
    request: Request,
    session: DbSession,
    context: Context,
    user: PageUser,
    site_id: Annotated[str | None, Query(max_length=64)] = None,
    device_type: Annotated[str | None, Query(max_length=32)] = None,
    state: Annotated[str | None, Query(max_length=16)] = None,
    search: Annotated[str | None, Query(max_length=128)] = None,
    page: Annotated[int, Query(ge=1)] = 1,
) -> HTMLResponse:
    # The API's own listing, so the page and /api/v1/devices show the same rows.
    named = _named_like(session, search)
    result = list_devices(
        session,
        user.principal,
        context,
        site_id=site_id or None,
        device_type=device_type or None,
        status_filter=state if state in LIVENESS else None,
        search=None if named else search or None,
        page=1 if named else page,
        page_size=ALL_DEVICES if named else PAGE_SIZE,
    )
    if named and search:
        # People search for the name the pages show, not only the device id.
        wanted = search.casefold()
        rows = [
            row
            for row in result["items"]
            if wanted in row["device_id"].casefold() or row["device_id"] in named
        ]
        start = (page - 1) * PAGE_SIZE
        result = {"items": rows[start : start + PAGE_SIZE], "total": len(rows)}
    # Only the types found in the user's scope: the filter must not describe other schools.
    type_query = select(Device.device_type).distinct()
    if user.principal.allowed_sites is not None:
        type_query = type_query.where(Device.site_id.in_(user.principal.allowed_sites))
    types = sorted({t for t in session.scalars(type_query) if t is not None})
    sites = [
        s for s in session.scalars(select(Site).order_by(Site.name)) if user.principal.can_see(s.id)
    ]
    values = {
        "nav": "devices",
        "devices": result["items"],
        "names": device_names(session, [item["device_id"] for item in result["items"]]),
        "total": result["total"],
        "page": page,
        "pages": max(1, -(-result["total"] // PAGE_SIZE)),
        "filters": {
            "site_id": site_id or "",
            "device_type": device_type or "",
            "state": state or "",
            "search": search or "",
        },
        "sites": sites,
        "types": types,
    }
    return render(request, "devices.html", values, user=user)


ALL_DEVICES: Final = 1_000_000


def _named_like(session: Session, search: str | None) -> set[str]:
    """Device ids whose asset's name contains ``search`` (any case)."""
    if not search or not search.strip():
        return set()
    query = select(Asset.device_id).where(
        Asset.device_id.is_not(None), Asset.name.icontains(search.strip(), autoescape=True)
    )
    return {device_id for device_id in session.scalars(query) if device_id is not None}


def _series_for(timeseries: Any, device_id: str) -> list[SeriesView]:
    if timeseries is None:
        return []
    end = utc_now()
    start = end - timedelta(hours=SERIES_HOURS)
    views: list[SeriesView] = []
    for measurement in MEASUREMENTS:
        for field, tags in timeseries.series(measurement):
            if tags.get("device") != device_id:
                continue
            samples: Sequence[tuple[int, float]] = timeseries.query(
                measurement, field, tags, start=start, end=end, step=SERIES_STEP
            )
            if samples:
                views.append(SeriesView(measurement, field, tags, sparkline(samples)))
            if len(views) >= MAX_SERIES:
                return views
    return views


@router.get("/{device_id}", response_class=HTMLResponse)
def device_detail(
    device_id: str, request: Request, session: DbSession, context: Context, user: PageUser
) -> HTMLResponse:
    device = session.get(Device, device_id)
    if device is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "not found")
    require_visible(user, device.site_id)
    asset = session.get(Asset, device.asset_id) if device.asset_id is not None else None
    if asset is None:
        asset = session.scalar(select(Asset).where(Asset.device_id == device_id))
    values = {
        "nav": "devices",
        "device": device,
        "asset": asset,
        "name": display_name(asset) if asset is not None else device_id,
        "state": context.liveness.status(device_id, utc_now()),
        "latest": sorted((device.latest or {}).items()),
        "received": device.last_message_at or {},
        "series": _series_for(context.timeseries, device_id),
        "external_store": context.timeseries is None,
    }
    return render(request, "device_detail.html", values, user=user)
