"""The overview of plan targets, and the wall display that shows the same figures."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse

from campuswatch.collector.api.deps import Context, DbSession
from campuswatch.collector.web.auth import display_principal
from campuswatch.collector.web.deps import PageUser
from campuswatch.collector.web.overview import ALERT_LEVELS_HIGH_FIRST, build_overview
from campuswatch.collector.web.rendering import render
from campuswatch.wire.ids import utc_now

router = APIRouter(prefix="/ui")
WALL_REFRESH_S = 30


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
) -> HTMLResponse:
    """No login: office screens run unattended, so a display token in the URL opens it."""
    principal = display_principal(context, session, token)
    now = utc_now()
    overview = build_overview(session, context.liveness, principal, now)
    values = {
        "overview": overview,
        "levels": ALERT_LEVELS_HIGH_FIRST,
        "now": now,
        "refresh_s": WALL_REFRESH_S,
    }
    return render(request, "wall.html", values, user=None)
