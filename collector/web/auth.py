"""UI sessions, CSRF protection and the principal of a page request.

Session: a user login creates an ordinary ``ApiToken`` (name ``ui-session:<user>``, the
user's role and scope) and puts it in the ``cw_token`` cookie that the API's
``current_principal`` already reads. Why a token rather than a signed cookie: revocation
is a row update that the API and the UI both honour at once (logout, disabling a user,
an admin revoking it in /api/v1/tokens), and no signing key has to be provisioned and
rotated. The token lives ``SESSION_HOURS`` from login, enforced by the server wherever it
is presented (``db.access.find_api_token`` refuses it after that, for the API as for the
UI), not only by the cookie's Max-Age; the UI also revokes it when it is found expired and
every login sweeps the expired ones.

CSRF, two layers: the cookie is ``SameSite=Strict`` (a browser does not send it on a
cross-site request at all) and every state-changing form carries a synchronizer token,
HMAC(session token, purpose), checked in constant time. The form token is derived from
the HttpOnly session token, so a page on another origin can neither read nor compute it,
and nothing server-side has to be stored. The login form itself has no session yet: there
an Origin/Referer check (same host, or the configured ``public_url``) stops login CSRF.
State-changing API calls authenticated by this cookie need a same-site Origin/Referer too
(``api.request_guards.CheckCookieWriteOrigin``); bearer-token calls do not.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from typing import Final

from fastapi import HTTPException, Request, status
from sqlalchemy import select
from sqlalchemy.orm import Session

from campuswatch.collector.api.context import ApiContext
from campuswatch.collector.api.deps import Principal, current_principal
from campuswatch.collector.api.request_guards import same_origin
from campuswatch.collector.db.access import (
    UI_SESSION_LIFETIME,
    UI_SESSION_PREFIX,
    create_api_token,
    find_api_token,
    hash_password,
    hash_token,
    session_expired,
    verify_password,
)
from campuswatch.collector.db.models import ApiToken, User
from campuswatch.collector.register.assets import site_subtree_ids
from campuswatch.wire.ids import utc_now

SESSION_COOKIE: Final = "cw_token"
LANGUAGE_COOKIE: Final = "cw_lang"
SESSION_PREFIX: Final = UI_SESSION_PREFIX
SESSION_HOURS: Final = int(UI_SESSION_LIFETIME.total_seconds() // 3600)
CSRF_FIELD: Final = "csrf_token"
_CSRF_PURPOSE: Final = b"campuswatch-ui-form"
# Verifying against a throw-away hash when the user does not exist keeps the answer time
# the same, so the login form does not reveal which user names exist.
_DUMMY_PASSWORD_HASH: Final = hash_password(secrets.token_urlsafe(16))


class LoginRequired(Exception):
    """Raised by page dependencies; the app turns it into a redirect to the login page."""


@dataclass(frozen=True, slots=True)
class UiUser:
    principal: Principal
    display_name: str
    csrf_token: str
    session_token: bool
    """True for a UI login session (logout revokes it); False for a pasted API token."""

    @property
    def actor(self) -> str:
        return f"user:{self.display_name}"

    @property
    def role(self) -> str:
        return self.principal.role

    def may(self, *roles: str) -> bool:
        return self.principal.role in roles


def csrf_token_for(session_token: str) -> str:
    return hmac.new(session_token.encode("utf-8"), _CSRF_PURPOSE, hashlib.sha256).hexdigest()


def page_user(request: Request, session: Session) -> UiUser:
    """The logged-in user of a page request, or LoginRequired."""
    plain = request.cookies.get(SESSION_COOKIE)
    if not plain:
        raise LoginRequired
    token = session.scalar(select(ApiToken).where(ApiToken.token_hash == hash_token(plain)))
    if token is not None and token.revoked_at is None and session_expired(token):
        token.revoked_at = utc_now()
        session.commit()
    try:
        # The API's own check (revocation, scope subtree), so UI and API never disagree.
        principal = current_principal(session, request, None)
    except HTTPException:
        raise LoginRequired from None
    is_session = principal.name.startswith(SESSION_PREFIX)
    name = principal.name.removeprefix(SESSION_PREFIX) if is_session else principal.name
    return UiUser(principal, name, csrf_token_for(plain), is_session)


def check_csrf(request: Request, user: UiUser, submitted: str | None) -> None:
    check_same_origin(request)
    if not submitted or not hmac.compare_digest(submitted, user.csrf_token):
        raise HTTPException(status.HTTP_403_FORBIDDEN, "missing or wrong form token")


def check_same_origin(request: Request) -> None:
    """Refuse a POST whose Origin (or, lacking it, Referer) names another host."""
    origin = request.headers.get("origin") or request.headers.get("referer")
    if origin is None or origin == "null":
        if origin == "null":
            raise HTTPException(status.HTTP_403_FORBIDDEN, "cross-origin form refused")
        return  # old clients and curl send neither; the form token still protects them
    context: ApiContext = request.app.state.context
    host = request.headers.get("host", request.url.netloc)
    # The same rule as the API's cookie-write check (the request's own host or public_url).
    if not same_origin(origin, host, context.settings.public_url):
        raise HTTPException(status.HTTP_403_FORBIDDEN, "cross-origin form refused")


def authenticate_user(session: Session, username: str, password: str) -> User | None:
    user = session.scalar(select(User).where(User.username == username.strip()))
    if user is None or user.disabled:
        verify_password(password, _DUMMY_PASSWORD_HASH)
        return None
    return user if verify_password(password, user.password_hash) else None


def start_session(session: Session, user: User) -> str:
    """A fresh session token for ``user`` (plain text, for the cookie); commits."""
    sweep_expired_sessions(session)
    _, plain = create_api_token(
        session, name=f"{SESSION_PREFIX}{user.username}", role=user.role, site_scope=user.site_scope
    )
    session.commit()
    return plain


def valid_api_token(session: Session, plain: str) -> ApiToken | None:
    token = find_api_token(session, plain.strip())  # refuses revoked and expired tokens
    if token is None:
        return None
    session.commit()
    return token


def end_session(session: Session, plain: str | None) -> None:
    """Logout: a UI session token is revoked; a pasted API token is only forgotten."""
    if not plain:
        return
    token = session.scalar(select(ApiToken).where(ApiToken.token_hash == hash_token(plain)))
    if token is not None and token.name.startswith(SESSION_PREFIX) and token.revoked_at is None:
        token.revoked_at = utc_now()
        session.commit()


def sweep_expired_sessions(session: Session) -> int:
    cutoff = utc_now() - UI_SESSION_LIFETIME
    stale = session.scalars(
        select(ApiToken).where(
            ApiToken.name.startswith(SESSION_PREFIX, autoescape=True),
            ApiToken.revoked_at.is_(None),
            ApiToken.created_at < cutoff,
        )
    ).all()
    now = utc_now()
    for token in stale:
        token.revoked_at = now
    return len(stale)


def display_principal(context: ApiContext, session: Session, token: str | None) -> Principal:
    """The wall display's principal: the configured display token (all sites, read-only)
    or any live viewer-role API token (with its scope). Anything else is 401."""
    if token:
        configured = context.settings.display_token
        if configured is not None and hmac.compare_digest(
            token.encode("utf-8"), configured.get_secret_value().encode("utf-8")
        ):
            return Principal("display", "viewer", None, None)
        row = valid_api_token(session, token)
        if row is not None and row.role == "viewer":
            allowed = (
                frozenset(site_subtree_ids(session, row.site_scope)) if row.site_scope else None
            )
            return Principal(row.name, row.role, row.site_scope, allowed)
    raise HTTPException(status.HTTP_401_UNAUTHORIZED, "a display token is required")


def safe_next(target: str | None, default: str = "/ui/") -> str:
    """Only local UI paths: ``next=//evil.example`` must not become an open redirect."""
    if not target or not target.startswith("/ui") or target.startswith("//") or "\\" in target:
        return default
    return target
