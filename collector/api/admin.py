"""Dead letters and API tokens: admin-only resources (the admin page calls the same
functions; every token change is audited).

A scoped admin administers its own subtree only: it sees the dead letters whose topic
names one of its sites, lists and revokes the tokens scoped inside it, and grants tokens
no wider and no higher than itself (``db.access.check_grant``).
"""

from __future__ import annotations

from typing import Annotated, Any, Final

from fastapi import APIRouter, Depends, HTTPException, Query, status
from sqlalchemy import ColumnElement, false, func, or_, select
from sqlalchemy.orm import Session

from campuswatch.collector.accounts import record_audit
from campuswatch.collector.api.deps import AdminOnly, DbSession, Principal, refuse_nul
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
from campuswatch.collector.db.access import UI_SESSION_PREFIX, GrantRefused, create_api_token
from campuswatch.collector.db.models import ApiToken, DeadLetter, Site
from campuswatch.wire.ids import utc_now
from campuswatch.wire.topics import PREFIX, VERSION

DISPLAY_PREFIX: Final = "display:"
"""Display tokens are viewer tokens named ``display:<label>`` (the admin page makes them):
the wall takes any live viewer token (``web.auth.display_principal``); the prefix only
lists them apart."""

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
    query = select(DeadLetter).where(_dead_letters_of(principal))
    count = select(func.count()).select_from(DeadLetter).where(_dead_letters_of(principal))
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


def _dead_letters_of(principal: Principal) -> ColumnElement[bool]:
    """The rows whose topic (``cw/v1/<site>/…``) names a site the principal sees; for a
    scoped admin a row whose site cannot be read from its topic is nobody's, so not shown."""
    if principal.allowed_sites is None:
        return DeadLetter.id.is_not(None)
    if not principal.allowed_sites:
        return false()
    return or_(
        *(
            DeadLetter.topic.startswith(f"{PREFIX}/{VERSION}/{site}/", autoescape=True)
            for site in sorted(principal.allowed_sites)
        )
    )


def token_visible(principal: Principal, token: ApiToken) -> bool:
    """An unscoped token is visible to unscoped admins only."""
    if principal.allowed_sites is None:
        return True
    return token.site_scope is not None and principal.can_see(token.site_scope)


def is_display_token(token: ApiToken) -> bool:
    return token.role == "viewer" and token.name.startswith(DISPLAY_PREFIX)


def _audit(session: Session, principal: Principal, token: ApiToken, change: str) -> None:
    kind = "display_token" if is_display_token(token) else "token"
    record_audit(
        session,
        actor=principal.actor,
        action=f"{kind}.{change}",
        target=f"token:{token.id}",
        name=token.name,
        role=token.role,
        site_scope=token.site_scope,
    )


class TokenNameInUse(Exception):
    """A valid token the admin sees has this name already."""


def grant_token(
    session: Session, principal: Principal, *, name: str, role: str, site_scope: str | None
) -> tuple[ApiToken, str]:
    """A token no higher and no wider than the principal (GrantRefused otherwise), audited;
    the plain token is returned once. The caller commits.

    A name one of the admin's valid tokens has for the same scope is refused
    (TokenNameInUse): a second one is a form sent again (a reloaded page that showed the
    first secret), which would leave a valid token whose secret nobody saw. Tokens outside
    the admin's scope do not count, so a refusal reveals nothing there."""
    if name.startswith(UI_SESSION_PREFIX):  # the callers refuse it first; never by mistake
        raise GrantRefused(f"a token name must not start with {UI_SESSION_PREFIX!r}")
    same_scope = (
        ApiToken.site_scope.is_(None) if site_scope is None else ApiToken.site_scope == site_scope
    )
    namesakes = session.scalars(
        select(ApiToken).where(ApiToken.name == name, same_scope, ApiToken.revoked_at.is_(None))
    )
    if any(token_visible(principal, token) for token in namesakes):
        raise TokenNameInUse(
            f"a token named {name!r} exists for this scope: revoke it or choose another name"
        )
    token, plain = create_api_token(
        session, name=name, role=role, site_scope=site_scope, granted_by=principal.grantor
    )
    _audit(session, principal, token, "create")
    return token, plain


def revoke_visible_token(session: Session, principal: Principal, token_id: int) -> ApiToken | None:
    """Revoke a token the admin administers, audited (a revoked one keeps its time and is
    not audited again); None when it does not exist or lies outside the admin's scope,
    alike. The caller commits."""
    token = session.get(ApiToken, token_id)
    if token is None or not token_visible(principal, token):
        return None
    if token.revoked_at is None:
        token.revoked_at = utc_now()
        _audit(session, principal, token, "revoke")
    return token


@router.get("/tokens", response_model=list[TokenOut])
def list_tokens(session: DbSession, principal: AdminOnly) -> list[ApiToken]:
    """The tokens (and UI sessions) the admin administers: all, or those scoped inside its
    own scope."""
    query = select(ApiToken).order_by(ApiToken.id)
    if principal.allowed_sites is not None:
        query = query.where(ApiToken.site_scope.in_(principal.allowed_sites))
    return list(session.scalars(query))


@router.post("/tokens", response_model=TokenCreated, status_code=201, responses=problems(400, 409))
def new_token(body: TokenIn, session: DbSession, principal: AdminOnly) -> dict[str, Any]:
    """A new token; a scoped admin grants only inside its scope (never "every site")."""
    unscoped_grant = principal.site_scope is None and body.site_scope is not None
    if unscoped_grant and session.get(Site, body.site_scope) is None:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, "unknown site_scope")
    try:
        token, plain = grant_token(
            session, principal, name=body.name, role=body.role, site_scope=body.site_scope
        )
    except GrantRefused as exc:
        # One answer for a foreign, a wider and an unknown scope: nothing outside is revealed.
        raise HTTPException(status.HTTP_403_FORBIDDEN, str(exc)) from None
    except TokenNameInUse as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from None
    session.commit()
    return {**TokenOut.model_validate(token).model_dump(), "token": plain}


@router.delete("/tokens/{token_id}", response_model=TokenOut, responses=problems(404))
def revoke_token(token_id: RowId, session: DbSession, principal: AdminOnly) -> ApiToken:
    token = revoke_visible_token(session, principal, token_id)
    if token is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "not found")
    session.commit()
    return token
