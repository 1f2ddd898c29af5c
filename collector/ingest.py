"""Ingest: MQTT in, validated messages stored exactly once, then acknowledged.

The runner owns batching and durability; sinks only handle a batch inside one database
transaction (house style: small contract, the runner does the hard parts). A message is
acknowledged to the broker (paho manual ack) only after the batch that holds it is stored:
time-series points written or spooled on disk first, then the register transaction
committed. A collector killed mid-batch therefore loses nothing — the broker redelivers
what was not acked, and the ``processed_messages`` table makes the redelivery a no-op.
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
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self.sessions = sessions
        self.tsdb = tsdb
        self.sinks = list(sinks)
        self.stats = IngestStats()
        self.batch_size = batch_size
        self.batch_wait_s = batch_wait_s
        self.durable_timeout_s = durable_timeout_s
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
            if not batch:
                continue
            started = time.perf_counter()
            try:
                self.process(batch)
            except Exception:
                # Not acked: the broker redelivers after reconnect. Back off, then carry on.
                log.exception("ingest batch of %d failed; will be redelivered", len(batch))
                time.sleep(1.0)
                continue
            for message, _ in batch:
                self.connection.ack(message)
            self.stats.batches_total += 1
            self.stats.batch_seconds_total += time.perf_counter() - started
            self.stats.last_batch_at = time.time()

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
            self.stats.received_total += 1
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
                self.stats.rejected_total[rejection.reason] += 1
                log.warning("rejected %s: %s", message.topic[:200], rejection)
                add_dead_letter(
                    session,
                    topic=message.topic,
                    reason=rejection.reason,
                    detail=rejection.detail,
                    payload=message.payload,
                    received_at=received_at,
                )
            fresh = claim_messages(session, decoded)
            self.stats.duplicates_total += len(decoded) - len(fresh)
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
            for item in fresh:
                self.stats.messages_by_kind[kind_of(item.message)] += 1
            self.stats.stored_total += len(fresh)
        for work in context.after_commit:
            try:
                work()
            except Exception:
                self.stats.sink_errors_total["after_commit"] += 1
                log.exception("post-commit work failed for a batch of %d", len(fresh))
