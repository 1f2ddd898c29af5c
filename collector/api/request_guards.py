"""Checks every request passes before any route, dependency or authentication sees it.

``LimitRequestBody``: a body larger than the route's limit is refused with 413. A declared
``Content-Length`` over the limit is refused before a byte is read; a chunked body is
counted as it streams and cut off where it crosses the limit. Why here and not in the
routes: dependencies run before authentication (``refuse_nul`` reads the body to look for
NUL), so an anonymous 200 MB PUT used to be held in memory whole before its 401.

``CheckCookieWriteOrigin``: a state-changing API request authenticated by the UI's session
cookie (not by a bearer header) must come from a page of this site: its ``Origin`` (or,
lacking it, ``Referer``) names the request's own host or the configured public URL. The
cookie is ``SameSite=Strict`` already; this is the second lock, for browsers and set-ups
(a sibling subdomain, an old browser) where SameSite does not hold. Bearer-token callers
are scripts, not browsers: a page on another origin cannot make a browser send them.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from http.cookies import CookieError, SimpleCookie
from typing import Final
from urllib.parse import urlsplit

from starlette.types import ASGIApp, Message, Receive, Scope, Send

SESSION_COOKIE: Final = "cw_token"
SAFE_METHODS: Final = frozenset({"GET", "HEAD", "OPTIONS"})


class _BodyTooLarge(Exception):
    """Raised from ``receive`` once the body crosses the limit; the middleware answers 413."""


async def _answer(send: Send, status: int, detail: str) -> None:
    body = json.dumps({"detail": detail}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                # The rest of a refused body is never read: the connection cannot be reused.
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return bytes(value).decode("latin-1")
    return None


class LimitRequestBody:
    """ASGI middleware: at most ``default_limit`` body bytes, or the route's own limit.

    ``route_limits`` maps ``(method, path)`` to a limit (the register imports take files).
    """

    def __init__(
        self, app: ASGIApp, *, default_limit: int, route_limits: Mapping[tuple[str, str], int]
    ) -> None:
        self.app = app
        self.default_limit = default_limit
        self.route_limits = dict(route_limits)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.route_limits.get((scope["method"], scope["path"]), self.default_limit)
        too_large = f"request body larger than {limit} bytes"
        declared = _header(scope, b"content-length")
        if declared is not None:
            if not declared.strip().isdigit():
                await _answer(send, 400, "invalid Content-Length")
                return
            if int(declared) > limit:
                await _answer(send, 413, too_large)
                return
        received = 0
        exceeded = False
        started = False

        async def counting_receive() -> Message:
            nonlocal received, exceeded
            if exceeded:
                raise _BodyTooLarge
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    exceeded = True
                    raise _BodyTooLarge
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                if started:
                    return
                started = True
                if exceeded:
                    # The route caught the read error (FastAPI turns a failed form parse
                    # into a 400): the answer is still "too large".
                    await _answer(send, 413, too_large)
                    return
            elif exceeded:
                return
            await send(message)

        try:
            await self.app(scope, counting_receive, guarded_send)
        except _BodyTooLarge:
            if not started:
                started = True
                await _answer(send, 413, too_large)


def _origin_of(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    return parts.scheme.lower(), parts.netloc.lower()


def same_origin(origin_or_referer: str, host: str | None, public_url: str | None) -> bool:
    """True when the Origin/Referer names this site: the request's own Host (any scheme: a
    TLS-terminating proxy makes the request plain HTTP) or the configured public URL."""
    scheme, netloc = _origin_of(origin_or_referer)
    if not netloc:
        return False
    if host and netloc == host.strip().lower():
        return True
    return public_url is not None and (scheme, netloc) == _origin_of(public_url)


def _bearer_presented(authorization: str | None) -> bool:
    """As FastAPI's HTTPBearer decides: a non-empty ``Bearer`` credential, else the cookie."""
    if not authorization:
        return False
    scheme, _, credentials = authorization.partition(" ")
    return scheme.lower() == "bearer" and bool(credentials.strip())


def _has_session_cookie(cookie_header: str | None) -> bool:
    if not cookie_header:
        return False
    cookies: SimpleCookie = SimpleCookie()
    try:
        cookies.load(cookie_header)
    except CookieError:
        return SESSION_COOKIE in cookie_header  # unparsable: assume the worst
    return SESSION_COOKIE in cookies


class CheckCookieWriteOrigin:
    """ASGI middleware: cookie-authenticated API writes must come from this site (403)."""

    def __init__(self, app: ASGIApp, *, public_url: str | None) -> None:
        self.app = app
        self.public_url = public_url

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] == "http"
            and scope["method"] not in SAFE_METHODS
            and scope["path"].startswith("/api/")
            and not _bearer_presented(_header(scope, b"authorization"))
            and _has_session_cookie(_header(scope, b"cookie"))
        ):
            origin = _header(scope, b"origin") or _header(scope, b"referer")
            if origin is None or not same_origin(origin, _header(scope, b"host"), self.public_url):
                await _answer(
                    send,
                    403,
                    "cross-origin request refused: a write authenticated by the session "
                    "cookie needs an Origin or Referer of this site (scripts: use a bearer token)",
                )
                return
        await self.app(scope, receive, send)
