"""Annotated dependencies of the UI pages (the API's session, a logged-in user)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, HTTPException, Request, status

from campuswatch.collector.api.deps import DbSession
from campuswatch.collector.web.auth import UiUser, page_user


def _page_user(request: Request, session: DbSession) -> UiUser:
    return page_user(request, session)


PageUser = Annotated[UiUser, Depends(_page_user)]


def require_role(user: UiUser, *roles: str) -> None:
    if not user.may(*roles):
        raise HTTPException(status.HTTP_403_FORBIDDEN, f"role {user.role!r} may not do this")


def require_visible(user: UiUser, site_id: str | None) -> None:
    if not user.principal.can_see(site_id):
        # 404 like the API: a scoped user must not learn what exists outside their scope.
        raise HTTPException(status.HTTP_404_NOT_FOUND, "not found")
