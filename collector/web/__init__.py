"""The collector's web UI: server-rendered pages under /ui for staff and wall displays.

``mount(app)`` adds the pages, the static files and the ``/`` redirect to an app built by
``campuswatch.collector.api.app.create_app``; the pages call the same register, alert and
liveness functions the API routes call, in the same request-scoped database session.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final
from urllib.parse import quote

from fastapi import FastAPI, Request
from fastapi.responses import RedirectResponse
from fastapi.staticfiles import StaticFiles

from campuswatch.collector.web import (
    pages_admin,
    pages_alerts,
    pages_auth,
    pages_devices,
    pages_inventory,
    pages_overview,
    pages_reports,
)
from campuswatch.collector.web.auth import LoginRequired

STATIC_DIR: Final = Path(__file__).parent / "static"


def _to_login(request: Request, exc: Exception) -> RedirectResponse:
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return RedirectResponse(f"/ui/login?next={quote(target, safe='')}", status_code=303)


def mount(app: FastAPI) -> None:
    app.mount("/ui/static", StaticFiles(directory=STATIC_DIR), name="ui-static")
    for module in (
        pages_auth,
        pages_overview,
        pages_alerts,
        pages_inventory,
        pages_devices,
        pages_reports,
        pages_admin,
    ):
        app.include_router(module.router, include_in_schema=False)
    app.add_exception_handler(LoginRequired, _to_login)

    @app.get("/", include_in_schema=False)
    def root() -> RedirectResponse:
        return RedirectResponse("/ui/", status_code=307)
