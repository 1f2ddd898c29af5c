"""The facilities register: search, filters, detail with history, edit, export, import."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Any, Final
from urllib.parse import parse_qsl

from fastapi import APIRouter, File, Form, HTTPException, Query, Request, UploadFile, status
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy import Select, func, select
from sqlalchemy.orm import Session

from campuswatch.collector.api.assets import MAX_IMPORT_BYTES, XLSX_MEDIA_TYPE, scoped_errors
from campuswatch.collector.api.deps import DbSession, ensure_still_visible
from campuswatch.collector.db.models import ASSET_KINDS, ASSET_STATUSES, Asset, Site
from campuswatch.collector.register import assets as register
from campuswatch.collector.register import transfer
from campuswatch.collector.web.auth import UiUser, check_csrf
from campuswatch.collector.web.deps import PageUser, require_role, require_visible
from campuswatch.collector.web.labels import LAST_SEEN_FILTER, REVIEW_FILTER
from campuswatch.collector.web.rendering import render, request_language
from campuswatch.wire.ids import utc_now

router = APIRouter(prefix="/ui/inventory")
PAGE_SIZE: Final = 50
EDITOR_ROLES: Final = ("admin", "facilities")
# What a person corrects on the edit form; MACs, device ids and OS versions come from agents
# and are corrected through the API or an import when they must be.
FORM_FIELDS: Final = (
    "name",
    "asset_tag",
    "kind",
    "site_id",
    "room",
    "owner",
    "status",
    "registered",
    "ignored",
    "vendor",
    "model",
    "serial",
    "purchase_date",
    "warranty_end",
    "security_level",
    "protection_plan_approved_on",
    "notes",
)


def _scope(user: UiUser, site_id: str | None) -> str | None:
    """The subtree to list: the chosen site (if visible) or the user's whole scope."""
    if site_id:
        require_visible(user, site_id)
        return site_id
    return user.principal.site_scope


def filtered_assets(
    session: Session,
    *,
    site_id: str | None,
    kind: str | None,
    status_name: str | None,
    search: str | None,
    room: str | None,
    last_seen: str | None,
    review: str | None = None,
) -> Select[Any]:
    """The register's own filters (the API's) plus room and last-seen, which the UI adds."""
    query = register._filtered(
        select(Asset),
        session,
        site_id=site_id,
        kind=kind,
        status=status_name,
        registered=None,
        source=None,
        search=search,
        review=review,
    )
    if room:
        query = query.where(func.lower(Asset.room) == room.strip().lower())
    now = utc_now()
    if last_seen == "1d":
        query = query.where(Asset.last_seen >= now - timedelta(days=1))
    elif last_seen == "stale7":
        query = query.where(Asset.last_seen < now - timedelta(days=7))
    elif last_seen == "stale30":
        query = query.where(Asset.last_seen < now - timedelta(days=30))
    elif last_seen == "never":
        query = query.where(Asset.last_seen.is_(None))
    return query


def _sites(session: Session, user: UiUser) -> list[Site]:
    rows = session.scalars(select(Site).order_by(Site.name))
    return [site for site in rows if user.principal.can_see(site.id)]


@router.get("", response_class=HTMLResponse)
def inventory_list(
    request: Request,
    session: DbSession,
    user: PageUser,
    site_id: Annotated[str | None, Query(max_length=64)] = None,
    kind: Annotated[str | None, Query(max_length=32)] = None,
    status_name: Annotated[str | None, Query(alias="status", max_length=16)] = None,
    room: Annotated[str | None, Query(max_length=128)] = None,
    last_seen: Annotated[str | None, Query(max_length=8)] = None,
    review: Annotated[str | None, Query(max_length=16)] = None,
    search: Annotated[str | None, Query(max_length=128)] = None,
    page: Annotated[int, Query(ge=1)] = 1,
    confirmed: Annotated[int | None, Query(ge=0, le=1000)] = None,
) -> HTMLResponse:
    filters = {
        "site_id": site_id or "",
        "kind": kind or "",
        "status": status_name or "",
        "room": room or "",
        "last_seen": last_seen or "",
        "review": review or "",
        "search": search or "",
    }
    return _inventory_page(
        request, session, user, filters, page=page, confirmed=confirmed, errors=[]
    )


def _inventory_page(
    request: Request,
    session: Session,
    user: UiUser,
    filters: dict[str, str],
    *,
    page: int,
    confirmed: int | None,
    errors: list[tuple[str, str, str]],
    status_code: int = 200,
) -> HTMLResponse:
    query = filtered_assets(
        session,
        site_id=_scope(user, filters["site_id"] or None),
        kind=filters["kind"] if filters["kind"] in ASSET_KINDS else None,
        status_name=filters["status"] if filters["status"] in ASSET_STATUSES else None,
        search=filters["search"] or None,
        room=filters["room"] or None,
        last_seen=filters["last_seen"] if filters["last_seen"] in LAST_SEEN_FILTER else None,
        review=filters["review"] if filters["review"] in REVIEW_FILTER else None,
    )
    total = int(session.scalar(select(func.count()).select_from(query.subquery())) or 0)
    rows = session.scalars(query.order_by(Asset.id).offset((page - 1) * PAGE_SIZE).limit(PAGE_SIZE))
    values = {
        "nav": "inventory",
        "assets": list(rows),
        "total": total,
        "page": page,
        "pages": max(1, -(-total // PAGE_SIZE)),
        "filters": filters,
        "sites": _sites(session, user),
        "kinds": ASSET_KINDS,
        "statuses": ASSET_STATUSES,
        "export_site": filters["site_id"],
        "may_import": user.may(*EDITOR_ROLES) and user.principal.site_scope is None,
        "may_confirm": user.may(*EDITOR_ROLES),
        "display_name": register.display_name,
        "review_state": register.review_state,
        "confirmed": confirmed,
        "confirm_errors": errors,
        "back": request.url.path + (f"?{request.url.query}" if request.url.query else ""),
    }
    return render(request, "inventory.html", values, user=user, status_code=status_code)


def _back_to_inventory(back: str) -> str:
    """Where the confirmation returns: the list the user came from, never another site."""
    if back == "/ui/inventory" or back.startswith("/ui/inventory?"):
        return back
    return "/ui/inventory"


@router.post("/confirm", response_model=None)
async def confirm_selected(request: Request, session: DbSession, user: PageUser) -> Response:
    """Accept (or ignore) the ticked assets in one go, each with the room and tag typed on
    its row; a room typed once for all fills the rows left empty, and the owner applies to
    every ticked row."""
    form = await request.form()
    check_csrf(request, user, str(form.get("csrf_token") or ""))
    require_role(user, *EDITOR_ROLES)
    back = _back_to_inventory(str(form.get("back") or ""))
    room_for_all = str(form.get("room_all") or "").strip()
    owner = str(form.get("owner_all") or "").strip()
    confirmations: list[register.Confirmation] = []
    for raw in form.getlist("asset_id"):
        try:
            asset_id = int(str(raw))
        except ValueError:
            raise HTTPException(status.HTTP_422_UNPROCESSABLE_ENTITY, "bad asset id") from None
        asset = session.get(Asset, asset_id)
        if asset is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, "not found")
        require_visible(user, asset.site_id)
        room = str(form.get(f"room-{asset_id}") or "").strip() or room_for_all
        tag = str(form.get(f"tag-{asset_id}") or "").strip()
        confirmations.append(register.Confirmation(asset_id, room=room, asset_tag=tag, owner=owner))
    ignore = form.get("action") == "ignore"
    try:
        confirmed = register.confirm_assets(session, confirmations, user.actor, ignore=ignore)
    except register.AssetValidationError as exc:
        session.rollback()
        errors = _confirm_errors(session, user, exc.errors)
        filters = {key: request.query_params.get(key, "") for key in _FILTER_KEYS}
        query = back.partition("?")[2]
        filters.update({k: v for k, v in parse_qsl(query) if k in _FILTER_KEYS})
        return _inventory_page(
            request, session, user, filters, page=1, confirmed=None, errors=errors,
            status_code=422,
        )  # fmt: skip
    for asset in confirmed:
        ensure_still_visible(session, user.principal, asset.site_id)
    session.commit()
    separator = "&" if "?" in back else "?"
    return RedirectResponse(f"{back}{separator}confirmed={len(confirmed)}", status_code=303)


_FILTER_KEYS: Final = ("site_id", "kind", "status", "room", "last_seen", "review", "search")


def _confirm_errors(
    session: Session, user: UiUser, errors: dict[str, str]
) -> list[tuple[str, str, str]]:
    """(asset name, field, message) per refusal; a tag held at another school says only so."""
    shown: list[tuple[str, str, str]] = []
    for key, message in scoped_errors(session, user.principal, errors).items():
        asset_id, _, field_name = key.partition(".")
        asset = session.get(Asset, int(asset_id))
        name = register.display_name(asset) if asset is not None else asset_id
        shown.append((name, field_name, message))
    return shown


def _export_response(data: bytes, media_type: str, filename: str) -> Response:
    return Response(
        data,
        media_type=media_type,
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )


@router.get("/export.csv")
def export_csv(
    session: DbSession, user: PageUser, site_id: Annotated[str | None, Query(max_length=64)] = None
) -> Response:
    data = transfer.export_assets_csv(session, _scope(user, site_id))
    return _export_response(data, "text/csv; charset=utf-8", "assets.csv")


@router.get("/export.xlsx")
def export_xlsx(
    request: Request,
    session: DbSession,
    user: PageUser,
    site_id: Annotated[str | None, Query(max_length=64)] = None,
) -> Response:
    language = _sheet_language(request)
    data = transfer.export_assets_xlsx(session, _scope(user, site_id), language=language)
    return _export_response(data, XLSX_MEDIA_TYPE, f"assets.{language}.xlsx")


@router.get("/import-template.xlsx")
def import_template(request: Request, user: PageUser) -> Response:
    language = _sheet_language(request)
    data = transfer.import_template_xlsx(language=language)
    return _export_response(data, XLSX_MEDIA_TYPE, f"assets-template.{language}.xlsx")


def _sheet_language(request: Request) -> transfer.Language:
    """Spreadsheets in the page's language: the one the reader chose."""
    return "en" if request_language(request) == "en" else "vi"


def _require_importer(user: UiUser) -> None:
    require_role(user, *EDITOR_ROLES)
    if user.principal.site_scope is not None:
        # As in the API: an import can touch any school, so it needs an unscoped account.
        raise HTTPException(status.HTTP_403_FORBIDDEN, "imports need an unscoped account")


@router.get("/import", response_class=HTMLResponse)
def import_form(request: Request, user: PageUser) -> HTMLResponse:
    _require_importer(user)
    return render(request, "import.html", {"nav": "inventory", "report": None}, user=user)


@router.post("/import", response_class=HTMLResponse)
async def import_upload(
    request: Request,
    session: DbSession,
    user: PageUser,
    file: Annotated[UploadFile, File()],
    csrf_token: Annotated[str, Form()] = "",
    dry_run: Annotated[bool, Form()] = False,
) -> HTMLResponse:
    check_csrf(request, user, csrf_token)
    _require_importer(user)
    filename = (file.filename or "upload.csv").replace("/", "_").replace("\\", "_")[-256:]
    data = await file.read(MAX_IMPORT_BYTES + 1)
    if len(data) > MAX_IMPORT_BYTES:
        raise HTTPException(status.HTTP_413_REQUEST_ENTITY_TOO_LARGE, "file larger than 20 MB")
    report = transfer.import_assets(session, data, filename, dry_run=dry_run)
    if report.applied:
        session.commit()
    else:
        session.rollback()
    return render(request, "import.html", {"nav": "inventory", "report": report}, user=user)


@router.get("/{asset_id}", response_class=HTMLResponse)
def asset_detail(
    asset_id: int, request: Request, session: DbSession, user: PageUser
) -> HTMLResponse:
    return _detail_page(request, session, user, asset_id, errors={}, conflict=False)


def _detail_page(
    request: Request,
    session: Session,
    user: UiUser,
    asset_id: int,
    *,
    errors: dict[str, str],
    conflict: bool,
    submitted: dict[str, str] | None = None,
    status_code: int = 200,
) -> HTMLResponse:
    asset = session.get(Asset, asset_id)
    if asset is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "not found")
    require_visible(user, asset.site_id)
    values = {
        "nav": "inventory",
        "asset": asset,
        "history": list(reversed(register.asset_history(session, asset_id))),
        "may_edit": user.may(*EDITOR_ROLES),
        "form_fields": FORM_FIELDS,
        "kinds": ASSET_KINDS,
        "statuses": ASSET_STATUSES,
        "sites": _sites(session, user),
        "errors": errors,
        "conflict": conflict,
        "submitted": submitted or {},
        "saved": request.query_params.get("saved") == "1",
    }
    return render(request, "asset_detail.html", values, user=user, status_code=status_code)


@router.post("/{asset_id}", response_model=None)
async def asset_edit(
    asset_id: int, request: Request, session: DbSession, user: PageUser
) -> Response:
    form = await request.form()
    check_csrf(request, user, str(form.get("csrf_token") or ""))
    require_role(user, *EDITOR_ROLES)
    asset = session.get(Asset, asset_id)
    if asset is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "not found")
    require_visible(user, asset.site_id)
    submitted = {name: str(form.get(name) or "") for name in FORM_FIELDS}
    for flag in ("registered", "ignored"):
        submitted[flag] = "true" if form.get(flag) else "false"
    # Only fields whose value differs from what the page showed: an unchanged field must not
    # become "manual" and stop following what the agent reports.
    changes: dict[str, object] = {}
    for name, text in submitted.items():
        current = register.render_value(getattr(asset, name))
        if (current or "") != text:
            changes[name] = text
    if changes.get("site_id"):
        require_visible(user, str(changes["site_id"]))
    try:
        expected = int(str(form.get("expected_version") or ""))
    except ValueError:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_ENTITY, "expected_version missing"
        ) from None
    try:
        edited = register.edit_asset(session, asset_id, changes, user.actor, expected)
    except register.AssetValidationError as exc:
        session.rollback()
        return _detail_page(
            request, session, user, asset_id, errors=exc.errors, conflict=False,
            submitted=submitted, status_code=422,
        )  # fmt: skip
    except register.AssetConflict:
        session.rollback()
        return _detail_page(
            request, session, user, asset_id, errors={}, conflict=True,
            submitted=submitted, status_code=409,
        )  # fmt: skip
    # Judged again on the stored value: an emptied site field leaves every scope.
    ensure_still_visible(session, user.principal, edited.site_id)
    session.commit()
    return RedirectResponse(f"/ui/inventory/{asset_id}?saved=1", status_code=303)
