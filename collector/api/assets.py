from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Query, Request, Response, status
from pydantic import BaseModel, Field
from sqlalchemy import select
from sqlalchemy.orm import Session

from campuswatch.collector.api.deps import (
    CurrentPrincipal,
    DbSession,
    Editor,
    Principal,
    ensure_still_visible,
    ensure_visible,
    refuse_nul,
)
from campuswatch.collector.api.schemas import (
    MAX_ROW_ID,
    AssetEdit,
    AssetHistoryOut,
    AssetOut,
    ImportReportOut,
    Page,
    PageNumber,
    RowId,
    problems,
)
from campuswatch.collector.db.models import Asset, Device
from campuswatch.collector.register import assets as register
from campuswatch.collector.register import transfer

router = APIRouter(
    prefix="/api/v1/assets",
    tags=["assets"],
    responses=problems(401, 422),
    dependencies=[Depends(refuse_nul)],
)
MAX_IMPORT_BYTES = 20 * 1024 * 1024


def asset_out(asset: Asset) -> dict[str, Any]:
    data = {column: getattr(asset, column) for column in AssetOut.model_fields if column != "macs"}
    data["macs"] = sorted(mac.mac for mac in asset.macs)
    return data


def _refuse_foreign_device(
    session: Session, principal: Principal, changes: dict[str, Any], asset_id: int | None
) -> None:
    """A scoped editor cannot tie an asset to a device of another site, nor learn which
    asset holds it: that device's reports would then feed an asset inside the scope."""
    device_id = changes.get("device_id")
    if principal.allowed_sites is None or not isinstance(device_id, str):
        return
    device_id = device_id.strip()
    device_site = session.scalar(select(Device.site_id).where(Device.device_id == device_id))
    holder = session.scalar(select(Asset).where(Asset.device_id == device_id))
    foreign_device = device_site is not None and not principal.can_see(device_site)
    foreign_holder = (
        holder is not None and holder.id != asset_id and not principal.can_see(holder.site_id)
    )
    if foreign_device or foreign_holder:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT, {"device_id": "not a device of your sites"}
        )


_HELD_BY = re.compile(r"already belongs to asset (\d+)$")


def scoped_errors(
    session: Session, principal: Principal, errors: Mapping[str, str]
) -> dict[str, str]:
    """The register's field errors, but a uniqueness refusal names the holding asset only
    when the principal can see it (an asset tag or MAC in use at another school says so)."""
    if principal.allowed_sites is None:
        return dict(errors)
    shown: dict[str, str] = {}
    for field_name, message in errors.items():
        held = _HELD_BY.search(message)
        if held is not None:
            holder = session.get(Asset, int(held.group(1)))
            if holder is None or not principal.can_see(holder.site_id):
                message = message[: held.start()] + "already in use at another school"
        shown[field_name] = message
    return shown


def _scope_site(principal: Principal, site_id: str | None) -> str | None:
    if site_id is not None:
        ensure_visible(principal, site_id)
        return site_id
    return principal.site_scope


@router.get("", response_model=Page[AssetOut], responses=problems(404))
def list_assets(
    session: DbSession,
    principal: CurrentPrincipal,
    site_id: str | None = None,
    kind: str | None = None,
    status_filter: Annotated[str | None, Query(alias="status")] = None,
    registered: bool | None = None,
    source: str | None = None,
    search: Annotated[str | None, Query(max_length=128)] = None,
    review: Annotated[
        Literal["registered", "discovered", "to_confirm", "unknown", "ignored"] | None,
        Query(description="registered; discovered = to_confirm + unknown; ignored"),
    ] = None,
    page: PageNumber = 1,
    page_size: Annotated[int, Query(ge=1, le=1000)] = 50,
) -> dict[str, Any]:
    """Search and filter the register (site includes its sub-sites)."""
    rows, total = register.list_assets(
        session,
        site_id=_scope_site(principal, site_id),
        kind=kind,
        status=status_filter,
        registered=registered,
        source=source,
        search=search,
        review=review,
        page=page,
        page_size=page_size,
    )
    return {
        "items": [asset_out(a) for a in rows],
        "total": total,
        "page": page,
        "page_size": page_size,
    }


@router.get("/export.csv", response_class=Response, responses=problems(404))
def export_csv(
    session: DbSession, principal: CurrentPrincipal, site_id: str | None = None
) -> Response:
    data = transfer.export_assets_csv(session, _scope_site(principal, site_id))
    return Response(
        data,
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": 'attachment; filename="assets.csv"'},
    )


XLSX_MEDIA_TYPE = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
SheetLanguage = Annotated[transfer.Language, Query(description="Titles and words: vi or en.")]


@router.get("/export.xlsx", response_class=Response, responses=problems(404))
def export_xlsx(
    session: DbSession,
    principal: CurrentPrincipal,
    site_id: str | None = None,
    language: SheetLanguage = "vi",
) -> Response:
    """The register for people: titles and words in ``language``, Excel dates in local time,
    filter and frozen header; the import reads it back (the CSV keeps codes)."""
    data = transfer.export_assets_xlsx(session, _scope_site(principal, site_id), language=language)
    return Response(
        data,
        media_type=XLSX_MEDIA_TYPE,
        headers={"Content-Disposition": 'attachment; filename="assets.xlsx"'},
    )


@router.get("/import-template.xlsx", response_class=Response)
def import_template(principal: CurrentPrincipal, language: SheetLanguage = "vi") -> Response:
    """An empty register to fill in, with an example row and a guide sheet for each column."""
    return Response(
        transfer.import_template_xlsx(language=language),
        media_type=XLSX_MEDIA_TYPE,
        headers={"Content-Disposition": f'attachment; filename="assets-template.{language}.xlsx"'},
    )


@router.post("/import", response_model=ImportReportOut, responses=problems(403, 413))
async def import_assets(
    request: Request,
    session: DbSession,
    filename: Annotated[str, Query(max_length=256, pattern=r"^[^/\\]+\.(csv|xlsx)$")],
    principal: Editor,
    dry_run: bool = True,
) -> dict[str, Any]:
    """Import CSV/XLSX sent as the request body. ``dry_run`` (the default) lists every row
    error and writes nothing; a real run writes nothing either while any row is wrong."""
    data = await request.body()
    if len(data) > MAX_IMPORT_BYTES:
        raise HTTPException(status.HTTP_413_REQUEST_ENTITY_TOO_LARGE, "file larger than 20 MB")
    if principal.site_scope is not None:
        raise HTTPException(status.HTTP_403_FORBIDDEN, "imports need an unscoped account")
    report = transfer.import_assets(session, data, filename, dry_run=dry_run)
    if report.applied:
        session.commit()
    else:
        session.rollback()
    return {
        "filename": report.filename,
        "dry_run": report.dry_run,
        "rows": report.rows,
        "created": report.created,
        "updated": report.updated,
        "unchanged": report.unchanged,
        "applied": report.applied,
        "errors": [{"row": e.row, "column": e.column, "message": e.message} for e in report.errors],
    }


class ConfirmItem(BaseModel):
    asset_id: Annotated[int, Field(ge=1, le=MAX_ROW_ID)]
    room: Annotated[str | None, Field(max_length=128)] = None
    asset_tag: Annotated[str | None, Field(max_length=64)] = None
    owner: Annotated[str | None, Field(max_length=128)] = None


class ConfirmIn(BaseModel):
    items: Annotated[list[ConfirmItem], Field(min_length=1, max_length=1000)]
    action: Literal["register", "ignore"] = "register"


@router.post("/confirm", response_model=list[AssetOut], responses=problems(400, 403, 404))
def confirm_assets(body: ConfirmIn, session: DbSession, principal: Editor) -> list[dict[str, Any]]:
    """Accept discovered assets into the register in bulk (room, tag, owner each), or ignore
    them (not school equipment). All or nothing; 404 if any asset is outside your scope."""
    for item in body.items:
        asset = session.get(Asset, item.asset_id)
        if asset is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, "not found")
        ensure_visible(principal, asset.site_id)
    confirmations = [
        register.Confirmation(
            item.asset_id, room=item.room, asset_tag=item.asset_tag, owner=item.owner
        )
        for item in body.items
    ]
    try:
        confirmed = register.confirm_assets(
            session, confirmations, f"user:{principal.name}", ignore=body.action == "ignore"
        )
    except register.AssetValidationError as exc:
        session.rollback()
        errors = scoped_errors(session, principal, exc.errors)
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, errors) from None
    for asset in confirmed:
        ensure_still_visible(session, principal, asset.site_id)
    session.commit()
    return [asset_out(asset) for asset in confirmed]


@router.get("/{asset_id}", response_model=AssetOut, responses=problems(404))
def get_asset(asset_id: RowId, session: DbSession, principal: CurrentPrincipal) -> dict[str, Any]:
    asset = session.get(Asset, asset_id)
    if asset is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "not found")
    ensure_visible(principal, asset.site_id)
    return asset_out(asset)


@router.get("/{asset_id}/history", response_model=list[AssetHistoryOut], responses=problems(404))
def get_history(asset_id: RowId, session: DbSession, principal: CurrentPrincipal) -> list[Any]:
    asset = session.get(Asset, asset_id)
    if asset is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "not found")
    ensure_visible(principal, asset.site_id)
    return list(register.asset_history(session, asset_id))


@router.patch("/{asset_id}", response_model=AssetOut, responses=problems(400, 403, 404, 409))
def edit_asset(
    asset_id: RowId,
    body: AssetEdit,
    session: DbSession,
    principal: Editor,
) -> dict[str, Any]:
    """A manual edit; the edited fields stay as set even when devices report otherwise."""
    asset = session.get(Asset, asset_id)
    if asset is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "not found")
    ensure_visible(principal, asset.site_id)
    if "site_id" in body.changes:
        ensure_visible(principal, body.changes["site_id"])
    _refuse_foreign_device(session, principal, body.changes, asset_id)
    try:
        edited = register.edit_asset(
            session, asset_id, body.changes, f"user:{principal.name}", body.expected_version
        )
    except register.AssetValidationError as exc:
        session.rollback()
        errors = scoped_errors(session, principal, exc.errors)
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, errors) from None
    except register.AssetConflict as exc:
        session.rollback()
        raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from None
    # Judged again on the cleaned value: " " or "" became None, out of every scope.
    ensure_still_visible(session, principal, edited.site_id)
    session.commit()
    session.refresh(edited)
    return asset_out(edited)


@router.post("", response_model=AssetOut, status_code=201, responses=problems(400, 403, 404))
def create_asset(
    body: dict[str, Any],
    session: DbSession,
    principal: Editor,
) -> dict[str, Any]:
    """Register equipment by hand (information systems, devices without an agent)."""
    ensure_visible(principal, body.get("site_id") if principal.site_scope else None)
    _refuse_foreign_device(session, principal, body, None)
    try:
        asset = register.create_asset(session, body, f"user:{principal.name}")
    except register.AssetValidationError as exc:
        session.rollback()
        errors = scoped_errors(session, principal, exc.errors)
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, errors) from None
    ensure_still_visible(session, principal, asset.site_id)
    session.commit()
    session.refresh(asset)
    return asset_out(asset)
