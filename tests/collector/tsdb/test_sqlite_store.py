from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from campuswatch.collector.tsdb.points import Point
from campuswatch.collector.tsdb.sqlite_store import SqliteStore

T0 = datetime(2024, 3, 1, tzinfo=UTC)
T0_MS = int(T0.timestamp() * 1000)
HOUR_MS = 3_600_000


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqliteStore]:
    store = SqliteStore(tmp_path / "ts.db", raw_retention_days=7, retention_days=30)
    yield store
    store.close()


def cpu(device: str, value: float, at: datetime, site: str = "s1") -> Point:
    return Point("campus_health", {"site": site, "device": device}, {"cpu_pct": value}, at)


def test_write_query_latest_with_tag_filter(store: SqliteStore) -> None:
    store.write([cpu("a", 1.0, T0), cpu("b", 50.0, T0), cpu("a", 3.0, T0 + timedelta(seconds=10))])
    assert store.query("campus_health", "cpu_pct", {"device": "a"}) == [
        (T0_MS, 1.0),
        (T0_MS + 10_000, 3.0),
    ]
    assert store.latest("campus_health", "cpu_pct", {"device": "a"}) == (T0_MS + 10_000, 3.0)
    assert store.latest("campus_health", "cpu_pct", {"device": "zz"}) is None
    assert store.latest("campus_health", "memory_pct") is None
    assert len(store.query("campus_health", "cpu_pct", {"site": "s1"})) == 3


def test_time_range_is_half_open(store: SqliteStore) -> None:
    store.write([cpu("a", float(i), T0 + timedelta(seconds=i)) for i in range(10)])
    rows = store.query(
        "campus_health", "cpu_pct", start=T0 + timedelta(seconds=2), end=T0 + timedelta(seconds=5)
    )
    assert [value for _, value in rows] == [2.0, 3.0, 4.0]


def test_rewriting_a_sample_does_not_duplicate_it(store: SqliteStore) -> None:
    store.write([cpu("a", 1.0, T0)])
    store.write([cpu("a", 2.0, T0)])  # a retried batch must not count twice
    assert store.query("campus_health", "cpu_pct") == [(T0_MS, 2.0)]


def test_bools_and_ints_stored_as_numbers(store: SqliteStore) -> None:
    store.write([Point("campus_state", {"site": "s", "device": "d"}, {"online": True}, T0)])
    assert store.latest("campus_state", "online") == (T0_MS, 1.0)


def test_step_averages_across_series_into_buckets(store: SqliteStore) -> None:
    store.write(
        [
            cpu("a", 10.0, T0),
            cpu("b", 20.0, T0 + timedelta(minutes=30)),
            cpu("a", 100.0, T0 + timedelta(hours=1, minutes=5)),
        ]
    )
    assert store.query("campus_health", "cpu_pct", step=timedelta(hours=1)) == [
        (T0_MS, 15.0),
        (T0_MS + HOUR_MS, 100.0),
    ]
    with pytest.raises(ValueError):
        store.query("campus_health", "cpu_pct", step=timedelta(0))


def test_maintain_rolls_old_raw_samples_into_hourly_averages(store: SqliteStore) -> None:
    old = [cpu("a", float(v), T0 + timedelta(minutes=10 * i)) for i, v in enumerate([1, 2, 3])]
    recent = cpu("a", 50.0, T0 + timedelta(days=9))
    store.write([*old, recent])
    result = store.maintain(now=T0 + timedelta(days=10))
    assert result.rolled_up_samples == 3
    assert store.query("campus_health", "cpu_pct") == [
        (T0_MS, 2.0),
        (T0_MS + 9 * 24 * HOUR_MS, 50.0),
    ]
    # A late sample for an hour already folded is merged, weighted by counts.
    store.write([cpu("a", 10.0, T0 + timedelta(minutes=50))])
    store.maintain(now=T0 + timedelta(days=10))
    assert store.query("campus_health", "cpu_pct", end=T0 + timedelta(days=1)) == [(T0_MS, 4.0)]
    assert store.latest("campus_health", "cpu_pct") == (T0_MS + 9 * 24 * HOUR_MS, 50.0)


def test_maintain_deletes_everything_past_retention(store: SqliteStore) -> None:
    store.write([cpu("a", 1.0, T0), cpu("a", 2.0, T0 + timedelta(days=35))])
    store.maintain(now=T0 + timedelta(days=20))  # folds the first into a rollup
    result = store.maintain(now=T0 + timedelta(days=36))
    assert result.deleted_rollups == 1
    assert store.query("campus_health", "cpu_pct") == [(T0_MS + 35 * 24 * HOUR_MS, 2.0)]


def test_reader_sees_writes_from_another_thread(store: SqliteStore) -> None:
    def writer() -> None:
        for i in range(20):
            store.write([cpu("a", float(j), T0 + timedelta(seconds=i * 50 + j)) for j in range(50)])

    thread = threading.Thread(target=writer)
    thread.start()
    counts = [len(store.query("campus_health", "cpu_pct")) for _ in range(20)]
    thread.join()
    assert counts == sorted(counts)  # readers never see a half-written batch go backwards
    assert len(store.query("campus_health", "cpu_pct")) == 1000


def test_reopening_keeps_data_and_series(tmp_path: Path) -> None:
    first = SqliteStore(tmp_path / "x.db")
    first.write([cpu("a", 1.0, T0)])
    first.close()
    second = SqliteStore(tmp_path / "x.db")
    second.write([cpu("a", 2.0, T0 + timedelta(seconds=1))])
    assert second.series("campus_health") == [("cpu_pct", {"device": "a", "site": "s1"})]
    assert len(second.query("campus_health", "cpu_pct")) == 2
    second.close()
