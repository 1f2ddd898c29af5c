"""Refused requests are counted by route template, and a value the database refuses is
the client's fault (422), not a crash."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import Engine, select
from sqlalchemy.exc import DataError

from campuswatch.collector.api.app import create_app
from campuswatch.collector.api.rejects import UNMATCHED, refuse_unstorable_value
from campuswatch.collector.db.engine import make_engine, session_factory, upgrade
from campuswatch.collector.db.models import Site
from tests.collector.conftest import RunningCollector


def rejected(collector: RunningCollector) -> dict[tuple[str, str, str], float]:
    text = collector.api.get("/metrics").text
    family = next(
        f for f in text_string_to_metric_families(text) if f.name == "campuswatch_api_rejected"
    )
    return {
        (s.labels["route"], s.labels["method"], s.labels["status"]): s.value
        for s in family.samples
        if s.name == "campuswatch_api_rejected_total"
    }


def test_refusals_are_counted_by_route_template_method_and_status(
    collector: RunningCollector,
) -> None:
    api = collector.api
    assert api.get("/api/v1/devices/pc-404").status_code == 404
    assert api.get("/api/v1/devices/pc-405").status_code == 404
    assert api.get("/api/v1/assets/not-a-number").status_code == 422
    assert api.get("/api/v1/sites", headers={"Authorization": "Bearer nope"}).status_code == 401
    assert api.get("/no/such/page").status_code == 404
    assert api.request("BREW", "/api/v1/sites").status_code == 405
    assert api.get("/api/v1/sites").status_code == 200

    assert rejected(collector) == {
        ("/api/v1/devices/{device_id}", "GET", "404"): 2,
        ("/api/v1/assets/{asset_id}", "GET", "422"): 1,
        ("/api/v1/sites", "GET", "401"): 1,
        (UNMATCHED, "GET", "404"): 1,
        ("/api/v1/sites", "other", "405"): 1,
    }


def test_an_app_built_twice_on_one_context_exports_the_counter_once(
    collector: RunningCollector,
) -> None:
    second = TestClient(create_app(collector.service.api_context))
    assert second.get("/api/v1/tokens").status_code == 401
    text = collector.api.get("/metrics").text
    assert text.count("# TYPE campuswatch_api_rejected_total counter") == 1
    assert rejected(collector) == {("/api/v1/tokens", "GET", "401"): 1}


@pytest.fixture
def register(db_url: str) -> Iterator[Engine]:
    upgrade(db_url)
    engine = make_engine(db_url)
    yield engine
    engine.dispose()


def test_a_value_the_database_refuses_is_a_422(register: Engine) -> None:
    """The safety net behind the routes' own checks; only PostgreSQL refuses these."""
    sessions = session_factory(register)
    app = FastAPI()
    app.add_exception_handler(DataError, refuse_unstorable_value)

    @app.get("/sites/{site_id}")
    def site(site_id: str) -> list[str]:
        with sessions() as session:
            return list(session.scalars(select(Site.id).where(Site.id == site_id)))

    client = TestClient(app)
    response = client.get("/sites/a%00b")
    if register.dialect.name == "sqlite":
        assert response.status_code == 200  # stored and compared as any other character
    else:
        assert response.status_code == 422, response.text
        assert "NUL" in response.json()["detail"]
