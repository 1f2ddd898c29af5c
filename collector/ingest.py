"""Ingest: MQTT in, validated messages stored exactly once, then acknowledged.

The runner owns batching and durability; sinks only handle a batch inside one database
transaction (house style: small contract, the runner does the hard parts). A message is
acknowledged to the broker (paho manual ack) only after the batch that holds it is stored:
time-series points written or spooled on disk first, then the register transaction
committed. A collector killed mid-batch therefore loses nothing — the broker redelivers
what was not acked, and the ``processed_messages`` table makes the redelivery a no-op.

A batch that cannot be stored (the database restarting) is kept and tried again with
back-off until it is stored, never dropped: MQTT redelivers an unacknowledged message only
when the client reconnects, and the broker stops sending once its in-flight window is full,
so a dropped batch would be missing until a restart and would soon stall ingest altogether.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from sqlalchemy.orm import Session, sessionmaker

from campuswatch.collector.db.housekeeping import add_dead_letter, claim_messages
from campuswatch.collector.register.assets import AssetChange
from campuswatch.collector.tsdb.buffer import BufferedWriter
from campuswatch.collector.tsdb.points import points_from_message
from campuswatch.wire.codec import DecodedMessage, WireRejection, decode_message
from campuswatch.wire.ids import utc_now
from campuswatch.wire.messages import kind_of
from campuswatch.wire.mqtt import MqttConnection, ReceivedMessage

log = logging.getLogger(__name__)


@dataclass(slots=True)
class BatchContext:
    """What earlier sinks learned about a batch, for later ones (e.g. rules need the
    register's verdict on discovered hosts)."""

    asset_changes: dict[str, list[AssetChange]] = field(default_factory=dict)
    """message id → what the register changed because of it."""
    after_commit: list[Callable[[], None]] = field(default_factory=list)
    """Work that must wait for the batch to be committed (e.g. alert transactions, which on
    SQLite could not take the write lock while the batch holds it)."""


class BatchSink(Protocol):
    """Acts on fresh (never seen) messages inside the batch transaction, in sink order."""

    name: str

    def handle(
        self, session: Session, batch: Sequence[DecodedMessage], context: BatchContext
    ) -> None: ...


@dataclass(slots=True)
class IngestStats:
    received_total: int = 0
    stored_total: int = 0
    duplicates_total: int = 0
    rejected_total: Counter[str] = field(default_factory=Counter)
    sink_errors_total: Counter[str] = field(default_factory=Counter)
    batches_total: int = 0
    batch_seconds_total: float = 0.0
    last_batch_at: float | None = None
    messages_by_kind: Counter[str] = field(default_factory=Counter)
    store_failures_total: int = 0
    """Attempts to store a batch that failed; the batch is tried again, not dropped."""
    failing_since: float | None = None
    """Wall time of the first failed attempt on the batch being retried; None when storing works."""
    last_error: str | None = None


class Ingestor:
    def __init__(
        self,
        connection_factory: Callable[[Callable[[ReceivedMessage], None]], MqttConnection],
        sessions: sessionmaker[Session],
        tsdb: BufferedWriter,
        sinks: Sequence[BatchSink],
        *,
        topic_filter: str,
        batch_size: int = 500,
        batch_wait_s: float = 0.05,
        max_pending: int = 50_000,
        durable_timeout_s: float = 60.0,
        retry_initial_s: float = 0.5,
        retry_max_s: float = 5.0,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self.sessions = sessions
        self.tsdb = tsdb
        self.sinks = list(sinks)
        self.stats = IngestStats()
        self.batch_size = batch_size
        self.batch_wait_s = batch_wait_s
        self.durable_timeout_s = durable_timeout_s
        self.retry_initial_s = retry_initial_s
        self.retry_max_s = retry_max_s
        self._clock = clock
        # Bounded: when the database is slow the broker keeps the rest (we stop acking).
        self._pending: queue.Queue[tuple[ReceivedMessage, datetime]] = queue.Queue(max_pending)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="ingest", daemon=True)
        self.connection = connection_factory(self._on_message)
        self.connection.subscribe(topic_filter, qos=1)

    def start(self) -> None:
        self._thread.start()
        self.connection.start()

    def stop(self, timeout_s: float = 10.0) -> None:
        self.connection.stop()
        self._stop.set()
        self._thread.join(timeout_s)

    @property
    def pending(self) -> int:
        return self._pending.qsize()

    def _on_message(self, message: ReceivedMessage) -> None:
        # Runs on paho's thread: only hand over. Blocking here when full applies back-pressure.
        self._pending.put((message, self._clock()))

    def _run(self) -> None:
        while not self._stop.is_set():
            batch = self._take_batch()
            if batch and self._store(batch):
                for message, _ in batch:
                    self.connection.ack(message)

    def _store(self, batch: Sequence[tuple[ReceivedMessage, datetime]]) -> bool:
        """Store ``batch``, trying again with back-off until it is stored (True) or the runner
        stops (False: nothing acked, the broker redelivers it to the next run)."""
        delay = self.retry_initial_s
        while True:
            started = time.perf_counter()
            try:
                self.process(batch)
            except Exception as exc:
                stats = self.stats
                stats.store_failures_total += 1
                stats.last_error = _describe(exc)
                if stats.failing_since is None:
                    stats.failing_since = time.time()
                    log.exception("storing a batch of %d failed; retrying until stored", len(batch))
                else:
                    log.warning(
                        "storing a batch of %d failed again: %s", len(batch), stats.last_error
                    )
                if self._stop.wait(delay):
                    return False
                delay = min(delay * 2, self.retry_max_s)
                continue
            stats = self.stats
            if stats.failing_since is not None:
                log.warning("storing works again after %.0f s", time.time() - stats.failing_since)
                stats.failing_since = None
                stats.last_error = None
            stats.batches_total += 1
            stats.batch_seconds_total += time.perf_counter() - started
            stats.last_batch_at = time.time()
            return True

    def _take_batch(self) -> list[tuple[ReceivedMessage, datetime]]:
        try:
            first = self._pending.get(timeout=0.5)
        except queue.Empty:
            return []
        batch = [first]
        deadline = time.monotonic() + self.batch_wait_s
        while len(batch) < self.batch_size:
            remaining = deadline - time.monotonic()
            try:
                batch.append(
                    self._pending.get(timeout=remaining)
                    if remaining > 0
                    else self._pending.get_nowait()
                )
            except queue.Empty:
                break
        return batch

    def process(self, batch: Sequence[tuple[ReceivedMessage, datetime]]) -> None:
        """Store one batch durably. Public so tests and the benchmark can drive it directly."""
        decoded: list[DecodedMessage] = []
        rejects: list[tuple[ReceivedMessage, datetime, WireRejection]] = []
        for message, received_at in batch:
            if message.topic.endswith("/cmd"):
                continue  # our own commands to devices, seen because we subscribe to cw/v1/#
            try:
                decoded.append(
                    decode_message(message.topic, message.payload, received_at=received_at)
                )
            except WireRejection as exc:
                rejects.append((message, received_at, exc))
        with self.sessions() as session, session.begin():
            for message, received_at, rejection in rejects:
                add_dead_letter(
                    session,
                    topic=message.topic,
                    reason=rejection.reason,
                    detail=rejection.detail,
                    payload=message.payload,
                    received_at=received_at,
                )
            fresh = claim_messages(session, decoded)
            points = [
                point
                for item in fresh
                for point in points_from_message(item.message, item.received_at)
            ]
            # Points first: if the transaction below fails, a redelivery rewrites the same
            # points (same series and timestamp), which the stores treat as one sample.
            if points and not self.tsdb.write_durable(points, self.durable_timeout_s):
                log.warning("time-series buffer dropped points or timed out; see metrics")
            context = BatchContext()
            for sink in self.sinks:
                try:
                    with session.begin_nested():
                        sink.handle(session, fresh, context)
                except Exception:
                    self.stats.sink_errors_total[sink.name] += 1
                    log.exception("sink %s failed on a batch of %d", sink.name, len(fresh))
        # Counted once committed: a batch that failed is tried again and must not count twice.
        stats = self.stats
        stats.received_total += len(batch)
        for message, _, rejection in rejects:
            stats.rejected_total[rejection.reason] += 1
            log.warning("rejected %s: %s", message.topic[:200], rejection)
        stats.duplicates_total += len(decoded) - len(fresh)
        for item in fresh:
            stats.messages_by_kind[kind_of(item.message)] += 1
        stats.stored_total += len(fresh)
        for work in context.after_commit:
            try:
                work()
            except Exception:
                self.stats.sink_errors_total["after_commit"] += 1
                log.exception("post-commit work failed for a batch of %d", len(fresh))


def _describe(exc: BaseException) -> str:
    """One line for health checks: the driver's message, without SQL and parameters."""
    cause = getattr(exc, "orig", None) or exc
    lines = str(cause).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0] if lines else ''}"[:300]
