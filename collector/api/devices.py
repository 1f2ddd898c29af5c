from __future__ import annotations

import math
from datetime import timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query, status
from sqlalchemy import select

from campuswatch.collector.api.context import ApiContext
from campuswatch.collector.api.deps import (
    Context,
    CurrentPrincipal,
    DbSession,
    Responder,
    ensure_visible,
    refuse_nul,
)
from campuswatch.collector.api.schemas import (
    CommandIn,
    CommandOut,
    DeviceDetail,
    DeviceOut,
    Page,
    PageNumber,
    SeriesOut,
    problems,
)
from campuswatch.collector.db.models import Device
from campuswatch.collector.register.device_state import latest_of_kind
from campuswatch.collector.tsdb.base import SeriesReader
from campuswatch.wire.ids import utc_now
from campuswatch.wire.messages import CommandMessage

router = APIRouter(
    prefix="/api/v1/devices",
    tags=["devices"],
    responses=problems(401, 422),
    dependencies=[Depends(refuse_nul)],
)


def _device_out(
    device: Device, context: ApiContext, av: dict[str, Any] | None, detail: bool = False
) -> dict[str, Any]:
    data: dict[str, Any] = {
        "device_id": device.device_id,
        "site_id": device.site_id,
        "device_type": device.device_type,
        "status": context.liveness.status(device.device_id, utc_now()),
        "online": device.online,
        "last_seen": device.last_seen,
        "status_changed_at": device.status_changed_at,
        "asset_id": device.asset_id,
        "software_version": device.software_version,
        "clock_skew_s": device.clock_skew_s,
        "av_status": av.get("status") if isinstance(av, dict) else None,
    }
    if detail:
        data.update(
            hello=device.hello,
            latest=device.latest or {},
            last_message_at=device.last_message_at or {},
        )
    return data


@router.get("", response_model=Page[DeviceOut], responses=problems(404))
def list_devices(
    session: DbSession,
    principal: CurrentPrincipal,
    context: Context,
    site_id: str | None = None,
    device_type: str | None = None,
    status_filter: Annotated[
        str | None, Query(alias="status", pattern="^(online|offline|flapping|unknown)$")
    ] = None,
    search: Annotated[str | None, Query(max_length=128)] = None,
    page: PageNumber = 1,
    page_size: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> dict[str, Any]:
    """Devices with their liveness and latest antivirus status, newest contact first."""
    av, of_device = latest_of_kind("av")
    query = (
        select(Device, av.body)
        .outerjoin(av, of_device)
        .order_by(Device.last_seen.desc().nulls_last(), Device.device_id)
    )
    if site_id is not None:
        ensure_visible(principal, site_id)
        query = query.where(Device.site_id == site_id)
    elif principal.allowed_sites is not None:
        query = query.where(Device.site_id.in_(principal.allowed_sites))
    if device_type is not None:
        query = query.where(Device.device_type == device_type)
    if search:
        query = query.where(Device.device_id.contains(search, autoescape=True))
    rows = [_device_out(device, context, av_body) for device, av_body in session.execute(query)]
    if status_filter is not None:
        rows = [row for row in rows if row["status"] == status_filter]
    start = (page - 1) * page_size
    return {
        "items": rows[start : start + page_size],
        "total": len(rows),
        "page": page,
        "page_size": page_size,
    }


@router.get("/{device_id}", response_model=DeviceDetail, responses=problems(404))
def get_device(
    device_id: str, session: DbSession, principal: CurrentPrincipal, context: Context
) -> dict[str, Any]:
    """A device with the latest message of every kind it sent."""
    device = session.get(Device, device_id)
    if device is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "not found")
    ensure_visible(principal, device.site_id)
    return _device_out(device, context, device.latest.get("av"), detail=True)


@router.get("/{device_id}/series", response_model=SeriesOut, responses=problems(404))
def device_series(
    device_id: str,
    measurement: str,
    field: str,
    session: DbSession,
    principal: CurrentPrincipal,
    context: Context,
    hours: Annotated[float, Query(gt=0, le=24 * 31)] = 24,
    step_s: Annotated[int, Query(ge=10, le=86400)] = 300,
) -> SeriesOut:
    """A down-sampled series from the embedded store, for the UI's small charts."""
    device = session.get(Device, device_id)
    if device is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "not found")
    ensure_visible(principal, device.site_id)
    if context.timeseries is None:
        raise HTTPException(
            status.HTTP_404_NOT_FOUND, "series are served by the external store (use Grafana)"
        )
    store: SeriesReader = context.timeseries
    end = utc_now()
    points = store.query(
        measurement,
        field,
        {"device": device_id},
        start=end - timedelta(hours=hours),
        end=end,
        step=timedelta(seconds=step_s),
    )
    # A bucket whose average overflowed (absurd values stored before the schema bounded
    # them) is left out like an empty one: JSON has no inf.
    points = [(time, value) for time, value in points if math.isfinite(value)]
    return SeriesOut(
        measurement=measurement,
        field=field,
        step_s=step_s,
        times_ms=[time for time, _ in points],
        values=[value for _, value in points],
    )


@router.post(
    "/{device_id}/commands",
    response_model=CommandOut,
    status_code=202,
    responses=problems(400, 403, 404, 503),
)
def send_command(
    device_id: str,
    body: CommandIn,
    session: DbSession,
    context: Context,
    principal: Responder,
) -> CommandOut:
    """Ask a device to refresh its inventory, run its probes now, rescan …"""
    device = session.get(Device, device_id)
    if device is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "not found")
    ensure_visible(principal, device.site_id)
    if context.send_command is None:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, "no broker connection")
    command = CommandMessage(
        device_id=device_id,
        site=device.site_id,
        command=body.command,
        args=body.args,
        issued_by=principal.name,
    )
    sent = context.send_command(command)
    return CommandOut(sent=sent, message_id=command.id)
