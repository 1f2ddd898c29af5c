"""Login, logout and the language switch."""

from __future__ import annotations

import contextlib
import math
from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy.exc import SQLAlchemyError

from campuswatch.collector.api.deps import DbSession, get_context
from campuswatch.collector.web.auth import (
    LANGUAGE_COOKIE,
    SESSION_COOKIE,
    SESSION_HOURS,
    LoginRequired,
    authenticate_user,
    check_csrf,
    check_same_origin,
    end_session,
    page_user,
    safe_next,
    start_session,
    valid_api_token,
)
from campuswatch.collector.web.i18n import LANGUAGES
from campuswatch.collector.web.labels import N_
from campuswatch.collector.web.login_limits import (
    LoginLimitsUnavailable,
    Refusal,
    login_limiter,
)
from campuswatch.collector.web.rendering import render

router = APIRouter(prefix="/ui")
LOGIN_FAILED = N_("Wrong user name, password or token.")
LOGIN_LOCKED = N_("Too many failed logins. Try again in %(minutes)s minutes.")
LOGIN_LOCKED_ONE_MINUTE = N_("Too many failed logins. Try again in 1 minute.")
LOGIN_UNAVAILABLE = N_("Login is not available right now. Try again in a minute.")
UNAVAILABLE_RETRY_S = 60


def _set_session_cookie(request: Request, response: Response, token: str) -> None:
    response.set_cookie(
        SESSION_COOKIE,
        token,
        max_age=SESSION_HOURS * 3600,
        path="/",
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )


@router.get("/login", response_class=HTMLResponse)
def login_form(request: Request, next: str | None = None) -> HTMLResponse:
    return render(request, "login.html", {"next": safe_next(next), "error": None}, user=None)


@router.post("/login", response_model=None)
def login(
    request: Request,
    session: DbSession,
    username: Annotated[str, Form(max_length=128)] = "",
    password: Annotated[str, Form(max_length=1024)] = "",
    token: Annotated[str, Form(max_length=256)] = "",
    next: Annotated[str, Form(max_length=2048)] = "/ui/",
) -> Response:
    check_same_origin(request)
    limiter = login_limiter(get_context(request))
    # The ASGI client address: behind a reverse proxy it is the proxy's unless the proxy is
    # listed in ``trusted_proxies`` (the HTTP server then puts X-Forwarded-For's here).
    address = request.client.host if request.client else "unknown"
    account = None if token.strip() else username.strip() or None
    try:
        started = limiter.attempt(account, address)
    except LoginLimitsUnavailable:
        # The shared counters cannot be read: refuse rather than let the guess through
        # uncounted (with the register down no password could be checked anyway).
        down = {"next": safe_next(next), "error": LOGIN_UNAVAILABLE, "username": username}
        unavailable = render(request, "login.html", down, user=None, status_code=503)
        unavailable.headers["Retry-After"] = str(UNAVAILABLE_RETRY_S)
        return unavailable
    if isinstance(started, Refusal):
        values = {
            "next": safe_next(next),
            "error": LOGIN_LOCKED_ONE_MINUTE if started.minutes == 1 else LOGIN_LOCKED,
            "error_values": {"minutes": started.minutes},
            "username": username,
        }
        refused = render(request, "login.html", values, user=None, status_code=429)
        refused.headers["Retry-After"] = str(math.ceil(started.retry_after_s))
        return refused
    plain: str | None = None
    language: str | None = None
    try:
        if token.strip():
            if valid_api_token(session, token) is not None:
                plain = token.strip()
        elif account is not None:
            user = authenticate_user(session, account, password)
            if user is not None:
                plain = start_session(session, user)
                language = user.language
    finally:
        # Whatever happens (a database error too), the attempt ends: its place is given
        # back on success, kept as a failure otherwise.
        if plain is not None:
            limiter.succeeded(started)
        else:
            # Give the register connection back first: on PostgreSQL counting the failure
            # takes one of its own, and a pool full of failing logins would wait for itself.
            with contextlib.suppress(SQLAlchemyError):
                session.rollback()
            limiter.failed(started, reason="bad_token" if token.strip() else "bad_password")
    if plain is None:
        values = {"next": safe_next(next), "error": LOGIN_FAILED, "username": username}
        return render(request, "login.html", values, user=None, status_code=401)
    response = RedirectResponse(safe_next(next), status_code=303)
    _set_session_cookie(request, response, plain)
    if language in LANGUAGES and LANGUAGE_COOKIE not in request.cookies:
        response.set_cookie(
            LANGUAGE_COOKIE, language, max_age=365 * 86400, path="/", samesite="lax"
        )
    return response


@router.post("/logout")
def logout(
    request: Request,
    session: DbSession,
    csrf_token: Annotated[str, Form()] = "",
) -> RedirectResponse:
    try:
        user = page_user(request, session)
    except LoginRequired:
        user = None
    if user is not None:
        check_csrf(request, user, csrf_token)
        end_session(session, request.cookies.get(SESSION_COOKIE))
    response = RedirectResponse("/ui/login", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="strict")
    return response


@router.get("/lang/{language}")
def switch_language(language: str, next: str | None = None) -> RedirectResponse:
    """A plain link (no form): changing the display language changes no data."""
    response = RedirectResponse(safe_next(next), status_code=303)
    if language in LANGUAGES:
        response.set_cookie(
            LANGUAGE_COOKIE, language, max_age=365 * 86400, path="/", samesite="lax"
        )
    return response
