"""No single message may stall ingest (issue 13, item 1).

One 2.2 kB message nested 1,000 deep made the decoder raise ``RecursionError``; the ingest
loop took it for a storage failure, retried its batch forever without acknowledging it, and
ingest stopped for every school, again after each restart as the broker redelivered it.
A fault of one message (decoding, a store step, one sink) is now that message's alone: it
is dead-lettered with a reason, counted and acknowledged, and the rest of its batch is
stored. A real storage outage is still retried, never dead-lettered.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.exc import DataError, IntegrityError, OperationalError
from sqlalchemy.orm import Session

from campuswatch.collector.db.models import DeadLetter, Device, ProcessedMessage
from campuswatch.collector.ingest import BatchContext, is_storage_outage
from campuswatch.collector.tsdb.buffer import DurableWrite
from campuswatch.collector.tsdb.points import Point
from campuswatch.wire import HealthMessage, encode_message
from campuswatch.wire.codec import DecodedMessage
from campuswatch.wire.ids import new_message_id
from campuswatch.wire.mqtt import MqttConnection
from tests.collector.conftest import CollectorFactory, RunningCollector
from tests.support.mosquitto import MosquittoBroker
from tests.support.waiting import wait_until

SITE = "school-poison"
# Everything published close together lands in one batch, so a bad message shares it.
ONE_BATCH = {"batch_wait_s": 1.0}


@pytest.fixture
def publisher(mosquitto: MosquittoBroker) -> Iterator[Callable[[str, bytes], None]]:
    connection = MqttConnection("poison-publisher", mosquitto.address, max_inflight=1000)
    connection.start()
    assert connection.wait_connected(10)

    def publish(topic: str, payload: bytes) -> None:
        wait_until(lambda: connection.publish(topic, payload) is not None)

    yield publish
    connection.stop()


WARM_UP = "pc-warm-up"


def start_collector(
    factory: CollectorFactory, publish: Callable[[str, bytes], None], **settings: Any
) -> RunningCollector:
    """A collector whose subscription is in place: messages published before the broker
    has it would be dropped, so one message is sent (always the same id, a duplicate after
    the first) until it is stored."""
    collector = factory(**settings)
    stats = collector.service.ingestor.stats
    topic, payload = health(WARM_UP)

    def stored() -> bool:
        publish(topic, payload)
        return wait_for_a_moment(lambda: stats.stored_total >= 1)

    wait_until(stored)
    wait_until(lambda: collector.service.ingestor.pending == 0)
    return collector


def wait_for_a_moment(predicate: Callable[[], bool]) -> bool:
    """Half a second for one publish to be stored before it is sent again: the pace of the
    warm-up's resends (bounded on purpose), not a wait for a result."""
    for _ in range(10):
        if predicate():
            return True
        time.sleep(0.05)
    return False


def health(device: str, uptime_s: float = 60.0) -> tuple[str, bytes]:
    message = HealthMessage(device_id=device, site=SITE, uptime_s=uptime_s)
    return f"cw/v1/{SITE}/{device}/health", encode_message(message)


def deeply_nested(device: str, depth: int = 1_000) -> tuple[str, bytes]:
    """The message of the issue: a valid envelope with ~1,000 levels in an unknown field."""
    topic, payload = health(device)
    return topic, payload[:-1] + b',"x":' + b"[" * depth + b"]" * depth + b"}"


def dead_letters(collector: RunningCollector) -> list[DeadLetter]:
    with collector.service.sessions() as session:
        return list(session.scalars(select(DeadLetter).order_by(DeadLetter.id)))


def stored_devices(collector: RunningCollector) -> set[str]:
    with collector.service.sessions() as session:
        return set(session.scalars(select(ProcessedMessage.device_id))) - {WARM_UP}


def test_a_deeply_nested_message_is_dead_lettered_and_the_rest_of_its_batch_stored(
    db_url: str,
    collector_factory: CollectorFactory,
    publisher: Callable[[str, bytes], None],
) -> None:
    collector = start_collector(collector_factory, publisher, db=db_url, **ONE_BATCH)
    stats = collector.service.ingestor.stats
    good = [health(f"pc-{n:02d}") for n in range(10)]
    for message in good[:5]:
        publisher(*message)
    bad_topic, bad_payload = deeply_nested("pc-bad")
    publisher(bad_topic, bad_payload)
    for message in good[5:]:
        publisher(*message)

    wait_until(lambda: stats.stored_total >= 1 + len(good))
    assert stored_devices(collector) == {f"pc-{n:02d}" for n in range(10)}
    [letter] = dead_letters(collector)
    assert (letter.topic, letter.reason, letter.payload) == (bad_topic, "depth", bad_payload)
    assert stats.rejected_total == {"depth": 1}
    assert stats.store_failures_total == 0 and stats.failing_since is None
    metrics = collector.api.get("/metrics").text
    assert 'campuswatch_ingest_rejected_total{reason="depth"} 1.0' in metrics

    # Acknowledged: a collector taking over the same persistent session is not sent it again
    # (the broker would redeliver an unacknowledged message before anything newer).
    collector.service.stop()
    successor = collector_factory(db=db_url, **ONE_BATCH)
    publisher(*health("pc-after-restart"))
    successor_stats = successor.service.ingestor.stats
    wait_until(lambda: successor_stats.stored_total >= 1)
    assert successor_stats.received_total == 1
    assert successor_stats.rejected_total == {}
    assert len(dead_letters(successor)) == 1


def test_a_message_that_fails_its_whole_batch_is_isolated_and_the_rest_stored(
    db_url: str,
    collector_factory: CollectorFactory,
    publisher: Callable[[str, bytes], None],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A fault nobody foresaw, outside any sink: the time-series step raises on one device's
    # points. The batch fails as a whole, so it is split until that message stands alone.
    collector = start_collector(collector_factory, publisher, db=db_url, **ONE_BATCH)
    ingestor = collector.service.ingestor
    start_durable = ingestor.tsdb.start_durable
    attempts: list[int] = []

    def poisoned_write(points: Sequence[Point]) -> DurableWrite:
        attempts.append(len(points))
        if any(point.tags.get("device") == "pc-poison" for point in points):
            raise ValueError("cannot encode this point")
        return start_durable(points)

    monkeypatch.setattr(ingestor.tsdb, "start_durable", poisoned_write)
    good = [health(f"pc-{n:02d}") for n in range(15)]
    for message in good[:7]:
        publisher(*message)
    publisher(*health("pc-poison"))
    for message in good[7:]:
        publisher(*message)

    wait_until(lambda: ingestor.stats.stored_total >= 1 + len(good) and not ingestor.pending)
    wait_until(lambda: dead_letters(collector))
    assert stored_devices(collector) == {f"pc-{n:02d}" for n in range(15)}
    [letter] = dead_letters(collector)
    assert letter.topic == f"cw/v1/{SITE}/pc-poison/health"
    assert letter.reason == "store_error"
    assert "ValueError: cannot encode this point" in letter.detail
    assert ingestor.stats.rejected_total == {"store_error": 1}
    metrics = collector.api.get("/metrics").text
    assert 'campuswatch_ingest_rejected_total{reason="store_error"} 1.0' in metrics
    assert "campuswatch_ingest_store_failing 0.0" in metrics
    assert ingestor.stats.store_failures_total == 0, "a message's fault is not an outage"
    assert len(attempts) <= 2 * 16, "isolation is a binary split, not a retry loop"

    # Acknowledged and not stuck: what comes next is stored at once, nothing redelivered.
    publisher(*health("pc-next"))
    wait_until(lambda: "pc-next" in stored_devices(collector))
    assert len(dead_letters(collector)) == 1


class FlakySink:
    """A sink that fails any batch holding one particular device's message."""

    name = "flaky"

    def __init__(self, bad_device: str) -> None:
        self.bad_device = bad_device
        self.handled: list[str] = []

    def handle(
        self, session: Session, batch: Sequence[DecodedMessage], context: BatchContext
    ) -> None:
        if any(item.message.device_id == self.bad_device for item in batch):
            raise RuntimeError(f"cannot handle {self.bad_device}")
        self.handled.extend(item.message.device_id for item in batch)


def test_a_sink_failing_on_one_message_loses_only_that_message_for_that_sink(
    db_url: str,
    collector_factory: CollectorFactory,
    publisher: Callable[[str, bytes], None],
) -> None:
    collector = start_collector(collector_factory, publisher, db=db_url, **ONE_BATCH)
    ingestor = collector.service.ingestor
    sink = FlakySink("pc-bad")
    ingestor.sinks.append(sink)
    devices = [f"pc-{n:02d}" for n in range(6)]
    for device in devices[:3]:
        publisher(*health(device))
    publisher(*health("pc-bad"))
    for device in devices[3:]:
        publisher(*health(device))

    wait_until(lambda: ingestor.stats.stored_total >= 1 + len(devices) + 1)
    wait_until(lambda: len(sink.handled) >= len(devices))
    assert sorted(sink.handled) == devices
    [letter] = dead_letters(collector)
    assert letter.topic == f"cw/v1/{SITE}/pc-bad/health"
    assert letter.reason == "sink_error"
    assert letter.detail.startswith("sink flaky: RuntimeError: cannot handle pc-bad")
    assert ingestor.stats.sink_errors_total == {"flaky": 1}
    # The message itself was stored, and every other sink (the register) handled it.
    assert "pc-bad" in stored_devices(collector)
    with collector.service.sessions() as session:
        assert session.get(Device, "pc-bad") is not None
    metrics = collector.api.get("/metrics").text
    assert 'campuswatch_ingest_sink_errors_total{sink="flaky"} 1.0' in metrics


def test_a_locked_database_is_retried_as_an_outage_never_dead_lettered(
    collector_factory: CollectorFactory,
    publisher: Callable[[str, bytes], None],
    tmp_path: Path,
) -> None:
    register = tmp_path / "register.sqlite"
    collector = start_collector(collector_factory, publisher, db=f"sqlite:///{register}")
    stats = collector.service.ingestor.stats
    publisher(*health("pc-00"))
    wait_until(lambda: stats.stored_total == 2)

    blocker = sqlite3.connect(register, timeout=30)
    blocker.execute("BEGIN EXCLUSIVE")  # another writer holding the database
    try:
        publisher(*health("pc-01"))
        wait_until(lambda: stats.store_failures_total >= 1, timeout_s=60)
        assert stats.failing_since is not None
    finally:
        blocker.rollback()
        blocker.close()
    wait_until(lambda: stats.stored_total == 3 and stats.failing_since is None, timeout_s=60)
    assert dead_letters(collector) == []
    assert stats.rejected_total == {}


def malformed_payloads(device: str) -> Iterator[tuple[str, bytes, str]]:
    """(topic, payload, expected reason): every way one broken device can misbehave."""
    topic, payload = health(device)
    document: dict[str, Any] = json.loads(payload)

    def variant(**changes: Any) -> bytes:
        return json.dumps({**document, "id": new_message_id(), **changes}).encode()

    yield topic, deeply_nested(device)[1], "depth"
    yield topic, deeply_nested(device, depth=100_000)[1], "depth"
    yield topic, b'{"v": 1, "kind": "health", "x": ' + b"{" * 50_000, "depth"
    yield topic, b"{not json", "json"
    yield topic, b"\x00\xff\xfe", "json"
    yield topic, variant(uptime_s=1e30), "schema"
    yield topic, payload[:-1] + b',"load1": 1e400}', "schema"
    yield topic, variant(cpu_pct=-5), "schema"
    yield topic, variant(device_id="pc\x00evil"), "schema"
    yield topic, variant(errors=[{"probe": "x" * 300, "reason": "failed"}]), "schema"
    # NUL inside a value: refused like any other bad value, and kept as a dead letter on
    # PostgreSQL too (whose text columns cannot hold NUL).
    yield topic, variant(errors=[{"probe": "p", "reason": "fail\x00ed"}]), "schema"
    yield topic, variant(site="other-school"), "identity"
    yield topic, variant(v=99), "version"
    yield topic, b"x" * (600 * 1024), "oversize"
    yield f"cw/v1/{SITE}/{device}/av", variant(), "kind_mismatch"


def test_a_flood_of_malformed_messages_from_one_device_never_stalls_the_others(
    db_url: str,
    collector_factory: CollectorFactory,
    publisher: Callable[[str, bytes], None],
) -> None:
    collector = start_collector(
        collector_factory, publisher, db=db_url, batch_wait_s=0.2, batch_size=50
    )
    stats = collector.service.ingestor.stats
    malformed = list(malformed_payloads("pc-broken")) * 15
    good_devices = [f"pc-{n:03d}" for n in range(len(malformed))]
    for (topic, payload, _), device in zip(malformed, good_devices, strict=True):
        publisher(topic, payload)
        publisher(*health(device))

    wait_until(lambda: stats.stored_total >= 1 + len(good_devices), timeout_s=120)
    assert stored_devices(collector) == set(good_devices)
    expected: dict[str, int] = {}
    for _, _, reason in malformed:
        expected[reason] = expected.get(reason, 0) + 1
    wait_until(lambda: sum(stats.rejected_total.values()) >= len(malformed))
    assert dict(stats.rejected_total) == expected
    letters = dead_letters(collector)
    assert len(letters) == len(malformed)
    assert all(letter.topic.startswith(f"cw/v1/{SITE}/pc-broken/") for letter in letters)
    assert all(letter.detail for letter in letters)
    assert stats.store_failures_total == 0
    # And ingest still flows afterwards.
    publisher(*health("pc-after-flood"))
    wait_until(lambda: "pc-after-flood" in stored_devices(collector))


def test_what_counts_as_an_outage() -> None:
    orig = Exception("server closed the connection unexpectedly")
    lost = OperationalError("SELECT 1", {}, orig)
    assert is_storage_outage(lost)
    assert is_storage_outage(ConnectionRefusedError())
    try:
        try:
            raise lost
        except OperationalError:
            raise RuntimeError("rollback failed") from None  # what a dying session may raise
    except RuntimeError as during_rollback:
        assert is_storage_outage(during_rollback)  # found through __context__
    assert not is_storage_outage(IntegrityError("INSERT", {}, orig))
    assert not is_storage_outage(DataError("INSERT", {}, Exception("NUL in text")))
    assert not is_storage_outage(ValueError("cannot encode this point"))
    assert not is_storage_outage(RecursionError())


def test_the_store_writes_a_batchs_points_while_its_sinks_run(
    collector_factory: CollectorFactory,
    publisher: Callable[[str, bytes], None],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The ingest waited for the time-series store to write a batch's points before it ran a
    # single sink; at a district's load that wait left a core idle a quarter of the time.
    # The points must still be written before the batch commits.
    collector = start_collector(collector_factory, publisher, **ONE_BATCH)
    ingestor = collector.service.ingestor
    store = ingestor.tsdb._writer
    sinks_running = threading.Event()
    overlapped: list[bool] = []
    store_write, sink_handle = store.write, ingestor.sinks[0].handle

    def slow_write(points: Sequence[Point]) -> None:
        overlapped.append(sinks_running.wait(5))
        store_write(points)

    def watched_handle(session: Session, batch: Sequence[DecodedMessage], context: Any) -> None:
        sinks_running.set()
        sink_handle(session, batch, context)

    monkeypatch.setattr(store, "write", slow_write)
    monkeypatch.setattr(ingestor.sinks[0], "handle", watched_handle)
    publisher(*health("pc-01"))

    # 2: the warm-up message is stored already.
    wait_until(lambda: ingestor.stats.stored_total >= 2 and not ingestor.pending)
    assert overlapped == [True]
    assert stored_devices(collector) == {"pc-01"}
