from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from campuswatch.collector.tsdb.base import TsdbRejected, TsdbUnavailable
from campuswatch.collector.tsdb.buffer import BufferedWriter
from campuswatch.collector.tsdb.points import Point
from campuswatch.collector.tsdb.spool import DiskSpool

T0 = datetime(2024, 3, 1, tzinfo=UTC)
WAIT_S = 30.0  # generous ceiling for waits; tests never assert on elapsed time


class FakeStore:
    """A writer that can be down and that refuses points whose field value is negative."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.written: list[Point] = []
        self.down = False
        self.calls = 0
        self.closed = False

    def write(self, points: Sequence[Point]) -> None:
        with self.lock:
            self.calls += 1
            if self.down:
                raise TsdbUnavailable("down")
            if any(value < 0 for p in points for value in p.fields.values()):
                raise TsdbRejected("negative")
            self.written.extend(points)

    def close(self) -> None:
        self.closed = True

    def values(self) -> list[float]:
        with self.lock:
            return [float(p.fields["v"]) for p in self.written]


def make_points(start: int, count: int) -> list[Point]:
    return [
        Point("m", {"site": "s", "device": "d"}, {"v": i}, T0 + timedelta(seconds=i))
        for i in range(start, start + count)
    ]


@pytest.fixture
def store() -> FakeStore:
    return FakeStore()


@pytest.fixture
def buffered(store: FakeStore, tmp_path: Path) -> Iterator[BufferedWriter]:
    writer = BufferedWriter(
        store,
        spool_path=tmp_path / "spool.db",
        batch_size=10,
        flush_interval_s=0.05,
        max_buffer_points=50,
        retry_initial_s=0.01,
        retry_max_s=0.05,
    )
    yield writer
    writer.close()


def test_points_are_written_in_batches(buffered: BufferedWriter, store: FakeStore) -> None:
    buffered.submit(make_points(0, 35))
    assert buffered.flush(WAIT_S)
    assert store.values() == [float(i) for i in range(35)]
    stats = buffered.stats()
    assert stats.points_written_total == 35
    assert stats.buffer_depth == 0
    assert stats.write_latency_count >= 4  # batches of at most 10
    assert stats.write_latency_buckets[-1][1] <= stats.write_latency_count


def test_outage_spools_then_drains_everything_once(
    buffered: BufferedWriter, store: FakeStore
) -> None:
    store.down = True
    for start in range(0, 200, 20):
        buffered.submit(make_points(start, 20))
    assert buffered.flush(WAIT_S)  # returns during the outage: points are on disk
    stats = buffered.stats()
    assert stats.spool_depth + stats.points_written_total == 200
    assert stats.write_errors_total >= 1
    store.down = False
    assert buffered.wait_until_drained(WAIT_S)
    assert sorted(store.values()) == [float(i) for i in range(200)]
    assert buffered.stats().points_dropped_total == 0


def test_rejected_points_are_isolated_and_counted(
    buffered: BufferedWriter, store: FakeStore
) -> None:
    points = make_points(0, 10)
    bad = Point("m", {"site": "s", "device": "d"}, {"v": -1}, T0)
    buffered.submit([*points[1:5], bad, *points[5:]])
    assert buffered.flush(WAIT_S)
    assert sorted(store.values()) == [float(i) for i in range(1, 10)]
    assert buffered.stats().points_rejected_total == 1


def test_spool_survives_a_restart(store: FakeStore, tmp_path: Path) -> None:
    store.down = True
    first = BufferedWriter(store, spool_path=tmp_path / "spool.db", flush_interval_s=0.01)
    first.submit(make_points(0, 30))
    first.close()
    assert store.written == []
    store.down = False
    second = BufferedWriter(store, spool_path=tmp_path / "spool.db", flush_interval_s=0.01)
    assert second.wait_until_drained(WAIT_S)
    second.close()
    assert sorted(store.values()) == [float(i) for i in range(30)]
    assert store.closed


def test_without_spool_memory_is_bounded_and_drops_oldest(store: FakeStore) -> None:
    store.down = True
    writer = BufferedWriter(
        store,
        spool_path=None,
        batch_size=10,
        max_buffer_points=20,
        flush_interval_s=0.01,
        retry_initial_s=0.01,
        retry_max_s=0.02,
    )
    writer.submit(make_points(0, 50))
    assert writer.stats().buffer_depth <= 20
    store.down = False
    assert writer.wait_until_drained(WAIT_S)
    writer.close()
    stats = writer.stats()
    assert stats.points_dropped_total == 30
    assert sorted(store.values()) == [float(i) for i in range(30, 50)]


def test_overflow_goes_to_spool_not_lost(buffered: BufferedWriter, store: FakeStore) -> None:
    store.down = True
    buffered.submit(make_points(0, 500))  # far above max_buffer_points=50
    assert buffered.stats().buffer_depth <= 50
    assert buffered.flush(WAIT_S)
    store.down = False
    assert buffered.wait_until_drained(WAIT_S)
    assert sorted(store.values()) == [float(i) for i in range(500)]


def test_full_spool_drops_oldest_chunks_and_counts(tmp_path: Path) -> None:
    spool = DiskSpool(tmp_path / "s.db", max_bytes=2000)
    dropped = sum(spool.append(make_points(i * 10, 10)) for i in range(20))
    assert dropped > 0
    assert spool.size_bytes <= 2000
    assert dropped + spool.depth == 200
    oldest = spool.peek_oldest()
    assert oldest is not None
    assert oldest[1][0].fields == {"v": dropped}  # FIFO: the newest survived
    assert oldest[1][0].time == T0 + timedelta(seconds=dropped)
    spool.close()


def test_write_durable_reports_success(buffered: BufferedWriter, store: FakeStore) -> None:
    assert buffered.write_durable(make_points(0, 3), WAIT_S)
    assert store.values() == [0.0, 1.0, 2.0]


def test_concurrent_submitters(buffered: BufferedWriter, store: FakeStore) -> None:
    threads = [
        threading.Thread(target=lambda s=s: buffered.submit(make_points(s * 100, 100)))
        for s in range(8)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert buffered.wait_until_drained(WAIT_S)
    assert sorted(store.values()) == [float(i) for i in range(800)]


def test_invalid_sizes_rejected(store: FakeStore) -> None:
    with pytest.raises(ValueError):
        BufferedWriter(store, spool_path=None, batch_size=100, max_buffer_points=10)


def test_writer_bug_keeps_the_batch_for_retry(tmp_path: Path) -> None:
    class FlakyStore(FakeStore):
        def write(self, points: Sequence[Point]) -> None:
            if self.calls == 0:
                self.calls += 1
                raise RuntimeError("bug in a writer")
            super().write(points)

    store = FlakyStore()
    writer = BufferedWriter(
        store, spool_path=tmp_path / "s.db", flush_interval_s=0.01, retry_initial_s=0.01
    )
    writer.submit(make_points(0, 5))
    assert writer.wait_until_drained(WAIT_S)
    writer.close()
    assert store.values() == [0.0, 1.0, 2.0, 3.0, 4.0]
    assert writer.stats().write_errors_total == 1
