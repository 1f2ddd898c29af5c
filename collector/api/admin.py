"""Dead letters and API tokens: admin-only resources."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query, status
from sqlalchemy import func, select

from campuswatch.collector.api.deps import AdminOnly, DbSession, refuse_nul
from campuswatch.collector.api.schemas import (
    DeadLetterOut,
    Page,
    PageNumber,
    RowId,
    TokenCreated,
    TokenIn,
    TokenOut,
    problems,
)
from campuswatch.collector.db.access import create_api_token
from campuswatch.collector.db.models import ApiToken, DeadLetter, Site
from campuswatch.wire.ids import utc_now

router = APIRouter(
    prefix="/api/v1",
    tags=["admin"],
    responses=problems(401, 403, 422),
    dependencies=[Depends(refuse_nul)],
)


@router.get("/dead-letters", response_model=Page[DeadLetterOut])
def dead_letters(
    session: DbSession,
    principal: AdminOnly,
    reason: str | None = None,
    page: PageNumber = 1,
    page_size: Annotated[int, Query(ge=1, le=500)] = 50,
) -> dict[str, Any]:
    """Payloads the collector refused, newest first, with the reason."""
    query = select(DeadLetter)
    count = select(func.count()).select_from(DeadLetter)
    if reason:
        query = query.where(DeadLetter.reason == reason)
        count = count.where(DeadLetter.reason == reason)
    rows = session.scalars(
        query.order_by(DeadLetter.id.desc()).offset((page - 1) * page_size).limit(page_size)
    ).all()
    items = [
        {
            "id": row.id,
            "received_at": row.received_at,
            "topic": row.topic,
            "reason": row.reason,
            "detail": row.detail,
            "payload_preview": row.payload[:2048].decode("utf-8", errors="replace"),
            "payload_truncated": row.payload_truncated,
        }
        for row in rows
    ]
    return {
        "items": items,
        "total": session.scalar(count) or 0,
        "page": page,
        "page_size": page_size,
    }


@router.get("/tokens", response_model=list[TokenOut])
def list_tokens(session: DbSession, principal: AdminOnly) -> list[ApiToken]:
    return list(session.scalars(select(ApiToken).order_by(ApiToken.id)))


@router.post("/tokens", response_model=TokenCreated, status_code=201, responses=problems(400))
def new_token(body: TokenIn, session: DbSession, principal: AdminOnly) -> dict[str, Any]:
    if body.site_scope is not None and session.get(Site, body.site_scope) is None:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, "unknown site_scope")
    token, plain = create_api_token(
        session, name=body.name, role=body.role, site_scope=body.site_scope
    )
    session.commit()
    return {**TokenOut.model_validate(token).model_dump(), "token": plain}


@router.delete("/tokens/{token_id}", response_model=TokenOut, responses=problems(404))
def revoke_token(token_id: RowId, session: DbSession, principal: AdminOnly) -> ApiToken:
    token = session.get(ApiToken, token_id)
    if token is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "not found")
    token.revoked_at = token.revoked_at or utc_now()
    session.commit()
    return token
