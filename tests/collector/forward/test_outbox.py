"""The outbox table, its transactional enqueue, and the runner's retry/dead-letter rules."""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Engine, select, update
from sqlalchemy.orm import Session, sessionmaker

from campuswatch.collector.db.engine import make_engine, session_factory, upgrade
from campuswatch.collector.db.models import Base
from campuswatch.collector.forward.base import (
    DestinationRejected,
    DestinationUnavailable,
    OutboxItem,
)
from campuswatch.collector.forward.models import OutboxEntry
from campuswatch.collector.forward.outbox import Outbox
from campuswatch.collector.forward.runner import (
    DeliveryPolicy,
    DestinationWorker,
    Forwarder,
    ForwardingTarget,
    TokenBucket,
    backoff_delay,
)
from campuswatch.collector.signals import AlertNotification
from tests.collector.forward.samples import OPENED_AT, av_disabled
from tests.support.waiting import wait_until


class RecordingDestination:
    """Records what it sends; raises what ``failure`` returns for a batch."""

    def __init__(self, failure: Callable[[Sequence[OutboxItem]], Exception | None] | None = None):
        self.batches: list[list[OutboxItem]] = []
        self.failure = failure
        self.lock = threading.Lock()

    def send(self, batch: Sequence[OutboxItem]) -> None:
        problem = self.failure(batch) if self.failure else None
        if problem is not None:
            raise problem
        with self.lock:
            self.batches.append(list(batch))

    @property
    def sent_ids(self) -> list[str]:
        with self.lock:
            return [i.notification.event_id for b in self.batches for i in b]

    def close(self) -> None:
        pass


class FakeClock:
    def __init__(self, start: datetime = OPENED_AT) -> None:
        self.now = start
        self.mono = 1000.0

    def __call__(self) -> datetime:
        return self.now

    def monotonic(self) -> float:
        return self.mono

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)
        self.mono += seconds


def notifications(count: int) -> list[AlertNotification]:
    return [av_disabled(alert_id=i, event_id=f"evt-{i:03d}") for i in range(count)]


def worker_for(
    destination: RecordingDestination,
    sessions: sessionmaker[Session],
    clock: FakeClock,
    policy: DeliveryPolicy | None = None,
    name: str = "soc",
) -> DestinationWorker:
    return DestinationWorker(
        ForwardingTarget(name, destination, policy or DeliveryPolicy()),
        sessions,
        clock=clock,
        monotonic=clock.monotonic,
        rng=random.Random(7),
    )


def rows(sessions: sessionmaker[Session]) -> list[OutboxEntry]:
    with sessions() as session:
        return list(session.scalars(select(OutboxEntry).order_by(OutboxEntry.id)))


# --- schema and enqueue ----------------------------------------------------------------


def test_migration_builds_the_outbox_the_model_describes(engine: Engine) -> None:
    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        diff = compare_metadata(context, Base.metadata)
    assert [d for d in diff if "outbox" in repr(d)] == []
    assert "outbox" in Base.metadata.tables


def test_enqueue_commits_or_rolls_back_with_the_callers_transaction(engine: Engine) -> None:
    sessions = session_factory(engine)
    with sessions() as session:
        Outbox.enqueue(session, notifications(2), ["soc", "ioc"], now=OPENED_AT)
        session.rollback()
    assert rows(sessions) == []
    with sessions() as session, session.begin():
        assert Outbox.enqueue(session, notifications(2), ["soc", "ioc", "soc"], now=OPENED_AT) == 4
    stored = rows(sessions)
    assert [(r.destination, r.event_id, r.state) for r in stored] == [
        ("soc", "evt-000", "pending"),
        ("ioc", "evt-000", "pending"),
        ("soc", "evt-001", "pending"),
        ("ioc", "evt-001", "pending"),
    ]
    assert stored[0].created_at == OPENED_AT


def test_stored_payload_restores_the_notification_exactly(engine: Engine) -> None:
    sessions = session_factory(engine)
    original = av_disabled(tags=("a", "b"), labels={"phòng": "1"}, actor="soc.hn")
    with sessions() as session, session.begin():
        Outbox.enqueue(session, [original], ["soc"], now=OPENED_AT)
    with sessions() as session, session.begin():
        claim = Outbox.claim(session, "soc", limit=10, now=OPENED_AT, lease=timedelta(seconds=60))
    assert claim.items[0].notification == original


# --- runner rules (fake clock, one cycle at a time) ------------------------------------


def test_delivery_marks_rows_and_counts(sessions: sessionmaker[Session]) -> None:
    clock = FakeClock()
    destination = RecordingDestination()
    with sessions() as session, session.begin():
        Outbox.enqueue(session, notifications(5), ["soc"], now=clock())
    clock.advance(3)
    worker = worker_for(destination, sessions, clock, DeliveryPolicy(batch_size=2))
    results = [worker.run_once() for _ in range(4)]
    assert [r.delivered for r in results] == [2, 2, 1, 0]
    assert destination.sent_ids == [f"evt-{i:03d}" for i in range(5)]
    assert {r.state for r in rows(sessions)} == {"delivered"}
    assert worker.stats.sent_total == 5
    assert worker.stats.pending == 0
    assert worker.stats.last_delivery_lag_seconds == 3.0
    assert worker.stats.last_success_at == clock()


def test_unavailable_destination_backs_off_and_retries(sessions: sessionmaker[Session]) -> None:
    clock = FakeClock()
    down = True
    destination = RecordingDestination(
        lambda batch: DestinationUnavailable("refused") if down else None
    )
    policy = DeliveryPolicy(backoff_initial_s=10, backoff_max_s=40)
    worker = worker_for(destination, sessions, clock, policy)
    with sessions() as session, session.begin():
        Outbox.enqueue(session, notifications(1), ["soc"], now=clock())
    delays = []
    for _ in range(4):
        result = worker.run_once()
        (row,) = rows(sessions)
        delay = (row.next_attempt_at - clock()).total_seconds()
        delays.append(delay)
        assert result.retry_in_s == pytest.approx(delay)
        assert worker.run_once().claimed == 0  # not due yet
        clock.advance(delay)
    # Ceilings 10, 20, 40, 40 with jitter in the upper half.
    for delay, ceiling in zip(delays, (10, 20, 40, 40), strict=True):
        assert ceiling / 2 <= delay <= ceiling
    assert rows(sessions)[0].attempts == 4
    assert rows(sessions)[0].last_error is not None
    assert worker.stats.failed_total == 4
    down = False
    assert worker.run_once().delivered == 1
    assert rows(sessions)[0].state == "delivered"
    assert rows(sessions)[0].last_error is None


def test_dead_letter_after_max_attempts(sessions: sessionmaker[Session]) -> None:
    clock = FakeClock()
    destination = RecordingDestination(lambda batch: DestinationUnavailable("down"))
    worker = worker_for(destination, sessions, clock, DeliveryPolicy(max_attempts=3))
    with sessions() as session, session.begin():
        Outbox.enqueue(session, notifications(1), ["soc"], now=clock())
    for _ in range(3):
        worker.run_once()
        clock.advance(3600)
    (row,) = rows(sessions)
    assert row.state == "dead"
    assert "gave up after 3 attempts" in (row.last_error or "")
    assert worker.stats.dead_total == 1
    with sessions() as session, session.begin():
        assert Outbox.requeue_dead(session, "soc", now=clock()) == 1
    assert rows(sessions)[0].state == "pending"


def test_default_policy_keeps_trying_for_a_whole_day(sessions: sessionmaker[Session]) -> None:
    clock = FakeClock()
    destination = RecordingDestination(lambda batch: DestinationUnavailable("down"))
    worker = worker_for(destination, sessions, clock)
    with sessions() as session, session.begin():
        Outbox.enqueue(session, notifications(1), ["soc"], now=clock())
    start = clock()
    while clock() - start < timedelta(hours=24):
        worker.run_once()
        clock.advance(300)
    assert rows(sessions)[0].state == "pending"
    clock.advance(72 * 3600)
    worker.run_once()
    assert rows(sessions)[0].state == "dead"
    with pytest.raises(ValueError, match="24 h"):
        DeliveryPolicy(max_age_s=3600)


def test_rejected_batch_is_split_to_dead_letter_only_the_culprit(
    sessions: sessionmaker[Session],
) -> None:
    clock = FakeClock()

    def refuse_poison(batch: Sequence[OutboxItem]) -> Exception | None:
        poisoned = any(i.notification.event_id == "evt-005" for i in batch)
        return DestinationRejected("HTTP 422") if poisoned else None

    destination = RecordingDestination(refuse_poison)
    worker = worker_for(destination, sessions, clock, DeliveryPolicy(batch_size=8))
    with sessions() as session, session.begin():
        Outbox.enqueue(session, notifications(8), ["soc"], now=clock())
    result = worker.run_once()
    assert (result.delivered, result.dead) == (7, 1)
    states = {r.event_id: r.state for r in rows(sessions)}
    assert states.pop("evt-005") == "dead"
    assert set(states.values()) == {"delivered"}
    assert sorted(destination.sent_ids) == sorted(states)


def test_unreadable_payload_is_dead_lettered_and_others_flow(
    sessions: sessionmaker[Session],
) -> None:
    clock = FakeClock()
    destination = RecordingDestination()
    with sessions() as session, session.begin():
        Outbox.enqueue(session, notifications(3), ["soc"], now=clock())
    with sessions() as session, session.begin():
        session.execute(
            update(OutboxEntry).where(OutboxEntry.event_id == "evt-001").values(payload={"x": 1})
        )
    result = worker_for(destination, sessions, clock).run_once()
    assert (result.delivered, result.dead) == (2, 1)
    assert destination.sent_ids == ["evt-000", "evt-002"]


def test_a_bug_in_a_destination_keeps_the_rows(sessions: sessionmaker[Session]) -> None:
    clock = FakeClock()
    destination = RecordingDestination(lambda batch: KeyError("oops"))
    with sessions() as session, session.begin():
        Outbox.enqueue(session, notifications(1), ["soc"], now=clock())
    worker = worker_for(destination, sessions, clock)
    assert worker.run_once().retry_in_s is not None
    assert rows(sessions)[0].state == "pending"
    assert "KeyError" in (worker.stats.last_error or "")


def test_rate_limit_spreads_sends(sessions: sessionmaker[Session]) -> None:
    clock = FakeClock()
    destination = RecordingDestination()
    policy = DeliveryPolicy(rate_per_s=2, burst=2, batch_size=100)
    worker = worker_for(destination, sessions, clock, policy)
    with sessions() as session, session.begin():
        Outbox.enqueue(session, notifications(5), ["soc"], now=clock())
    assert worker.run_once().delivered == 2
    waiting = worker.run_once()
    assert waiting.claimed == 0
    assert waiting.retry_in_s == pytest.approx(0.5)
    clock.advance(0.5)
    assert worker.run_once().delivered == 1
    clock.advance(10)  # a long pause refills only up to the burst
    assert worker.run_once().delivered == 2


def test_token_bucket_and_backoff_bounds() -> None:
    clock = FakeClock()
    bucket = TokenBucket(10, 5, clock.monotonic)
    bucket.consume(5)
    assert bucket.seconds_until(3) == pytest.approx(0.3)
    clock.advance(100)
    assert bucket.available() == 5
    policy = DeliveryPolicy(backoff_initial_s=1, backoff_max_s=300)
    rng = random.Random(1)
    assert all(150 <= backoff_delay(1000, policy, rng) <= 300 for _ in range(50))


def test_a_claimed_row_is_invisible_until_its_lease_ends(sessions: sessionmaker[Session]) -> None:
    clock = FakeClock()
    with sessions() as session, session.begin():
        Outbox.enqueue(session, notifications(1), ["soc"], now=clock())
    with sessions() as session, session.begin():  # a forwarder that then crashes
        assert len(
            Outbox.claim(session, "soc", limit=5, now=clock(), lease=timedelta(seconds=120)).items
        )
    destination = RecordingDestination()
    worker = worker_for(destination, sessions, clock, DeliveryPolicy(lease_s=120))
    assert worker.run_once().claimed == 0
    clock.advance(121)
    assert worker.run_once().delivered == 1


def test_purge_removes_old_delivered_rows_only(sessions: sessionmaker[Session]) -> None:
    clock = FakeClock()
    with sessions() as session, session.begin():
        Outbox.enqueue(session, notifications(2), ["soc", "dead-one"], now=clock())
    worker_for(RecordingDestination(), sessions, clock).run_once()
    with sessions() as session, session.begin():
        session.execute(
            update(OutboxEntry).where(OutboxEntry.destination == "dead-one").values(state="dead")
        )
    clock.advance(8 * 86400)
    worker_for(RecordingDestination(), sessions, clock).purge_if_due()
    assert {(r.destination, r.state) for r in rows(sessions)} == {("dead-one", "dead")}


# --- threads: independence and concurrency ----------------------------------------------


def test_dead_and_hung_destinations_do_not_block_a_healthy_one(
    sessions: sessionmaker[Session],
) -> None:
    release = threading.Event()

    def hang(batch: Sequence[OutboxItem]) -> Exception | None:
        release.wait(30)
        return DestinationUnavailable("timed out")

    healthy = RecordingDestination()
    dead = RecordingDestination(lambda batch: DestinationUnavailable("refused"))
    hung = RecordingDestination(hang)
    fast = DeliveryPolicy(poll_interval_s=0.05, backoff_initial_s=0.1, backoff_max_s=0.5)
    forwarder = Forwarder(
        sessions,
        [
            ForwardingTarget("dead", dead, fast),
            ForwardingTarget("hung", hung, fast),
            ForwardingTarget("soc", healthy, fast),
        ],
    )
    forwarder.start()
    try:
        for batch in range(5):
            with sessions() as session, session.begin():
                chunk = notifications(50)[batch * 10 : batch * 10 + 10]
                Outbox.enqueue(session, chunk, forwarder.destination_names)
            forwarder.wake()
        wait_until(lambda: len(healthy.sent_ids) == 50)
        wait_until(lambda: forwarder.stats()["soc"].sent_total == 50)
        wait_until(lambda: forwarder.stats()["dead"].failed_total > 0)
        stats = forwarder.stats()
        assert stats["dead"].sent_total == 0
        assert stats["hung"].sent_total == 0
        wait_until(lambda: forwarder.stats()["dead"].pending == 50)
    finally:
        release.set()
        forwarder.stop()


def test_two_forwarders_on_postgresql_deliver_each_row_once(fresh_postgres_url: str) -> None:
    upgrade(fresh_postgres_url)
    engines = [make_engine(fresh_postgres_url) for _ in range(2)]
    shared = RecordingDestination()

    def slow_send(batch: Sequence[OutboxItem]) -> Exception | None:
        time.sleep(0.002 * len(batch))  # the destination's send time: lets the two interleave
        return None

    shared.failure = slow_send
    policy = DeliveryPolicy(batch_size=7, poll_interval_s=0.05)
    forwarders = [
        Forwarder(session_factory(e), [ForwardingTarget("soc", shared, policy)]) for e in engines
    ]
    sessions = session_factory(engines[0])
    with sessions() as session, session.begin():
        Outbox.enqueue(session, notifications(300), ["soc"])
    for forwarder in forwarders:
        forwarder.start()
    try:
        wait_until(lambda: len(shared.sent_ids) >= 300, timeout_s=60)
        wait_until(lambda: all(r.state == "delivered" for r in rows(sessions)))
        # Stopped (their threads joined), the forwarders have finished any send they had
        # begun: a double send would be in the counts now, with no window to guess.
        for forwarder in forwarders:
            forwarder.stop()
        counts = Counter(shared.sent_ids)
        assert len(counts) == 300
        assert set(counts.values()) == {1}
        assert all(f.stats()["soc"].sent_total > 0 for f in forwarders)  # both took a share
    finally:
        for forwarder in forwarders:
            forwarder.stop()
        for engine in engines:
            engine.dispose()


def test_forwarder_refuses_duplicate_names(sessions: sessionmaker[Session]) -> None:
    with pytest.raises(ValueError, match="unique"):
        Forwarder(
            sessions,
            [
                ForwardingTarget("a", RecordingDestination()),
                ForwardingTarget("a", RecordingDestination()),
            ],
        )
