"""The FastAPI application: routers by resource, OpenAPI at /openapi.json."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi_offline import FastAPIOffline
from sqlalchemy.exc import DataError

from campuswatch import __version__
from campuswatch.collector.api import admin, alerts, assets, devices, enrolment, health, sites
from campuswatch.collector.api.context import ApiContext
from campuswatch.collector.api.rejects import CountRejects, refuse_unstorable_value
from campuswatch.collector.api.request_guards import CheckCookieWriteOrigin, LimitRequestBody
from campuswatch.collector.web import mount as mount_ui

IMPORT_FORM_OVERHEAD = 64 * 1024


def create_app(context: ApiContext) -> FastAPI:
    # Swagger UI and ReDoc served from the package, not a CDN: many schools have no
    # Internet, and a security tool should not pull scripts from a third party anyway.
    app = FastAPIOffline(
        title="CampusWatch collector API",
        version=__version__,
        description="Sites, devices, the asset register, alerts and reports. "
        "Authenticate with `Authorization: Bearer <token>`.",
    )
    app.state.context = context
    for module in (health, sites, devices, assets, alerts, admin, enrolment):
        app.include_router(module.router)
    mount_ui(app)
    app.add_exception_handler(DataError, refuse_unstorable_value)
    # Added innermost first: CountRejects sees (and counts) the guards' 403s and 413s.
    app.add_middleware(CheckCookieWriteOrigin, public_url=context.settings.public_url)
    app.add_middleware(
        LimitRequestBody,
        default_limit=context.settings.max_request_body_bytes,
        route_limits={
            ("POST", "/api/v1/assets/import"): assets.MAX_IMPORT_BYTES,
            # The UI's upload is multipart: the file plus its form fields and boundaries.
            ("POST", "/ui/inventory/import"): assets.MAX_IMPORT_BYTES + IMPORT_FORM_OVERHEAD,
        },
    )
    app.add_middleware(CountRejects, counter=context.rejects)
    if context.registry is not None:
        context.rejects.expose_in(context.registry)
    return app
