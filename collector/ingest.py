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

That makes telling the store's fault from a message's fault essential: a message that
fails its batch every time, retried like an outage, stalls ingest for every school (and
again after each restart, as the broker redelivers it). So a batch that fails while the
store answers is split in halves until the failing message stands alone; that message is
dead-lettered with the reason, counted, and acknowledged, the rest stored. Likewise a sink
that fails on a batch is run again on halves of it, so only the message it cannot handle
misses that sink (dead-lettered as ``sink_error``), and the other sinks still handle it.
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
from typing import Final, Protocol

from sqlalchemy import exc as sa_exc
from sqlalchemy import text
from sqlalchemy.orm import Session, sessionmaker

from campuswatch.collector.db.housekeeping import add_dead_letter, claim_messages
from campuswatch.collector.register.assets import AssetChange
from campuswatch.collector.tsdb.buffer import BufferedWriter
from campuswatch.collector.tsdb.points import points_from_message
from campuswatch.wire.codec import REJECT_REASONS, DecodedMessage, WireRejection, decode_message
from campuswatch.wire.ids import utc_now
from campuswatch.wire.messages import kind_of
from campuswatch.wire.mqtt import MqttConnection, ReceivedMessage

log = logging.getLogger(__name__)

STORE_ERROR: Final = "store_error"
"""Reject reason of a message that failed its batch on its own (isolated by splitting)."""
SINK_ERROR: Final = "sink_error"
"""Dead-letter reason of a stored message one sink could not handle."""
INGEST_REJECT_REASONS: Final[tuple[str, ...]] = (*REJECT_REASONS, STORE_ERROR)
"""Every ``reason`` label of ``campuswatch_ingest_rejected_total``."""

Received = tuple[ReceivedMessage, datetime]


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
    """Acts on fresh (never seen) messages inside the batch transaction, in sink order.

    A sink that raises has its database work undone (a savepoint) and what it added to the
    context forgotten, and is run again on halves of the batch; work it keeps outside the
    database should wait for ``after_commit`` or tolerate seeing a message twice."""

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
    """Messages refused, by reason: the decoder's, or ``store_error`` (failed on its own)."""
    sink_errors_total: Counter[str] = field(default_factory=Counter)
    """Messages a sink failed on, by sink (``after_commit``: batches whose post-commit work
    failed)."""
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
        # Received and not yet handled (stored, acknowledged, evaluated): the queue and the
        # batch in hand. Guarded by the condition, which wait_idle waits on.
        self._in_hand = 0
        self._handled = threading.Condition()
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
        """Messages received and not yet handled: queued, or in the batch being stored."""
        return self._in_hand

    def wait_idle(self, timeout_s: float) -> bool:
        """True once every message received so far is stored (or dead-lettered),
        acknowledged and evaluated, i.e. its alert transaction committed; False on timeout."""
        with self._handled:
            return self._handled.wait_for(lambda: self._in_hand == 0, timeout_s)

    def _on_message(self, message: ReceivedMessage) -> None:
        # Runs on paho's thread: only hand over. Blocking here when full applies back-pressure.
        with self._handled:
            self._in_hand += 1
        self._pending.put((message, self._clock()))

    def _run(self) -> None:
        while not self._stop.is_set():
            batch = self._take_batch()
            if batch and self._store(batch):
                for message, _ in batch:
                    self.connection.ack(message)
                with self._handled:
                    self._in_hand -= len(batch)
                    self._handled.notify_all()

    def _store(self, batch: Sequence[Received]) -> bool:
        """Store ``batch``: True once every message is stored or dead-lettered (all may be
        acknowledged), False if the runner stops first (nothing acked, the broker redelivers).

        An outage of the store is retried with back-off for as long as it lasts. Any other
        failure is a message's: the failed part is split in halves, each stored on its own,
        until the message that fails alone is found and dead-lettered (at most about 2n
        attempts for n messages, however the failures fall)."""
        delay = self.retry_initial_s
        started = time.perf_counter()
        parts: list[Sequence[Received]] = [batch]  # still to store, the next one last
        while parts:
            part = parts[-1]
            try:
                try:
                    self.process(part)
                except Exception as exc:
                    if len(part) > 1 or self._is_outage(exc):
                        raise
                    self._dead_letter_alone(part[0], exc)  # its fault, not the store's
            except Exception as exc:
                if self._is_outage(exc):
                    if not self._wait_out(exc, len(part), delay):
                        return False
                    delay = min(delay * 2, self.retry_max_s)
                    continue
                parts.pop()
                if len(part) == 1:
                    # Not even its dead letter can be written: say what is lost, go on.
                    log.exception("could not dead-letter %s; dropped", part[0][0].topic[:200])
                    self.stats.rejected_total[STORE_ERROR] += 1
                    continue
                log.warning(
                    "a batch of %d failed while the store answers (%s); storing it in halves "
                    "to find the message at fault",
                    len(part),
                    _describe(exc),
                )
                middle = len(part) // 2
                parts += [part[middle:], part[:middle]]
                continue
            parts.pop()
            self._recovered()
        stats = self.stats
        stats.batches_total += 1
        stats.batch_seconds_total += time.perf_counter() - started
        stats.last_batch_at = time.time()
        return True

    def _is_outage(self, exc: BaseException) -> bool:
        """The store away (refused, dropped, locked, timed out) rather than bad data: known
        connectivity errors anywhere in the chain, or else a store that does not answer."""
        if is_storage_outage(exc):
            return True
        try:
            with self.sessions() as session:
                session.execute(text("SELECT 1"))
        except Exception as probe_error:
            log.warning("store unreachable after a failed batch: %s", _describe(probe_error))
            return True
        return False

    def _wait_out(self, exc: BaseException, size: int, delay: float) -> bool:
        """Record a failed attempt and wait ``delay``; False if the runner stops meanwhile."""
        stats = self.stats
        stats.store_failures_total += 1
        stats.last_error = _describe(exc)
        if stats.failing_since is None:
            stats.failing_since = time.time()
            log.error(
                "storing a batch of %d failed: %s; retrying until stored",
                size,
                stats.last_error,
                exc_info=exc,
            )
        else:
            log.warning("storing a batch of %d failed again: %s", size, stats.last_error)
        return not self._stop.wait(delay)

    def _recovered(self) -> None:
        stats = self.stats
        if stats.failing_since is not None:
            log.warning("storing works again after %.0f s", time.time() - stats.failing_since)
            stats.failing_since = None
            stats.last_error = None

    def _dead_letter_alone(self, item: Received, fault: BaseException) -> None:
        """Keep a message that failed its batch on its own, with why; it is then acked."""
        message, received_at = item
        detail = _describe(fault)
        with self.sessions() as session, session.begin():
            add_dead_letter(
                session,
                topic=message.topic,
                reason=STORE_ERROR,
                detail=detail,
                payload=message.payload,
                received_at=received_at,
            )
        stats = self.stats
        stats.received_total += 1
        stats.rejected_total[STORE_ERROR] += 1
        log.error("dead-lettered %s: it fails its batch on its own: %s", message.topic, detail)

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

    def process(self, batch: Sequence[Received]) -> None:
        """Store one batch durably. Public so tests and the benchmark can drive it directly."""
        decoded: list[DecodedMessage] = []
        received: dict[int, Received] = {}
        rejects: list[tuple[ReceivedMessage, datetime, WireRejection]] = []
        for message, received_at in batch:
            if message.topic.endswith("/cmd"):
                continue  # our own commands to devices, seen because we subscribe to cw/v1/#
            try:
                item = decode_message(message.topic, message.payload, received_at=received_at)
            except WireRejection as exc:
                rejects.append((message, received_at, exc))
                continue
            decoded.append(item)
            received[id(item)] = (message, received_at)
        sink_failures: list[tuple[str, DecodedMessage, Exception]] = []
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
            # Points durable before the commit: if the transaction fails, a redelivery
            # rewrites the same points (same series and timestamp), which the stores treat
            # as one sample. The writer's thread writes them while the sinks run.
            durable = self.tsdb.start_durable(points) if points else None
            context = BatchContext()
            for sink in self.sinks:
                for item, error in _run_sink(session, sink, fresh, context):
                    sink_failures.append((sink.name, item, error))
            if durable and not self.tsdb.wait_durable(durable, self.durable_timeout_s):
                log.warning("time-series buffer dropped points or timed out; see metrics")
            for sink_name, item, error in sink_failures:
                message, received_at = received[id(item)]
                add_dead_letter(
                    session,
                    topic=message.topic,
                    reason=SINK_ERROR,
                    detail=f"sink {sink_name}: {_describe(error)}",
                    payload=message.payload,
                    received_at=received_at,
                )
        # Counted once committed: a batch that failed is tried again and must not count twice.
        stats = self.stats
        stats.received_total += len(batch)
        for message, _, rejection in rejects:
            stats.rejected_total[rejection.reason] += 1
            log.warning("rejected %s: %s", message.topic[:200], rejection)
        for sink_name, item, error in sink_failures:
            stats.sink_errors_total[sink_name] += 1
            log.error(
                "sink %s failed on %s from %s (dead-lettered): %s",
                sink_name,
                item.message.id,
                item.message.device_id,
                _describe(error),
                exc_info=error,
            )
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


def _run_sink(
    session: Session, sink: BatchSink, batch: Sequence[DecodedMessage], context: BatchContext
) -> list[tuple[DecodedMessage, Exception]]:
    """Run ``sink`` on ``batch`` in a savepoint; if it fails, run it again on each half, down
    to the messages it fails on alone, which are returned. An outage is raised: the whole
    batch is then tried again."""
    if not batch:
        return []
    asset_changes = dict(context.asset_changes)
    after_commit = len(context.after_commit)
    try:
        with session.begin_nested():
            sink.handle(session, batch, context)
    except Exception as exc:
        if is_storage_outage(exc):
            raise
        # Forget what the failed attempt told later sinks; its database work is undone.
        context.asset_changes = asset_changes
        del context.after_commit[after_commit:]
        if len(batch) == 1:
            return [(batch[0], exc)]
        middle = len(batch) // 2
        return _run_sink(session, sink, batch[:middle], context) + _run_sink(
            session, sink, batch[middle:], context
        )
    return []


# Not InterfaceError: SQLite raises it for a value it cannot bind, a message's fault; a
# driver's closed connection still counts through ``connection_invalidated`` or the probe.
_OUTAGE_ERRORS: Final = (
    sa_exc.OperationalError,  # refused, dropped, server shutting down, SQLite locked
    sa_exc.DisconnectionError,
    sa_exc.TimeoutError,  # no pooled connection in time
    ConnectionError,
    TimeoutError,
)


def is_storage_outage(exc: BaseException) -> bool:
    """True if ``exc``, or an exception that led to it, says the store is unreachable or
    busy, which retrying fixes, as opposed to something wrong with the data."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, _OUTAGE_ERRORS):
            return True
        if isinstance(current, sa_exc.DBAPIError) and current.connection_invalidated:
            return True
        current = current.__cause__ or current.__context__
    return False


def _describe(exc: BaseException) -> str:
    """One line for health checks: the driver's message, without SQL and parameters."""
    cause = getattr(exc, "orig", None) or exc
    lines = str(cause).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0] if lines else ''}"[:300]
