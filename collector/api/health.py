from __future__ import annotations

from fastapi import APIRouter, Response, status
from fastapi.responses import PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text

from campuswatch.collector.api.deps import Context
from campuswatch.collector.api.schemas import Health

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=Health)
def healthz(context: Context, response: Response) -> Health:
    """Liveness and dependencies; 503 when any check fails (for load balancers)."""
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
    if not ok:
        response.status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    return Health(status="ok" if ok else "degraded", checks=checks)


@router.get("/metrics", response_class=PlainTextResponse, include_in_schema=False)
def metrics(context: Context) -> Response:
    if context.registry is None:
        return Response(status_code=status.HTTP_404_NOT_FOUND)
    return Response(generate_latest(context.registry), media_type=CONTENT_TYPE_LATEST)
