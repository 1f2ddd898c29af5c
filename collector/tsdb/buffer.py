"""The runner between ingest and a time-series writer (Telegraf's output model).

``submit`` only appends to a bounded memory buffer; one background thread writes batches,
moves batches the store cannot take to an on-disk spool, retries with exponential back-off
and jitter, drains the spool when the store is back, and bisects batches the store rejects
so that one bad point costs one point, not a thousand.

Durability contract (what an ingest that acks MQTT after storage may rely on):
once ``flush()`` returns True, every point passed to ``submit`` before that call is in
exactly one of these states: written (the writer's ``write`` returned), in the spool
(a committed SQLite transaction with ``synchronous=FULL``), rejected by the store
(``points_rejected_total``), or dropped because memory and spool were both full or the
spool is disabled (``points_dropped_total``). Only the last two lose data, and both are
counted. ``write_durable`` is the same thing for one caller's points, with the outcome.
Spool delivery is at-least-once across a crash between a write and the chunk's removal;
InfluxDB and the SQLite store overwrite an identical sample, VictoriaMetrics needs
``-dedup.minScrapeInterval`` to collapse it.
"""

from __future__ import annotations

import bisect
import logging
import random
import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from campuswatch.collector.tsdb.base import TimeSeriesWriter, TsdbRejected, TsdbUnavailable
from campuswatch.collector.tsdb.points import Point
from campuswatch.collector.tsdb.spool import DiskSpool

log = logging.getLogger(__name__)

WRITE_LATENCY_BUCKETS_S: Final = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


@dataclass(frozen=True, slots=True)
class BufferStats:
    """A snapshot for export; counters only grow, gauges are current values."""

    points_submitted_total: int
    points_written_total: int
    points_dropped_total: int
    points_rejected_total: int
    write_errors_total: int
    buffer_depth: int
    spool_depth: int
    spool_bytes: int
    last_write_latency_s: float | None
    write_latency_sum_s: float
    write_latency_count: int
    write_latency_buckets: tuple[tuple[float, int], ...]
    """Cumulative ``(upper bound s, count)`` pairs, as a Prometheus histogram wants them."""


@dataclass(frozen=True, slots=True)
class DurableWrite:
    """A ``start_durable`` under way: the sequence to wait for, and the drop count then."""

    target: int
    dropped_before: int


class BufferedWriter:
    def __init__(
        self,
        writer: TimeSeriesWriter,
        *,
        spool_path: Path | None,
        batch_size: int = 1000,
        flush_interval_s: float = 1.0,
        max_buffer_points: int = 10_000,
        spool_max_bytes: int = 256 * 1024 * 1024,
        retry_initial_s: float = 0.5,
        retry_max_s: float = 60.0,
        rng: random.Random | None = None,
    ) -> None:
        """``spool_path`` None disables the spool: failed batches then wait in memory."""
        if batch_size < 1 or max_buffer_points < batch_size:
            raise ValueError("need 1 <= batch_size <= max_buffer_points")
        self._writer = writer
        self._batch_size = batch_size
        self._flush_interval_s = flush_interval_s
        self._max_buffer = max_buffer_points
        self._retry_initial_s = retry_initial_s
        self._retry_max_s = retry_max_s
        self._rng = rng or random.Random()
        self._spool = DiskSpool(spool_path, spool_max_bytes) if spool_path is not None else None

        self._cond = threading.Condition()
        self._buffer: deque[Point] = deque()
        self._next_seq = 0  # points ever submitted; the buffer holds the newest unsettled
        self._in_flight: list[int] = []  # first seqs of batches taken but not yet settled
        self._flush_target = 0
        self._next_flush_at = time.monotonic() + flush_interval_s
        self._backoff_s = 0.0
        self._retry_at = 0.0
        self._stopping = False

        self._written = 0
        self._dropped = 0
        self._rejected = 0
        self._errors = 0
        self._last_latency: float | None = None
        self._latency_sum = 0.0
        self._latency_count = 0
        self._latency_buckets = [0] * len(WRITE_LATENCY_BUCKETS_S)

        self._thread = threading.Thread(target=self._run, name="tsdb-buffer", daemon=True)
        self._thread.start()

    # --- public --------------------------------------------------------------------------

    def submit(self, points: Sequence[Point]) -> None:
        """Queue points; never blocks on the store. Over capacity, the oldest points move to
        the spool (or are dropped and counted when there is none or it is full)."""
        if not points:
            return
        overflow: list[Point] = []
        with self._cond:
            if self._stopping:
                self._dropped += len(points)
                return
            self._buffer.extend(points)
            self._next_seq += len(points)
            excess = len(self._buffer) - self._max_buffer
            if excess > 0:
                # Move at least a batch at a time so the spool gets chunks, not single points.
                count = max(excess, min(self._batch_size, len(self._buffer)))
                overflow = [self._buffer.popleft() for _ in range(count)]
                start_seq = self._next_seq - len(self._buffer) - count
                if self._spool is None:
                    self._dropped += count
                    overflow = []
                else:
                    self._in_flight.append(start_seq)
            self._cond.notify_all()
        if overflow:
            self._spool_points(overflow, start_seq)

    def flush(self, timeout_s: float | None = None) -> bool:
        """Block until every point submitted before this call is written, spooled, rejected
        or dropped (see the module docstring). False if ``timeout_s`` ran out first."""
        with self._cond:
            target = self._flush_from_here()
            return self._cond.wait_for(lambda: self._oldest_unsettled() >= target, timeout_s)

    def _flush_from_here(self) -> int:
        """Ask the writer for everything submitted so far; the sequence to wait for."""
        target = self._next_seq
        self._flush_target = max(self._flush_target, target)
        self._cond.notify_all()
        return target

    def write_durable(self, points: Sequence[Point], timeout_s: float | None = None) -> bool:
        """Submit and flush: True once the points are written or spooled, i.e. safe to ack,
        False if the flush timed out or any point submitted meanwhile was dropped."""
        return self.wait_durable(self.start_durable(points), timeout_s)

    def start_durable(self, points: Sequence[Point]) -> DurableWrite:
        """``write_durable`` in two halves: submit and ask for the flush now, wait with
        ``wait_durable`` later. The caller does its other work while the writer's thread
        writes (the ingest runs its sinks; the store's own calls release the GIL)."""
        with self._cond:
            dropped_before = self._dropped
        self.submit(points)
        with self._cond:
            return DurableWrite(self._flush_from_here(), dropped_before)

    def wait_durable(self, write: DurableWrite, timeout_s: float | None = None) -> bool:
        """True once ``write``'s points are written or spooled (safe to ack); False if
        ``timeout_s`` ran out or any point submitted since it started was dropped."""
        with self._cond:
            completed = self._cond.wait_for(
                lambda: self._oldest_unsettled() >= write.target, timeout_s
            )
            return completed and self._dropped == write.dropped_before

    def wait_until_drained(self, timeout_s: float | None = None) -> bool:
        """Block until memory and spool are both empty (the store has everything)."""
        with self._cond:
            self._flush_target = max(self._flush_target, self._next_seq)
            self._cond.notify_all()
            return self._cond.wait_for(
                lambda: (
                    not self._buffer
                    and not self._in_flight
                    and (self._spool is None or self._spool.depth == 0)
                ),
                timeout_s,
            )

    def stats(self) -> BufferStats:
        with self._cond:
            cumulative: list[tuple[float, int]] = []
            running = 0
            for bound, count in zip(WRITE_LATENCY_BUCKETS_S, self._latency_buckets, strict=True):
                running += count
                cumulative.append((bound, running))
            return BufferStats(
                points_submitted_total=self._next_seq,
                points_written_total=self._written,
                points_dropped_total=self._dropped,
                points_rejected_total=self._rejected,
                write_errors_total=self._errors,
                buffer_depth=len(self._buffer),
                spool_depth=self._spool.depth if self._spool else 0,
                spool_bytes=self._spool.size_bytes if self._spool else 0,
                last_write_latency_s=self._last_latency,
                write_latency_sum_s=self._latency_sum,
                write_latency_count=self._latency_count,
                write_latency_buckets=tuple(cumulative),
            )

    def close(self, timeout_s: float = 10.0) -> None:
        """Flush (to the store or the spool), stop the thread, close spool and writer."""
        self.flush(timeout_s)
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        self._thread.join(timeout_s)
        if self._spool is not None:
            self._spool.close()
        self._writer.close()

    # --- background thread ---------------------------------------------------------------

    def _oldest_unsettled(self) -> int:
        if self._in_flight:
            return min(self._in_flight)
        return self._next_seq - len(self._buffer)

    def _in_backoff(self, now: float) -> bool:
        return now < self._retry_at

    def _memory_ready(self, now: float) -> bool:
        if not self._buffer:
            return False
        if self._spool is None and self._in_backoff(now) and not self._stopping:
            return False  # nowhere to put a batch but back; wait for the retry time
        return (
            len(self._buffer) >= self._batch_size
            or now >= self._next_flush_at
            or self._oldest_unsettled() < self._flush_target
            or self._stopping
        )

    def _spool_ready(self, now: float) -> bool:
        return self._spool is not None and self._spool.depth > 0 and not self._in_backoff(now)

    def _run(self) -> None:
        while True:
            batch: list[Point] = []
            start_seq = 0
            with self._cond:
                while True:
                    now = time.monotonic()
                    if self._memory_ready(now) or self._spool_ready(now):
                        break
                    if self._stopping:
                        return
                    wakeups = [self._next_flush_at - now] if self._buffer else []
                    if (self._spool is not None and self._spool.depth > 0) or self._buffer:
                        wakeups.append(self._retry_at - now)
                    positive = [w for w in wakeups if w > 0]
                    self._cond.wait(min(positive) if positive else None)
                if self._memory_ready(now):
                    count = min(self._batch_size, len(self._buffer))
                    start_seq = self._next_seq - len(self._buffer)
                    batch = [self._buffer.popleft() for _ in range(count)]
                    self._in_flight.append(start_seq)
                    if len(self._buffer) < self._batch_size:
                        self._next_flush_at = now + self._flush_interval_s
                drain_spool = self._spool_ready(now)
            try:
                if batch:
                    self._handle_memory_batch(batch, start_seq)
                # One spool chunk per round: live data stays fresh while the backlog drains.
                if drain_spool:
                    self._drain_one_chunk()
            except Exception:  # the runner must outlive any bug below it
                log.exception("time-series buffer step failed")
                with self._cond:
                    self._schedule_retry()

    def _handle_memory_batch(self, batch: list[Point], start_seq: int) -> None:
        with self._cond:
            skip_write = self._in_backoff(time.monotonic()) and self._spool is not None
        pending = batch if skip_write else self._deliver(batch)
        if not pending:
            self._settle(start_seq)
        elif self._spool is not None:
            self._spool_points(pending, start_seq)
        else:
            with self._cond:
                # No spool: put the batch back in front; the oldest beyond capacity go.
                self._buffer.extendleft(reversed(pending))
                excess = len(self._buffer) - self._max_buffer
                for _ in range(max(0, excess)):
                    self._buffer.popleft()
                self._dropped += max(0, excess)
                self._in_flight.remove(start_seq)
                self._cond.notify_all()

    def _spool_points(self, points: list[Point], start_seq: int) -> None:
        assert self._spool is not None
        try:
            dropped = self._spool.append(points)
        except Exception:
            log.exception("could not spool %d points; dropping them", len(points))
            dropped = len(points)
        with self._cond:
            self._dropped += dropped
            self._in_flight.remove(start_seq)
            self._cond.notify_all()

    def _settle(self, start_seq: int) -> None:
        with self._cond:
            self._in_flight.remove(start_seq)
            self._cond.notify_all()

    def _drain_one_chunk(self) -> None:
        assert self._spool is not None
        oldest = self._spool.peek_oldest()
        if oldest is None:
            return
        chunk_id, points = oldest
        pending = self._deliver(points) if points else []
        if not pending:
            self._spool.remove(chunk_id)
        elif len(pending) < len(points):
            self._spool.replace(chunk_id, pending)
        with self._cond:
            self._cond.notify_all()

    def _deliver(self, points: Sequence[Point]) -> list[Point]:
        """Write ``points``; return those still pending because the store is unavailable.
        Rejected batches are bisected until the bad points are alone, then counted."""
        started = time.monotonic()
        try:
            self._writer.write(points)
        except TsdbUnavailable as error:
            with self._cond:
                self._errors += 1
                self._schedule_retry()
            log.warning("time-series store unavailable (%s); retrying with back-off", error)
            return list(points)
        except TsdbRejected as error:
            with self._cond:
                self._errors += 1
            if len(points) == 1:
                with self._cond:
                    self._rejected += 1
                log.warning("time-series store rejected a point %r: %s", points[0], error)
                return []
            middle = len(points) // 2
            left_pending = self._deliver(points[:middle])
            if left_pending:  # the store went away meanwhile: keep the rest for the retry
                return left_pending + list(points[middle:])
            return self._deliver(points[middle:])
        except Exception:
            # A writer bug must not lose the batch or wedge flush(): keep it and retry later.
            log.exception("time-series writer failed unexpectedly; batch kept for retry")
            with self._cond:
                self._errors += 1
                self._schedule_retry()
            return list(points)
        latency = time.monotonic() - started
        with self._cond:
            self._written += len(points)
            self._backoff_s = 0.0
            self._retry_at = 0.0
            self._last_latency = latency
            self._latency_sum += latency
            self._latency_count += 1
            index = bisect.bisect_left(WRITE_LATENCY_BUCKETS_S, latency)
            if index < len(self._latency_buckets):
                self._latency_buckets[index] += 1
        return []

    def _schedule_retry(self) -> None:
        """Exponential back-off with jitter; caller holds the lock."""
        self._backoff_s = min(self._retry_max_s, max(self._retry_initial_s, self._backoff_s * 2))
        # Jitter in [50 %, 100 %] so collectors that lost the store together don't return
        # together.
        self._retry_at = time.monotonic() + self._backoff_s * self._rng.uniform(0.5, 1.0)
