"""The FastAPI application: routers by resource, OpenAPI at /openapi.json."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi_offline import FastAPIOffline
from sqlalchemy.exc import DataError

from campuswatch import __version__
from campuswatch.collector.api import admin, alerts, assets, devices, enrolment, health, sites
from campuswatch.collector.api.context import ApiContext
from campuswatch.collector.api.rejects import CountRejects, refuse_unstorable_value
from campuswatch.collector.web import mount as mount_ui


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
    app.add_middleware(CountRejects, counter=context.rejects)
    if context.registry is not None:
        context.rejects.expose_in(context.registry)
    return app
