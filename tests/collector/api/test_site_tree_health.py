"""A cycle already in the register is reported when the collector starts and on /healthz
until someone breaks it through the API (issue 13, item 4)."""

from __future__ import annotations

import logging

import pytest
from sqlalchemy import update

from campuswatch.collector.db.engine import make_engine, session_factory, upgrade
from campuswatch.collector.db.models import Site
from tests.collector.conftest import CollectorFactory


def _register_with_a_cycle(db_url: str) -> None:
    upgrade(db_url)
    engine = make_engine(db_url)
    with session_factory(engine)() as session:
        for site_id, parent_id in (("hn", None), ("hn-bd", "hn"), ("bd-a", "hn-bd")):
            session.add(Site(id=site_id, parent_id=parent_id, level="school", name=site_id))
            session.flush()
        session.execute(update(Site).where(Site.id == "hn").values(parent_id="bd-a"))
        session.commit()
    engine.dispose()


def test_a_stored_cycle_is_logged_at_start_and_named_on_healthz(
    db_url: str, collector_factory: CollectorFactory, caplog: pytest.LogCaptureFixture
) -> None:
    _register_with_a_cycle(db_url)
    with caplog.at_level(logging.ERROR, logger="campuswatch.collector.service"):
        collector = collector_factory(db=db_url)
    named = "bd-a → hn-bd → hn → bd-a"
    assert any(named in record.getMessage() for record in caplog.records), caplog.text

    health = collector.api.get("/healthz")
    # Degraded, but not 503: the API that fixes the tree must stay in the load balancer.
    assert health.status_code == 200
    assert health.json()["status"] == "degraded"
    assert health.json()["checks"]["site_tree"] == f"cycle: {named}"

    fixed = collector.api.put(
        "/api/v1/sites/hn", json={"id": "hn", "level": "province", "name": "Hà Nội"}
    )
    assert fixed.status_code == 200, fixed.text
    health = collector.api.get("/healthz").json()
    assert health["checks"]["site_tree"] == "ok"
    assert health["status"] == "ok"
