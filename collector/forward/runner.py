"""The forwarding runner: one thread per destination claims due outbox rows and sends them.

The runner owns everything hard so destinations stay thin: batching, a token-bucket rate
limit, exponential back-off with jitter, splitting a rejected batch to isolate the bad item,
dead letters, and per-destination statistics for the collector's Prometheus collector.
Destinations are independent: each has its own thread, rows and back-off, so a dead SIEM
never delays another destination, and ingest only ever inserts rows.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import random
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy.orm import Session, sessionmaker

from campuswatch.collector.db.models import utc_now
from campuswatch.collector.forward.base import (
    Destination,
    DestinationRejected,
    DestinationUnavailable,
    OutboxItem,
)
from campuswatch.collector.forward.outbox import Outbox

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class DeliveryPolicy:
    batch_size: int = 100
    rate_per_s: float | None = None
    """Token-bucket refill rate in messages per second; None = unlimited."""
    burst: int | None = None
    """Bucket size; defaults to one second's worth (at least one batch can always go)."""
    backoff_initial_s: float = 1.0
    backoff_max_s: float = 300.0
    max_attempts: int | None = None
    """Dead-letter after this many attempts; None = limited by age only."""
    max_age_s: float | None = 72 * 3600.0
    """Dead-letter a row this old; the default rides out a long weekend's SIEM outage."""
    lease_s: float = 120.0
    """How long a claimed row stays hidden from other forwarders; must exceed a send's time."""
    poll_interval_s: float = 1.0
    delivered_retention_s: float | None = 7 * 86400.0
    """Delete delivered rows older than this (hourly); None keeps them."""

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        if self.rate_per_s is not None and self.rate_per_s <= 0:
            raise ValueError("rate_per_s must be positive (or None for unlimited)")
        if self.backoff_initial_s <= 0 or self.backoff_max_s < self.backoff_initial_s:
            raise ValueError("need 0 < backoff_initial_s <= backoff_max_s")
        if self.max_age_s is not None and self.max_age_s < 24 * 3600:
            raise ValueError("max_age_s below 24 h would drop alerts during an ordinary outage")
        if self.max_attempts is not None and self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")


class TokenBucket:
    """``rate`` tokens per second up to ``capacity``; one token per message."""

    def __init__(
        self, rate: float, capacity: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.rate = rate
        self.capacity = capacity
        self._clock = clock
        self._tokens = capacity
        self._updated = clock()

    def available(self) -> float:
        now = self._clock()
        self._tokens = min(self.capacity, self._tokens + (now - self._updated) * self.rate)
        self._updated = now
        return self._tokens

    def consume(self, count: int) -> None:
        self.available()
        self._tokens -= count

    def seconds_until(self, count: float) -> float:
        missing = count - self.available()
        return max(0.0, missing / self.rate)


def backoff_delay(attempts: int, policy: DeliveryPolicy, rng: random.Random) -> float:
    """Exponential back-off with "equal jitter": half fixed, half random, never zero, so
    collectors that failed together do not retry in lock-step."""
    ceiling = min(policy.backoff_max_s, policy.backoff_initial_s * 2.0 ** min(attempts - 1, 30))
    return ceiling / 2 + rng.uniform(0, ceiling / 2)


@dataclass
class DestinationStats:
    """Read by the collector's Prometheus collector at scrape time."""

    name: str
    sent_total: int = 0
    failed_total: int = 0
    """Items in sends that failed (each retry counts again)."""
    rejected_total: int = 0
    dead_total: int = 0
    pending: int = 0
    last_success_at: datetime | None = None
    last_error: str | None = None
    last_error_at: datetime | None = None
    last_send_seconds: float | None = None
    """Duration of the last successful send call."""
    last_delivery_lag_seconds: float | None = None
    """From enqueue to delivery for the newest item delivered."""


@dataclass(frozen=True, slots=True)
class CycleResult:
    claimed: int = 0
    delivered: int = 0
    dead: int = 0
    retry_in_s: float | None = None
    """Set when the runner should wait (back-off or rate limit) before the next cycle."""


@dataclass(frozen=True, slots=True)
class ForwardingTarget:
    name: str
    destination: Destination
    policy: DeliveryPolicy = field(default_factory=DeliveryPolicy)


class DestinationWorker:
    """Delivers one destination's rows; ``run_once`` is one claim-send-record cycle."""

    def __init__(
        self,
        target: ForwardingTarget,
        sessions: sessionmaker[Session],
        *,
        clock: Callable[[], datetime] = utc_now,
        monotonic: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        self.name = target.name
        self.destination = target.destination
        self.policy = target.policy
        self.stats = DestinationStats(target.name)
        self._sessions = sessions
        self._clock = clock
        self._monotonic = monotonic
        self._rng = rng or random.Random()
        policy = target.policy
        self._bucket = (
            TokenBucket(
                policy.rate_per_s,
                float(policy.burst or max(1, math.ceil(policy.rate_per_s))),
                monotonic,
            )
            if policy.rate_per_s
            else None
        )
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_purge: float | None = None

    # --- one cycle ---------------------------------------------------------------------

    def run_once(self) -> CycleResult:
        limit = self.policy.batch_size
        if self._bucket is not None:
            allowance = int(self._bucket.available())
            if allowance < 1:
                return CycleResult(retry_in_s=self._bucket.seconds_until(1))
            limit = min(limit, allowance)
        now = self._clock()
        with self._sessions() as session, session.begin():
            claim = Outbox.claim(
                session,
                self.name,
                limit=limit,
                now=now,
                lease=timedelta(seconds=self.policy.lease_s),
            )
            for row_id, reason in claim.undecodable:
                Outbox.mark_dead(session, [row_id], error=reason)
        dead = len(claim.undecodable)
        self.stats.dead_total += dead
        if not claim.items:
            self._refresh_pending()
            return CycleResult(claimed=dead, dead=dead)
        if self._bucket is not None:
            self._bucket.consume(len(claim.items))
        delivered, dead_now, retry_in_s = self._deliver(claim.items)
        self._refresh_pending()
        return CycleResult(len(claim.items) + dead, delivered, dead + dead_now, retry_in_s)

    def _deliver(self, items: Sequence[OutboxItem]) -> tuple[int, int, float | None]:
        """Send ``items``; returns (delivered, dead-lettered, back-off seconds or None)."""
        started = self._monotonic()
        try:
            self.destination.send(items)
        except DestinationRejected as exc:
            self.stats.rejected_total += len(items)
            self._note_error(str(exc))
            if len(items) == 1:
                self._dead(items, f"rejected: {exc}")
                return 0, 1, None
            # Bisect: the receiver refused something in this batch; deliver the rest.
            middle = len(items) // 2
            first = self._deliver(items[:middle])
            second = self._deliver(items[middle:])
            waits = [w for w in (first[2], second[2]) if w is not None]
            return first[0] + second[0], first[1] + second[1], min(waits) if waits else None
        except Exception as exc:
            if not isinstance(exc, DestinationUnavailable):
                # A bug in a destination must not kill the thread or lose the rows.
                log.exception("destination %s failed unexpectedly", self.name)
            return 0, *self._retry_later(items, f"{type(exc).__name__}: {exc}")
        elapsed = self._monotonic() - started
        now = self._clock()
        with self._sessions() as session, session.begin():
            Outbox.mark_delivered(session, [item.id for item in items], now=now)
        self.stats.sent_total += len(items)
        self.stats.last_success_at = now
        self.stats.last_send_seconds = elapsed
        newest = max(item.created_at for item in items)
        self.stats.last_delivery_lag_seconds = max(0.0, (now - newest).total_seconds())
        return len(items), 0, None

    def _retry_later(self, items: Sequence[OutboxItem], error: str) -> tuple[int, float]:
        self.stats.failed_total += len(items)
        self._note_error(error)
        now = self._clock()
        policy = self.policy
        expired: list[OutboxItem] = []
        delays: list[float] = []
        with self._sessions() as session, session.begin():
            for item in items:
                too_many = policy.max_attempts is not None and item.attempts >= policy.max_attempts
                age = (now - item.created_at).total_seconds()
                too_old = policy.max_age_s is not None and age >= policy.max_age_s
                if too_many or too_old:
                    expired.append(item)
                    continue
                delay = backoff_delay(item.attempts, policy, self._rng)
                delays.append(delay)
                Outbox.reschedule(session, item.id, at=now + timedelta(seconds=delay), error=error)
            if expired:
                reason = f"gave up after {expired[0].attempts} attempts: {error}"
                Outbox.mark_dead(session, [item.id for item in expired], error=reason)
        self.stats.dead_total += len(expired)
        if expired:
            log.error("%s: %d alert(s) dead-lettered: %s", self.name, len(expired), error)
        else:
            log.warning("%s unavailable, retrying %d alert(s): %s", self.name, len(items), error)
        return len(expired), min(delays) if delays else policy.backoff_initial_s

    def _dead(self, items: Sequence[OutboxItem], error: str) -> None:
        with self._sessions() as session, session.begin():
            Outbox.mark_dead(session, [item.id for item in items], error=error)
        self.stats.dead_total += len(items)
        log.error(
            "%s: alert event %s dead-lettered: %s", self.name, items[0].notification.event_id, error
        )

    def _note_error(self, error: str) -> None:
        self.stats.last_error = error[:500]
        self.stats.last_error_at = self._clock()

    def _refresh_pending(self) -> None:
        try:
            with self._sessions() as session:
                self.stats.pending = Outbox.pending_count(session, self.name)
        except Exception:  # a gauge is not worth stopping delivery for
            log.debug("pending count for %s failed", self.name, exc_info=True)

    def purge_if_due(self) -> None:
        retention = self.policy.delivered_retention_s
        now_mono = self._monotonic()
        if retention is None or (
            self._last_purge is not None and now_mono - self._last_purge < 3600
        ):
            return
        self._last_purge = now_mono
        cutoff = self._clock() - timedelta(seconds=retention)
        with self._sessions() as session, session.begin():
            removed = Outbox.purge_delivered(session, delivered_before=cutoff)
        if removed:
            log.info("%s: purged %d delivered outbox rows", self.name, removed)

    # --- thread ------------------------------------------------------------------------

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name=f"forward-{self.name}", daemon=True)
        self._thread.start()

    def wake(self) -> None:
        self._wake.set()

    def stop(self, timeout_s: float = 10.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
            self._thread = None

    def _back_off(self, seconds: float) -> None:
        """Wait, ignoring wake-ups (new alerts must not hammer a dead destination), while
        keeping the pending gauge fresh: an outage is exactly when someone looks at it."""
        deadline = time.monotonic() + seconds
        while not self._stop.is_set():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            self._stop.wait(min(remaining, max(self.policy.poll_interval_s, 5.0)))
            self._refresh_pending()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.purge_if_due()
                result = self.run_once()
            except Exception as exc:  # the database away: wait and try again, never exit
                log.exception("forwarding cycle for %s failed", self.name)
                self._note_error(f"cycle failed: {exc}")
                self._stop.wait(self.policy.poll_interval_s)
                continue
            if result.retry_in_s is not None:
                self._back_off(result.retry_in_s)
            elif result.claimed == 0:
                self._wake.wait(self.policy.poll_interval_s)
                self._wake.clear()


class Forwarder:
    """Runs one ``DestinationWorker`` thread per destination."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        targets: Sequence[ForwardingTarget],
        *,
        clock: Callable[[], datetime] = utc_now,
        rng: random.Random | None = None,
    ) -> None:
        names = [target.name for target in targets]
        if len(set(names)) != len(names):
            raise ValueError(f"destination names must be unique: {names}")
        self.workers = {
            target.name: DestinationWorker(target, sessions, clock=clock, rng=rng)
            for target in targets
        }

    @property
    def destination_names(self) -> list[str]:
        return list(self.workers)

    def start(self) -> None:
        for worker in self.workers.values():
            worker.start()

    def wake(self) -> None:
        """Call after committing new outbox rows so they leave without waiting for a poll."""
        for worker in self.workers.values():
            worker.wake()

    def stop(self, timeout_s: float = 10.0) -> None:
        for worker in self.workers.values():
            worker.stop(timeout_s)
        for worker in self.workers.values():
            try:
                worker.destination.close()
            except Exception:
                log.warning("closing destination %s failed", worker.name, exc_info=True)

    def stats(self) -> dict[str, DestinationStats]:
        """A snapshot per destination (copies, so a scrape sees consistent values)."""
        return {name: dataclasses.replace(w.stats) for name, w in self.workers.items()}
