"""The overview of plan targets, and the wall display that shows the same figures."""

from __future__ import annotations

from typing import Annotated
from urllib.parse import urlencode

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse

from campuswatch.collector.api.deps import Context, DbSession
from campuswatch.collector.web.auth import display_principal
from campuswatch.collector.web.deps import PageUser
from campuswatch.collector.web.i18n import gettext_for
from campuswatch.collector.web.overview import ALERT_LEVELS_HIGH_FIRST, build_overview
from campuswatch.collector.web.rendering import render, request_language
from campuswatch.collector.web.wall import (
    POLL_RANGE_S,
    ROTATE_RANGE_S,
    WALL_POLL_S,
    WALL_ROTATE_S,
    bounded,
    wall_data,
)
from campuswatch.wire.ids import utc_now

router = APIRouter(prefix="/ui")


@router.get("/", response_class=HTMLResponse)
def overview_page(
    request: Request, session: DbSession, context: Context, user: PageUser
) -> HTMLResponse:
    now = utc_now()
    overview = build_overview(session, context.liveness, user.principal, now)
    values = {
        "overview": overview,
        "levels": ALERT_LEVELS_HIGH_FIRST,
        "now": now,
        "nav": "overview",
    }
    return render(request, "overview.html", values, user=user)


@router.get("/wall", response_class=HTMLResponse)
def wall_page(
    request: Request,
    session: DbSession,
    context: Context,
    token: Annotated[str | None, Query(max_length=256)] = None,
    poll: Annotated[float | None, Query(gt=0, le=3600)] = None,
    rotate: Annotated[float | None, Query(gt=0, le=3600)] = None,
) -> HTMLResponse:
    """No login: office screens run unattended, so a display token in the URL opens it.

    The page is rendered once; its script then fetches ``/ui/wall/data`` every ``poll``
    seconds and updates the screen in place (a reload would flash, and a failed reload
    would replace the screen with the browser's error page)."""
    principal = display_principal(context, session, token)
    now = utc_now()
    overview = build_overview(session, context.liveness, principal, now)
    language = request_language(request)
    values = {
        "wall": wall_data(overview, gettext_for(language), language, now),
        "poll_s": bounded(poll, WALL_POLL_S, POLL_RANGE_S),
        "rotate_s": bounded(rotate, WALL_ROTATE_S, ROTATE_RANGE_S),
        "data_url": "/ui/wall/data?" + urlencode({"token": token or ""}),
    }
    return render(request, "wall.html", values, user=None)


@router.get("/wall/data")
def wall_data_json(
    request: Request,
    session: DbSession,
    context: Context,
    token: Annotated[str | None, Query(max_length=256)] = None,
) -> JSONResponse:
    """The wall's figures as texts in the page's language (same token rule as the page)."""
    principal = display_principal(context, session, token)
    now = utc_now()
    overview = build_overview(session, context.liveness, principal, now)
    language = request_language(request)
    return JSONResponse(
        wall_data(overview, gettext_for(language), language, now),
        headers={"Cache-Control": "no-store", "Content-Language": language},
    )
