"""The embedded SQLite time-series store is pruned by the running collector, as configured."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from pydantic import ValidationError

from campuswatch.collector.settings import CollectorSettings
from campuswatch.collector.tsdb.points import Point
from campuswatch.collector.tsdb.sqlite_store import SqliteStore
from campuswatch.wire.ids import utc_now
from tests.collector.conftest import CollectorFactory


def _cpu(days_ago: float) -> Point:
    at = utc_now() - timedelta(days=days_ago)
    return Point("campus_health", {"site": "s1", "device": "pc-1"}, {"cpu_pct": days_ago}, at)


def test_housekeeping_folds_and_deletes_old_samples_of_the_embedded_store(
    collector_factory: CollectorFactory,
) -> None:
    # The loop's own pass is 5 min away: the explicit call below is the one under test.
    service = collector_factory(
        tsdb_raw_retention_days=7, tsdb_retention_days=60, housekeeping_interval_s=300
    ).service
    store = service.timeseries_writer
    assert isinstance(store, SqliteStore)
    store.write([_cpu(90), _cpu(30), _cpu(1)])
    service.housekeeping()
    values = [value for _, value in store.query("campus_health", "cpu_pct")]
    # 90 days: past retention, gone; 30 days: an hourly average; 1 day: raw.
    assert values == [30.0, 1.0]
    raw = store._writer.execute("SELECT COUNT(*) FROM samples").fetchone()[0]
    assert raw == 1


def test_raw_retention_longer_than_retention_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="tsdb_raw_retention_days"):
        CollectorSettings(data_dir=tmp_path, tsdb_raw_retention_days=30, tsdb_retention_days=7)
