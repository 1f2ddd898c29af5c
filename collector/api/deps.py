"""Annotated dependencies: the database session and the calling principal."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session

from campuswatch.collector.api.context import ApiContext
from campuswatch.collector.db.access import UI_SESSION_PREFIX, find_api_token
from campuswatch.collector.register.assets import site_subtree_ids
from campuswatch.wire.ids import utc_now

_bearer = HTTPBearer(auto_error=False)


def get_context(request: Request) -> ApiContext:
    context: ApiContext = request.app.state.context
    return context


Context = Annotated[ApiContext, Depends(get_context)]


def get_session(context: Context) -> Iterator[Session]:
    with context.sessions() as session:
        yield session


DbSession = Annotated[Session, Depends(get_session)]


@dataclass(frozen=True)
class Principal:
    name: str
    role: str
    site_scope: str | None
    allowed_sites: frozenset[str] | None
    """None = every site; otherwise the scope's subtree (a district SOC sees its schools)."""

    def can_see(self, site_id: str | None) -> bool:
        return self.allowed_sites is None or (site_id is not None and site_id in self.allowed_sites)

    @property
    def actor(self) -> str:
        """Who the audit log names: ``user:NAME`` for a web UI login, ``token:NAME`` else."""
        if self.name.startswith(UI_SESSION_PREFIX):
            return f"user:{self.name.removeprefix(UI_SESSION_PREFIX)}"
        return f"token:{self.name}"

    @property
    def grantor(self) -> tuple[str, frozenset[str] | None]:
        """What this principal may hand on (``db.access.check_grant``): its role and sites."""
        return self.role, self.allowed_sites


def current_principal(
    session: DbSession,
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    token_text = credentials.credentials if credentials else request.cookies.get("cw_token")
    if not token_text:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "a bearer token is required",
            headers={"WWW-Authenticate": "Bearer"},
        )
    token = find_api_token(session, token_text)
    if token is None or token.revoked_at is not None:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "unknown or revoked token",
            headers={"WWW-Authenticate": "Bearer"},
        )
    token.last_used_at = utc_now()
    session.commit()
    allowed = frozenset(site_subtree_ids(session, token.site_scope)) if token.site_scope else None
    return Principal(token.name, token.role, token.site_scope, allowed)


CurrentPrincipal = Annotated[Principal, Depends(current_principal)]


def _role_checker(*roles: str) -> Callable[[Principal], Principal]:
    def check(principal: CurrentPrincipal) -> Principal:
        if principal.role not in roles:
            raise HTTPException(
                status.HTTP_403_FORBIDDEN, f"role {principal.role!r} may not do this"
            )
        return principal

    return check


AdminOnly = Annotated[Principal, Depends(_role_checker("admin"))]
Editor = Annotated[Principal, Depends(_role_checker("admin", "facilities"))]
"""May change the register (facilities managers)."""
Responder = Annotated[Principal, Depends(_role_checker("admin", "soc"))]
"""May act on alerts and devices (SOC analysts)."""


def _has_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_has_nul(k) or _has_nul(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_has_nul(item) for item in value)
    return False


async def refuse_nul(request: Request) -> None:
    """Refuse a NUL character in the path, the query or a JSON body (422).

    No field has a use for it and PostgreSQL cannot store or even compare it: let through,
    it fails in the driver as a 500. Refused on SQLite too, so both registers behave alike.
    """
    values = [*request.path_params.values()]
    values += [text for pair in request.query_params.multi_items() for text in pair]
    body = await request.body()  # cached: the route's own body parsing reads the same bytes
    if b"\\u0000" in body:
        # Not JSON: FastAPI refuses it, or the route reads it as a file.
        with contextlib.suppress(ValueError):
            values.append(json.loads(body))
    if _has_nul(values):
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT, "text must not contain NUL characters"
        )


def ensure_visible(principal: Principal, site_id: str | None) -> None:
    if not principal.can_see(site_id):
        # 404, not 403: a scoped user must not learn what exists outside their scope.
        raise HTTPException(status.HTTP_404_NOT_FOUND, "not found")


def ensure_still_visible(session: Session, principal: Principal, site_id: str | None) -> None:
    """After a change, before its commit: the object is still inside the principal's scope
    as the tree now stands (404 and rollback otherwise).

    ``allowed_sites`` was computed before the change; a change to the tree (or an object
    moved to another site) is judged by the scope's subtree read again, so no write can
    carry anything out of the scope or bring a foreign object into it.
    """
    if principal.site_scope is None:
        return
    if site_id is None or site_id not in site_subtree_ids(session, principal.site_scope):
        session.rollback()
        raise HTTPException(status.HTTP_404_NOT_FOUND, "not found")
