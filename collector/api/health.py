from __future__ import annotations

import hmac

from fastapi import APIRouter, Request, Response, status
from fastapi.responses import PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text

from campuswatch.collector.api.context import ApiContext
from campuswatch.collector.api.deps import Context
from campuswatch.collector.api.schemas import Health
from campuswatch.collector.register.assets import describe_site_cycle, find_site_cycles

router = APIRouter(tags=["health"])


def site_tree_check(context: ApiContext) -> tuple[bool, str]:
    """(sound, detail): cycles in the stored site tree, named, or "ok"."""
    try:
        with context.sessions() as session:
            cycles = find_site_cycles(session)
    except Exception as exc:  # reported like the database check, never raised
        return False, f"error: {type(exc).__name__}"
    if not cycles:
        return True, "ok"
    return False, "cycle: " + "; ".join(describe_site_cycle(cycle) for cycle in cycles)


@router.get("/healthz", response_model=Health)
def healthz(context: Context, response: Response) -> Health:
    """Liveness and dependencies; 503 when any check fails (for load balancers).

    A cycle in the site tree makes the status "degraded" and is named under ``site_tree``
    but keeps the 200: the collector still works (scoped queries stop at the cycle), and a
    503 from every collector sharing the register would take away the API that fixes it.
    """
    checks: dict[str, str] = {}
    ok = True
    try:
        with context.sessions() as session:
            session.execute(text("SELECT 1"))
        checks["database"] = "ok"
    except Exception as exc:  # the point of the endpoint is to report, not to raise
        ok = False
        checks["database"] = f"error: {type(exc).__name__}"
    for name, check in context.health_checks.items():
        healthy, detail = check()
        ok = ok and healthy
        checks[name] = detail
    sound = True
    if checks["database"] == "ok":
        sound, checks["site_tree"] = site_tree_check(context)
    if not ok:
        response.status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    return Health(status="ok" if ok and sound else "degraded", checks=checks)


@router.get("/metrics", response_class=PlainTextResponse, include_in_schema=False)
def metrics(context: Context, request: Request) -> Response:
    """Prometheus text; with ``metrics_token`` set, only for ``Bearer <that token>`` (the
    antivirus coverage per school is not for anyone who can reach the port)."""
    configured = context.settings.metrics_token
    if configured is not None:
        scheme, _, presented = request.headers.get("authorization", "").partition(" ")
        expected = configured.get_secret_value().encode("utf-8")
        if scheme.lower() != "bearer" or not hmac.compare_digest(
            presented.strip().encode("utf-8"), expected
        ):
            return PlainTextResponse(
                "a metrics token is required\n",
                status.HTTP_401_UNAUTHORIZED,
                headers={"WWW-Authenticate": "Bearer"},
            )
    if context.registry is None:
        return Response(status_code=status.HTTP_404_NOT_FOUND)
    return Response(generate_latest(context.registry), media_type=CONTENT_TYPE_LATEST)
