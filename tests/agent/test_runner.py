"""The runner against a real Mosquitto: birth, commands, and no loss over an outage."""

from __future__ import annotations

import itertools
import json
import os
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from campuswatch.agent.identity import HardwareFacts, resolve_identity
from campuswatch.agent.probes import ProbeContext
from campuswatch.agent.runner import QUEUE_FILE, AgentRunner
from campuswatch.agent.settings import load_settings
from campuswatch.agent.store_forward import StoreAndForwardQueue
from campuswatch.wire import CommandMessage, HealthMessage, decode_message, encode_message
from campuswatch.wire.messages import HelloMessage, InventoryMessage, StateMessage
from campuswatch.wire.mqtt import MqttConnection
from campuswatch.wire.topics import build_topic
from tests.support.mosquitto import MosquittoBroker, subscribe
from tests.support.ports import free_port
from tests.support.waiting import wait_until

SITE = "school-a"
TEST_FACTS = HardwareFacts("uuid-test", "m" * 32, ("02:00:00:00:00:01",))


class CountingProbe:
    """Produces numbered health messages so a test can account for every one."""

    name = "health"
    kind = "health"

    def __init__(self) -> None:
        self.counter = itertools.count(1)
        self.produced: list[str] = []
        self.lock = threading.Lock()

    def collect(self, context: ProbeContext) -> HealthMessage:
        message = HealthMessage(
            device_id=context.device_id, site=context.site, uptime_s=float(next(self.counter))
        )
        with self.lock:
            self.produced.append(message.id)
        return message


def make_runner(
    broker: MosquittoBroker,
    tmp_path: Path,
    probe: CountingProbe,
    facts: HardwareFacts = TEST_FACTS,
) -> AgentRunner:
    settings = load_settings(
        overrides={
            "site": SITE,
            "state_dir": str(tmp_path / "state"),
            "mqtt": {"broker": broker.url, "reconnect_max_s": 2.0, "keepalive_s": 5},
            "intervals": {"health": 0.2, "jitter_fraction": 0.0},
            "queue": {"rate_per_s": 500.0},
        },
        environ={},
    )
    identity = resolve_identity(tmp_path / "state", facts)
    return AgentRunner(settings, identity, SITE, [probe], state_dir=tmp_path / "state")


def test_birth_messages_are_retained_and_valid(mosquitto: MosquittoBroker, tmp_path: Path) -> None:
    probe = CountingProbe()
    runner = make_runner(mosquitto, tmp_path, probe)
    runner.start()
    try:
        wait_until(lambda: runner.stats.acked_total >= 1)
        # A subscriber that arrives later still gets hello and state: they are retained.
        connection, capture = subscribe(mosquitto, f"cw/v1/{SITE}/+/+")
        messages = capture.wait_for(lambda ms: len({m.topic for m in ms if m.retain}) >= 2)
        connection.stop()
        retained = {m.topic.rsplit("/", 1)[1]: m for m in messages if m.retain}
        hello = decode_message(retained["hello"].topic, retained["hello"].payload).message
        state = decode_message(retained["state"].topic, retained["state"].payload).message
        assert isinstance(hello, HelloMessage)
        assert hello.identity is not None and hello.identity.origin == "new"
        assert "health" in hello.capabilities
        assert isinstance(state, StateMessage) and state.status == "online"
    finally:
        runner.stop()


def test_clean_stop_publishes_offline_shutdown(mosquitto: MosquittoBroker, tmp_path: Path) -> None:
    runner = make_runner(mosquitto, tmp_path, CountingProbe())
    runner.start()
    wait_until(lambda: runner.connection.connected)
    runner.stop()
    connection, capture = subscribe(mosquitto, f"cw/v1/{SITE}/+/state")
    messages = capture.wait_for(lambda ms: len(ms) >= 1)
    connection.stop()
    state = decode_message(messages[0].topic, messages[0].payload).message
    assert isinstance(state, StateMessage)
    assert (state.status, state.reason) == ("offline", "shutdown")


def test_run_probes_command_triggers_a_collection(
    mosquitto: MosquittoBroker, tmp_path: Path
) -> None:
    probe = CountingProbe()
    runner = make_runner(mosquitto, tmp_path, probe)
    runner.settings.intervals.health = 3600.0
    runner._schedules[0].interval_s = 3600.0
    runner.start()
    try:
        wait_until(lambda: len(probe.produced) == 1 and runner.connection.connected)
        # The broker handles a connection's packets in order and the SUBSCRIBE to cmd goes
        # out first on connect: once a publish of the runner is acknowledged, it is in place.
        wait_until(lambda: runner.stats.acked_total >= 1)
        sender = MqttConnection(f"test-cmd-{free_port()}", mosquitto.address)
        sender.start()
        assert sender.wait_connected(10)
        command = CommandMessage(
            device_id=runner.device_id, site=SITE, command="run_probes", issued_by="test"
        )
        sender.publish(build_topic(SITE, runner.device_id, "cmd"), encode_message(command))
        wait_until(lambda: len(probe.produced) >= 2)
        sender.publish(build_topic(SITE, runner.device_id, "cmd"), b"{garbage")
        sender.stop()
        assert runner.stats.commands_total == 1
    finally:
        runner.stop()


def test_no_probe_thread_outlives_its_collection(
    mosquitto: MosquittoBroker, tmp_path: Path
) -> None:
    """Issue 18: a thread pool kept two idle worker threads (a stack each, on every lab PC)
    between collections that come minutes apart; a probe's thread now ends with its run."""
    probe = CountingProbe()
    runner = make_runner(mosquitto, tmp_path, probe)
    runner._schedules[0].interval_s = 3600.0
    runner.start()
    try:
        wait_until(lambda: runner.stats.acked_total >= 1, message="first health message sent")
        wait_until(
            lambda: not [t for t in threading.enumerate() if t.name.startswith("probe")],
            message="no probe thread left once the collection is done",
        )
        assert len(probe.produced) == 1
    finally:
        runner.stop()


def test_a_clone_never_sends_the_golden_image_s_queue_as_the_original(
    mosquitto: MosquittoBroker, tmp_path: Path
) -> None:
    """Issue 18 item 4: a PC cloned with the state dir copied found the golden image's
    queued messages and sent them under the original device's topics."""
    state = tmp_path / "state"
    golden = resolve_identity(state, HardwareFacts("uuid-golden", "g" * 32, ("02:00:00:00:00:0a",)))
    outbox = StoreAndForwardQueue(state / QUEUE_FILE, 1_000_000)
    for uptime in range(3):
        message = HealthMessage(device_id=golden.device_id, site=SITE, uptime_s=float(uptime))
        outbox.put(build_topic(SITE, golden.device_id, "health"), encode_message(message))
    outbox.close()

    connection, capture = subscribe(mosquitto, f"cw/v1/{SITE}/+/+")
    probe = CountingProbe()
    clone_facts = HardwareFacts("uuid-clone", "g" * 32, ("02:00:00:00:00:0b",))
    runner = make_runner(mosquitto, tmp_path, probe, clone_facts)
    assert runner.identity.info.origin == "reidentified"
    assert runner.device_id != golden.device_id
    runner.start()
    try:
        # The queue is oldest-first: once the clone's own messages arrive, the golden
        # image's would have gone before them.
        capture.wait_for(lambda ms: any(m.topic.endswith(f"{runner.device_id}/health") for m in ms))
    finally:
        runner.stop()
        connection.stop()
    as_golden = [m.topic for m in capture.messages if f"/{golden.device_id}/" in m.topic]
    assert as_golden == []
    assert runner.queue.dropped_total == 3, "the dropped messages are counted"


class SameInventoryProbe:
    """An inventory that never changes: the runner sends it at start, then only on change."""

    name = "inventory"
    kind = "inventory"

    def collect(self, context: ProbeContext) -> InventoryMessage:
        return InventoryMessage(
            device_id=context.device_id, site=context.site, digest="a" * 64, hostname="lab-01"
        )


def test_an_inventory_dropped_from_a_full_queue_is_sent_again(tmp_path: Path) -> None:
    """A long outage fills the queue and drops the oldest messages; the inventory, sent only
    when it changes, must not be lost for good with them."""
    settings = load_settings(
        overrides={
            "site": SITE,
            "state_dir": str(tmp_path / "state"),
            "mqtt": {"broker": f"mqtt://127.0.0.1:{free_port()}"},  # nobody listens
            "intervals": {"health": 0.05, "inventory_check": 0.5, "jitter_fraction": 0.0},
        },
        environ={},
    )
    identity = resolve_identity(tmp_path / "state", TEST_FACTS)
    runner = AgentRunner(
        settings,
        identity,
        SITE,
        [SameInventoryProbe(), CountingProbe()],
        state_dir=tmp_path / "state",
    )
    runner.queue.max_bytes = 8_000  # a small queue fills in a second of health messages
    runner.start()
    try:

        def inventories_queued() -> int:
            return sum(m.topic.endswith("/inventory") for m in runner.queue.peek(0, 1000))

        wait_until(lambda: inventories_queued() == 1)
        wait_until(lambda: runner.queue.dropped_total > 0 and inventories_queued() == 0)
        # Evicted unsent: the next check queues it again although its digest is unchanged.
        wait_until(lambda: inventories_queued() == 1)
    finally:
        runner.stop(timeout_s=0.5)


@pytest.mark.slow
def test_broker_outage_of_a_minute_loses_nothing(tmp_path: Path) -> None:
    broker = MosquittoBroker(tmp_path / "broker", free_port(), persistent=True)
    broker.workdir.mkdir()
    broker.start()
    connection, capture = subscribe(broker, f"cw/v1/{SITE}/+/health", durable=True)
    probe = CountingProbe()
    runner = make_runner(broker, tmp_path, probe)
    runner.start()
    try:
        wait_until(lambda: len(capture.on("health")) >= 5)
        broker.stop()
        outage_started = len(probe.produced)
        # The outage itself (a minute, as in the title): the scenario, not a wait for a result.
        time.sleep(float(os.environ.get("CW_TEST_OUTAGE_S", "60")))
        produced_in_gap = len(probe.produced) - outage_started
        assert produced_in_gap >= 10, "the probe kept producing while the broker was away"
        assert runner.queue.depth >= produced_in_gap - runner.settings.queue.max_inflight
        broker.start()
        wait_until(lambda: runner.queue.depth == 0, timeout_s=90)
        runner.stop()
        expected = set(probe.produced)
        try:
            capture.wait_for(
                lambda ms: expected <= {json.loads(m.payload)["id"] for m in ms}, timeout_s=30
            )
        except AssertionError:
            got = {json.loads(m.payload)["id"] for m in capture.on("health")}
            missing = [probe.produced.index(i) for i in expected - got]
            raise AssertionError(
                f"missing {len(missing)} of {len(expected)}: indexes {sorted(missing)[:50]}"
            ) from None
    finally:
        connection.stop()
        broker.stop()
    counts = Counter(json.loads(m.payload)["id"] for m in capture.on("health"))
    assert set(counts) == expected
    duplicates = sum(n - 1 for n in counts.values())
    # QoS 1 allows a redelivery of what was in flight when the connection dropped.
    assert duplicates <= 2 * runner.settings.queue.max_inflight
