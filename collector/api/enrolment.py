"""Enrolment tokens, the agents' enrolment call, and device revocation.

``POST /api/v1/enrol`` is the one route without a bearer token: the enrolment token in the
body is the credential. Its body and answers are the msgspec types of ``wire.enrolment``
(shared with the agent), decoded here by hand and described in OpenAPI from the same types.

Every other route is for admins, and a scoped admin (``site_scope``) sees and changes only
tokens and devices inside its scope: a device is checked on every site it currently belongs
to (its enrolment record, its broker login, its revocation), before anything changes.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated, Any, Final, Literal

import msgspec
from fastapi import APIRouter, Depends, HTTPException, Query, Request, Response, status
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from campuswatch.collector.accounts import record_audit
from campuswatch.collector.api.context import ApiContext
from campuswatch.collector.api.deps import (
    AdminOnly,
    Context,
    DbSession,
    Principal,
    ensure_visible,
    refuse_nul,
)
from campuswatch.collector.api.schemas import RowId, problems
from campuswatch.collector.enrolment.models import Enrolment, EnrolmentToken
from campuswatch.collector.enrolment.service import (
    APPROVAL_LIFETIME,
    MAX_APPROVAL_LIFETIME,
    EnrolmentNotFound,
    EnrolmentRefused,
    EnrolmentService,
    NewToken,
    token_state,
)
from campuswatch.wire.enrolment import (
    ENROL_PATH,
    MAX_REQUEST_BYTES,
    EnrolRefusal,
    EnrolResponse,
    decode_request,
    request_schema,
    response_schema,
)
from campuswatch.wire.ids import utc_now

router = APIRouter(prefix="/api/v1", tags=["enrolment"])
# The admin routes refuse NUL like every other router; the enrol route does not take this
# dependency because it reads the whole body, and enrol must stop reading at its size limit
# (its wire types refuse control characters themselves).
_GUARDED: Final = [Depends(refuse_nul)]

# Refusal reason -> HTTP status. A clone is a conflict the agent resolves by itself.
_REFUSAL_STATUS = {
    "token_unknown": status.HTTP_403_FORBIDDEN,
    "token_expired": status.HTTP_403_FORBIDDEN,
    "token_exhausted": status.HTTP_403_FORBIDDEN,
    "token_revoked": status.HTTP_403_FORBIDDEN,
    "device_revoked": status.HTTP_403_FORBIDDEN,
    "clone": status.HTTP_409_CONFLICT,
    "already_enrolled": status.HTTP_409_CONFLICT,
    "not_configured": status.HTTP_503_SERVICE_UNAVAILABLE,
    "invalid": 422,
}


def enrolment_service(context: ApiContext) -> EnrolmentService:
    service = context.extras.get("enrolment")
    if not isinstance(service, EnrolmentService):
        service = EnrolmentService(
            context.sessions,
            broker_dir=context.settings.broker_dir,
            agent_broker_url=context.settings.agent_broker_url,
        )
        context.extras["enrolment"] = service
    return service


def issue_enrolment_token(
    context: ApiContext,
    session: Session,
    principal: Principal,
    *,
    site_id: str,
    lifetime: timedelta,
    max_uses: int,
    note: str,
) -> NewToken:
    """The service's new token, audited (this API and the admin page; each checks the
    scope first). The caller commits."""
    created = enrolment_service(context).create_token(
        session,
        site_id=site_id,
        lifetime=lifetime,
        max_uses=max_uses,
        created_by=principal.name,
        note=note,
    )
    record_audit(
        session,
        actor=principal.actor,
        action="enrolment_token.create",
        target=f"enrolment-token:{created.row.id}",
        site_id=site_id,
        max_uses=max_uses,
        expires_at=created.row.expires_at.isoformat(timespec="seconds"),
    )
    return created


def withdraw_enrolment_token(
    context: ApiContext, session: Session, principal: Principal, token_id: int
) -> EnrolmentToken:
    """Revoke through the service, audited once (EnrolmentNotFound for an unknown id; the
    caller checks the scope first). The caller commits."""
    existing = session.get(EnrolmentToken, token_id)
    was_live = existing is not None and existing.revoked_at is None
    row = enrolment_service(context).revoke_token(session, token_id)
    if was_live:
        record_audit(
            session,
            actor=principal.actor,
            action="enrolment_token.revoke",
            target=f"enrolment-token:{row.id}",
            site_id=row.site_id,
        )
    return row


class EnrolmentTokenIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    site_id: str = Field(min_length=1, max_length=64)
    expires_in_hours: float = Field(default=72, gt=0, le=90 * 24)
    max_uses: int = Field(default=100, ge=1, le=100_000)
    """A lab of 40 PCs enrolled from one image needs one token with room to spare."""
    note: str = Field(default="", max_length=256)


class EnrolmentTokenOut(BaseModel):
    id: int
    site_id: str
    note: str
    created_by: str
    created_at: datetime
    expires_at: datetime
    max_uses: int
    uses: int
    last_used_at: datetime | None
    revoked_at: datetime | None
    state: Literal["active", "expired", "exhausted", "revoked"]


class EnrolmentTokenCreated(EnrolmentTokenOut):
    token: str
    """Shown once; only its hash is stored."""


class EnrolmentOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    device_id: str
    site_id: str
    hostname: str | None
    agent_version: str | None
    token_id: int | None
    enrolled_at: datetime
    last_enrolled_at: datetime
    enrol_count: int
    clone_attempts: int
    revoked_at: datetime | None
    revoked_by: str | None
    revoke_note: str | None


class RevokeIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    note: str = Field(default="", max_length=1000)


class ApproveReenrolmentIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    site_id: str | None = Field(default=None, min_length=1, max_length=64)
    """The school whose token may re-enrol the device; default: the school it is in now."""
    expires_in_hours: float = Field(
        default=APPROVAL_LIFETIME.total_seconds() / 3600,
        gt=0,
        le=MAX_APPROVAL_LIFETIME.total_seconds() / 3600,
    )


class ReenrolmentApprovalOut(BaseModel):
    device_id: str
    reenrolment_site_id: str
    approved_by: str
    approved_at: datetime
    expires_at: datetime


def _in_scope_device(
    context: ApiContext, session: DbSession, principal: Principal, device_id: str
) -> set[str]:
    """The device's current sites; 404 when it is unknown or any of them is out of scope."""
    sites = enrolment_service(context).device_sites(session, device_id)
    if sites is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "not found")
    for site in sites:
        ensure_visible(principal, site)
    return sites


def _scope_filter(principal: Principal, site_id: str | None) -> list[str] | None:
    """Sites a listing may show: None for all, otherwise the scope (narrowed by ``site_id``)."""
    if principal.allowed_sites is None:
        return None if not site_id else [site_id]
    if site_id:
        return [site_id] if site_id in principal.allowed_sites else []
    return sorted(principal.allowed_sites)


def _token_out(row: EnrolmentToken) -> dict[str, Any]:
    return {
        "id": row.id,
        "site_id": row.site_id,
        "note": row.note,
        "created_by": row.created_by,
        "created_at": row.created_at,
        "expires_at": row.expires_at,
        "max_uses": row.max_uses,
        "uses": row.uses,
        "last_used_at": row.last_used_at,
        "revoked_at": row.revoked_at,
        "state": token_state(row, utc_now()),
    }


@router.post(
    "/enrolment-tokens",
    response_model=EnrolmentTokenCreated,
    status_code=201,
    dependencies=_GUARDED,
    responses=problems(400, 401, 403, 422),
)
def create_enrolment_token(
    body: EnrolmentTokenIn, context: Context, session: DbSession, principal: AdminOnly
) -> dict[str, Any]:
    """A token for one school; put it on its PCs or in their disk image."""
    if not principal.can_see(body.site_id):
        # The same answer whether the site exists or not: nothing leaks outside the scope.
        raise HTTPException(status.HTTP_403_FORBIDDEN, "the site is outside your scope")
    try:
        created = issue_enrolment_token(
            context,
            session,
            principal,
            site_id=body.site_id,
            lifetime=timedelta(hours=body.expires_in_hours),
            max_uses=body.max_uses,
            note=body.note,
        )
    except (EnrolmentNotFound, EnrolmentRefused) as exc:
        raise HTTPException(422, str(exc)) from None
    session.commit()
    return {**_token_out(created.row), "token": created.token}


@router.get(
    "/enrolment-tokens",
    response_model=list[EnrolmentTokenOut],
    dependencies=_GUARDED,
    responses=problems(401, 403, 422),
)
def list_enrolment_tokens(
    session: DbSession,
    principal: AdminOnly,
    site_id: str | None = None,
    state: Literal["active", "expired", "exhausted", "revoked"] | None = None,
) -> list[dict[str, Any]]:
    query = select(EnrolmentToken).order_by(EnrolmentToken.id.desc())
    sites = _scope_filter(principal, site_id)
    if sites is not None:
        query = query.where(EnrolmentToken.site_id.in_(sites))
    rows = [_token_out(row) for row in session.scalars(query)]
    return [row for row in rows if state is None or row["state"] == state]


@router.delete(
    "/enrolment-tokens/{token_id}",
    response_model=EnrolmentTokenOut,
    dependencies=_GUARDED,
    responses=problems(401, 403, 404, 422),
)
def revoke_enrolment_token(
    token_id: RowId, context: Context, session: DbSession, principal: AdminOnly
) -> dict[str, Any]:
    """Stops new enrolments with the token; devices already enrolled keep their logins."""
    existing = session.get(EnrolmentToken, token_id)
    ensure_visible(principal, existing.site_id if existing is not None else None)
    try:
        row = withdraw_enrolment_token(context, session, principal, token_id)
    except EnrolmentNotFound:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "not found") from None
    session.commit()
    return _token_out(row)


@router.get(
    "/enrolments",
    response_model=list[EnrolmentOut],
    dependencies=_GUARDED,
    responses=problems(401, 403, 422),
)
def list_enrolments(
    session: DbSession,
    principal: AdminOnly,
    site_id: str | None = None,
    revoked: bool | None = None,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 1000,
) -> list[Enrolment]:
    query = select(Enrolment).order_by(Enrolment.site_id, Enrolment.device_id).limit(limit)
    sites = _scope_filter(principal, site_id)
    if sites is not None:
        query = query.where(Enrolment.site_id.in_(sites))
    if revoked is not None:
        query = query.where(
            Enrolment.revoked_at.is_not(None) if revoked else Enrolment.revoked_at.is_(None)
        )
    return list(session.scalars(query))


@router.post(
    "/devices/{device_id}/revoke",
    response_model=EnrolmentOut,
    dependencies=_GUARDED,
    responses=problems(400, 401, 403, 404, 422),
)
def revoke_device(
    device_id: str, body: RevokeIn, context: Context, session: DbSession, principal: AdminOnly
) -> Enrolment:
    """Take the device's broker login away; Mosquitto disconnects it at once."""
    _in_scope_device(context, session, principal, device_id)
    try:
        enrolment = enrolment_service(context).revoke_device(
            session, device_id, by=f"user:{principal.name}", note=body.note
        )
    except EnrolmentNotFound:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "not found") from None
    session.commit()
    return enrolment


@router.post(
    "/devices/{device_id}/reinstate",
    response_model=EnrolmentOut,
    dependencies=_GUARDED,
    responses=problems(401, 403, 404, 422),
)
def reinstate_device(
    device_id: str, context: Context, session: DbSession, principal: AdminOnly
) -> Enrolment:
    """Let a revoked device enrol again with a token of its school; no login until then."""
    _in_scope_device(context, session, principal, device_id)
    try:
        enrolment = enrolment_service(context).reinstate_device(
            session, device_id, by=f"user:{principal.name}"
        )
    except EnrolmentNotFound:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "not found") from None
    session.commit()
    return enrolment


@router.post(
    "/devices/{device_id}/approve-reenrolment",
    response_model=ReenrolmentApprovalOut,
    dependencies=_GUARDED,
    responses=problems(400, 401, 403, 404, 422),
)
def approve_reenrolment(
    device_id: str,
    body: ApproveReenrolmentIn,
    context: Context,
    session: DbSession,
    principal: AdminOnly,
) -> dict[str, Any]:
    """Let the next enrolment of this id — with a token of ``site_id`` — replace its login.

    For a PC that lost its login (re-imaged) or moves to another school. Without this, only
    the device itself can re-enrol its id, by presenting its current broker password."""
    sites = _in_scope_device(context, session, principal, device_id)
    site_id = body.site_id or (min(sites) if len(sites) == 1 else None)
    if not site_id:
        raise HTTPException(422, "the device belongs to no single site: give site_id")
    if not principal.can_see(site_id):
        raise HTTPException(status.HTTP_403_FORBIDDEN, "the site is outside your scope")
    try:
        approval = enrolment_service(context).approve_reenrolment(
            session,
            device_id,
            site_id=site_id,
            by=f"user:{principal.name}",
            lifetime=timedelta(hours=body.expires_in_hours),
        )
    except (ValueError, EnrolmentRefused) as exc:
        raise HTTPException(422, str(exc)) from None
    return {
        "device_id": approval.device_id,
        "reenrolment_site_id": approval.site,
        "approved_by": approval.approved_by,
        "approved_at": datetime.fromisoformat(approval.approved_at),
        "expires_at": datetime.fromisoformat(approval.expires_at),
    }


def _json(status_code: int, value: msgspec.Struct) -> Response:
    return Response(msgspec.json.encode(value), status_code, media_type="application/json")


_REFUSAL_DOC = {"content": {"application/json": {"schema": response_schema(EnrolRefusal)}}}


@router.post(
    ENROL_PATH.removeprefix("/api/v1"),
    status_code=201,
    response_class=Response,
    summary="Exchange an enrolment token for this device's own broker login",
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": request_schema()}},
        }
    },
    responses={
        201: {
            "description": "Enrolled: the device's user name, password and broker address",
            "content": {"application/json": {"schema": response_schema(EnrolResponse)}},
        },
        403: {"description": "Token or device refused", **_REFUSAL_DOC},
        409: {"description": "Device id enrolled by another machine (clone)", **_REFUSAL_DOC},
        413: {"description": "Request too large", **_REFUSAL_DOC},
        422: {"description": "Malformed request", **_REFUSAL_DOC},
        503: {"description": "Enrolment not configured on this collector", **_REFUSAL_DOC},
    },
)
async def enrol(request: Request, context: Context) -> Response:
    # Unauthenticated: read at most the limit, never a body of any size into memory.
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_REQUEST_BYTES:
            return _json(
                413,
                EnrolRefusal(reason="invalid", detail=f"larger than {MAX_REQUEST_BYTES} bytes"),
            )
    try:
        enrol_request = decode_request(bytes(body))
    except ValueError as exc:
        return _json(422, EnrolRefusal(reason="invalid", detail=str(exc)))
    service = enrolment_service(context)
    try:
        granted = await run_in_threadpool(service.enrol, enrol_request)
    except EnrolmentRefused as refusal:
        return _json(
            _REFUSAL_STATUS[refusal.reason],
            EnrolRefusal(reason=refusal.reason, detail=refusal.detail),
        )
    return _json(status.HTTP_201_CREATED, granted)
