"""CampusWatch's own clients against the embedded broker: the collector's ingest (persistent
session, manual acks), the agent runner, and the simulator's pool at demo scale."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from campuswatch.agent.identity import HardwareFacts, resolve_identity
from campuswatch.agent.runner import AgentRunner
from campuswatch.agent.settings import load_settings
from campuswatch.collector.broker.embedded import BrokerThread
from campuswatch.collector.db.models import ProcessedMessage
from campuswatch.firmware_sim.engine import Simulator
from campuswatch.firmware_sim.fleet import build_fleet
from campuswatch.firmware_sim.schoolday import SimClock
from campuswatch.firmware_sim.transport import PerDeviceTransport
from campuswatch.wire import HealthMessage, decode_message, encode_message
from campuswatch.wire.messages import HelloMessage, StateMessage
from campuswatch.wire.mqtt import LastWill, MqttConnection
from campuswatch.wire.mqtt_pool import MqttPool
from tests.agent.test_runner import CountingProbe
from tests.collector.conftest import RunningCollector, collectors_on
from tests.collector.test_ingest_e2e import DEVICE, SITE, lab_pc_messages, wait_until
from tests.firmware_sim.helpers import TUESDAY_MORNING
from tests.support.embedded_broker import subscribe_embedded
from tests.support.ports import free_port

Factory = Callable[..., RunningCollector]


@pytest.fixture
def collectors(embedded_broker: BrokerThread, tmp_path: Path) -> Iterator[Factory]:
    with collectors_on(embedded_broker.url, tmp_path) as start:
        yield start


def publisher(broker: BrokerThread, will: LastWill | None = None) -> MqttConnection:
    connection = MqttConnection(f"test-pub-{free_port()}", broker.address, will=will)
    connection.start()
    assert connection.wait_connected(10)
    return connection


def test_collector_stores_what_our_connection_publishes(
    embedded_broker: BrokerThread, collectors: Factory
) -> None:
    collector = collectors()
    sender = publisher(embedded_broker)
    for topic, payload in lab_pc_messages():
        kind = topic.rsplit("/", 1)[1]
        assert sender.publish(topic, payload, retain=kind in ("hello", "state")) is not None

    def device() -> Any:
        response = collector.api.get(f"/api/v1/devices/{DEVICE}")
        if response.status_code == 200 and "av" in response.json()["latest"]:
            return response.json()
        return None

    found = wait_until(device)
    assert (found["status"], found["av_status"]) == ("online", "at_risk")
    assert collector.get("/api/v1/assets", search="5CD1234XYZ")["total"] == 1
    sender.stop()


def test_a_will_from_our_connection_marks_the_device_offline(
    embedded_broker: BrokerThread, collectors: Factory
) -> None:
    collector = collectors()
    offline = StateMessage(device_id=DEVICE, site=SITE, status="offline", reason="will")
    topic = f"cw/v1/{SITE}/{DEVICE}/state"
    device = publisher(embedded_broker, will=LastWill(topic, encode_message(offline)))
    for message_topic, payload in lab_pc_messages()[:2]:  # hello, state online
        device.publish(message_topic, payload, retain=True)
    wait_until(
        lambda: collector.api.get(f"/api/v1/devices/{DEVICE}").json().get("status") == "online"
    )
    device._client.loop_stop()  # the agent's process dies: no DISCONNECT
    sock = device._client.socket()
    assert sock is not None
    sock.close()  # type: ignore[union-attr]
    wait_until(
        lambda: collector.api.get(f"/api/v1/devices/{DEVICE}").json().get("status") == "offline"
    )


def test_collector_restart_loses_nothing_published_while_it_was_down(
    embedded_broker: BrokerThread, collectors: Factory
) -> None:
    first = collectors(collector_id="restart-test")
    first.service.stop()
    sender = publisher(embedded_broker)
    ids = []
    for n in range(50):
        message = HealthMessage(device_id=DEVICE, site=SITE, uptime_s=float(n))
        ids.append(message.id)
        assert sender.publish(f"cw/v1/{SITE}/{DEVICE}/health", encode_message(message))
    wait_until(lambda: embedded_broker.stats.messages_received_total >= 50)
    second = collectors(collector_id="restart-test", data_dir=first.service.settings.data_dir)
    wait_until(lambda: second.service.ingestor.stats.stored_total >= 50)
    with second.service.sessions() as session:
        stored = session.scalar(
            select(func.count())
            .select_from(ProcessedMessage)
            .where(ProcessedMessage.message_id.in_(ids))
        )
    assert stored == 50
    sender.stop()


def test_agent_runner_birth_and_clean_stop(embedded_broker: BrokerThread, tmp_path: Path) -> None:
    settings = load_settings(
        overrides={
            "site": "school-a",
            "state_dir": str(tmp_path / "state"),
            "mqtt": {"broker": embedded_broker.url, "reconnect_max_s": 2.0, "keepalive_s": 5},
            "intervals": {"health": 0.2, "jitter_fraction": 0.0},
            "queue": {"rate_per_s": 500.0},
        },
        environ={},
    )
    identity = resolve_identity(
        tmp_path / "state", HardwareFacts("uuid-test", "m" * 32, ("02:00:00:00:00:01",))
    )
    probe = CountingProbe()
    runner = AgentRunner(settings, identity, "school-a", [probe], state_dir=tmp_path / "state")
    runner.start()
    try:
        wait_until(lambda: runner.stats.acked_total >= 3)
        watcher, capture = subscribe_embedded(embedded_broker, "cw/v1/school-a/+/+")
        retained = capture.wait_for(lambda ms: len({m.topic for m in ms if m.retain}) >= 2)
        by_kind = {m.topic.rsplit("/", 1)[1]: m for m in retained if m.retain}
        hello = decode_message(by_kind["hello"].topic, by_kind["hello"].payload).message
        assert isinstance(hello, HelloMessage) and "health" in hello.capabilities
        capture.wait_for(lambda ms: any(m.topic.endswith("/health") for m in ms))
    finally:
        runner.stop()
    capture.wait_for(
        lambda ms: any(m.topic.endswith("/state") and b'"shutdown"' in m.payload for m in ms)
    )
    watcher.stop()


def _on_pool(pool: MqttPool, action: Callable[[], None]) -> None:
    done = threading.Event()

    def call() -> None:
        action()
        done.set()

    pool.call_soon(call)
    assert done.wait(10)


@pytest.mark.slow
def test_simulator_pool_at_demo_scale_with_an_uplink_cut(embedded_broker: BrokerThread) -> None:
    watcher, capture = subscribe_embedded(embedded_broker)
    fleet = build_fleet(seed=7, schools=3, devices=300)
    pool = MqttPool(embedded_broker.address, reconnect_min_s=0.2, reconnect_max_s=1)
    transport = PerDeviceTransport(pool)
    simulator = Simulator(fleet, transport, SimClock(TUESDAY_MORNING, 60), seed=7)
    simulator.start()
    pool.start(simulator.step)
    try:
        reporting = {d.device_id for d in fleet.devices if d.device_type != "scanner"}
        capture.wait_for(
            lambda ms: (
                {
                    m.topic.split("/")[3]
                    for m in ms
                    if m.topic.endswith("/telemetry") or m.topic.endswith("/health")
                }
                >= reporting
            ),
            timeout_s=60,
        )
        everyone = {d.device_id for d in simulator.devices}
        assert everyone <= {m.topic.split("/")[3] for m in capture.on("hello")}
        assert pool.stats.connected == len(pool.clients) >= 300
        assert embedded_broker.stats.connections == len(pool.clients) + 1  # + the watcher
        for message in list(capture.messages):
            decode_message(message.topic, message.payload)

        school3 = {d.device_id for d in simulator.devices if d.site == "sim-d1-s03"}
        _on_pool(pool, lambda: transport.set_uplink("sim-d1-s03", False))

        def offline_wills() -> set[str]:
            found = set()
            for message in capture.on("state"):
                state = decode_message(message.topic, message.payload).message
                assert isinstance(state, StateMessage)
                if state.status == "offline" and state.reason == "will":
                    found.add(state.device_id)
            return found

        capture.wait_for(lambda _: offline_wills() >= school3, timeout_s=30)
        assert not offline_wills() - school3
        seen = len(capture.messages)
        _on_pool(pool, lambda: transport.set_uplink("sim-d1-s03", True))
        capture.wait_for(
            lambda ms: (
                {m.topic.split("/")[3] for m in ms[seen:] if m.topic.endswith("/hello")} >= school3
            ),
            timeout_s=30,
        )
        wait_until(lambda: pool.stats.connected == len(pool.clients))
    finally:
        pool.stop()
        watcher.stop(timeout_s=2)
