"""Requests the API refuses (4xx): counted by route template, method and status.

A pure ASGI middleware reads the status of every answer and the route FastAPI matched; the
counts are exported at scrape time as ``campuswatch_api_rejected_total``. The route label
is the template (``/api/v1/assets/{asset_id}``), never the raw path, so a scan of random
URLs adds one series (``route="unmatched"``), not one per URL; odd methods are ``other``.

``refuse_unstorable_value`` is the safety net behind the routes' own validation: a value the
database refuses (NUL in text, a number out of range) is the client's, so it gets a 422,
not a 500.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from collections.abc import Iterator
from typing import Any

from fastapi import Request, status
from fastapi.responses import JSONResponse
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry
from sqlalchemy.exc import DataError
from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger(__name__)

UNMATCHED = "unmatched"
"""The route label of a request no route matched (unknown path, static files)."""
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
"""Method labels as sent; any other method (a scanner's ``FOO``) is counted as ``other``."""


class RejectCounter(Collector):
    """The counts, shared by the middleware (writes) and the metrics registry (reads)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: Counter[tuple[str, str, str]] = Counter()
        self._registries: list[CollectorRegistry] = []

    def count(self, route: str, method: str, status: int) -> None:
        with self._lock:
            self._counts[(route, method, str(status))] += 1

    def counts(self) -> dict[tuple[str, str, str], int]:
        """``{(route, method, status): count}``, a copy."""
        with self._lock:
            return dict(self._counts)

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily(
            "campuswatch_api_rejected",
            "API requests refused with a 4xx status, by route template, method and status",
            labels=["route", "method", "status"],
        )
        for labels, value in sorted(self.counts().items()):
            family.add_metric(list(labels), value)
        yield family

    def expose_in(self, registry: CollectorRegistry) -> None:
        """Register once per registry, however many apps are built on one context."""
        if not any(known is registry for known in self._registries):
            registry.register(self)
            self._registries.append(registry)


class CountRejects:
    """ASGI middleware: count every 4xx answer in ``counter``."""

    def __init__(self, app: ASGIApp, counter: RejectCounter) -> None:
        self.app = app
        self.counter = counter

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_counting(message: Message) -> None:
            if message["type"] == "http.response.start" and 400 <= message["status"] < 500:
                method = scope["method"] if scope["method"] in METHODS else "other"
                self.counter.count(route_template(scope), method, message["status"])
            await send(message)

        await self.app(scope, receive, send_counting)


def route_template(scope: Scope) -> str:
    """The path template of the route the router matched (it records it in the scope)."""
    route: Any = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else UNMATCHED


async def refuse_unstorable_value(request: Request, exc: Exception) -> JSONResponse:
    """Exception handler for ``DataError``: the database refused a value of the request."""
    assert isinstance(exc, DataError)
    reason = str(exc.orig).splitlines()[0] if exc.orig is not None else "data error"
    route = route_template(request.scope)
    log.warning("%s %s: the database refused a value: %s", request.method, route, reason)
    return JSONResponse(
        {"detail": "a value cannot be stored or compared (out of range or NUL in text)"},
        status.HTTP_422_UNPROCESSABLE_CONTENT,
    )
