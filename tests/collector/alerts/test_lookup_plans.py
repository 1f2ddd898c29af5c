"""The alert manager finds a batch's current alerts through indexes, never by reading the
whole alerts table: a district keeps thousands of open and millions of resolved alerts, and
a lookup per signal that scans them made each new alert cost more than the last."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import Select, text
from sqlalchemy.dialects import sqlite

from campuswatch.collector.alerts.manager import latest_alerts_query, open_alerts_query
from campuswatch.collector.db.engine import make_engine, upgrade

FINGERPRINTS = ["fp-1", "fp-2", "fp-3"]


def sqlite_plan(tmp_path: Path, query: Select[Any]) -> list[str]:
    url = f"sqlite:///{tmp_path / 'register.db'}"
    upgrade(url)  # the migrated schema, as deployed
    engine = make_engine(url)
    compiled = query.compile(dialect=sqlite.dialect(), compile_kwargs={"literal_binds": True})
    try:
        with engine.connect() as connection:
            rows = connection.execute(text(f"EXPLAIN QUERY PLAN {compiled}")).all()
    finally:
        engine.dispose()
    return [row[-1] for row in rows]


def full_scans_of_alerts(plan: list[str]) -> list[str]:
    return [step for step in plan if step.startswith("SCAN alerts")]


def test_open_alerts_of_a_batch_are_found_by_index(tmp_path: Path) -> None:
    plan = sqlite_plan(tmp_path, open_alerts_query(FINGERPRINTS))
    assert not full_scans_of_alerts(plan), plan
    assert any("INDEX" in step for step in plan), plan


def test_latest_alerts_of_a_batch_are_found_by_index(tmp_path: Path) -> None:
    plan = sqlite_plan(tmp_path, latest_alerts_query(FINGERPRINTS))
    assert not full_scans_of_alerts(plan), plan
    assert any("ix_alerts_fingerprint_id" in step for step in plan), plan
