"""The pool against a real broker: many devices, both modes, wills when a school's link dies."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable

import pytest

from campuswatch import __version__
from campuswatch.firmware_sim.engine import Simulator
from campuswatch.firmware_sim.fleet import build_fleet
from campuswatch.firmware_sim.schoolday import SimClock
from campuswatch.firmware_sim.transport import GatewayTransport, PerDeviceTransport, Transport
from campuswatch.wire.codec import decode_message
from campuswatch.wire.messages import StateMessage
from campuswatch.wire.mqtt_pool import MqttPool
from tests.firmware_sim.helpers import TUESDAY_MORNING
from tests.support.mosquitto import MosquittoBroker, subscribe


def _on_pool(pool: MqttPool, action: Callable[[], None]) -> None:
    done = threading.Event()

    def call() -> None:
        action()
        done.set()

    pool.call_soon(call)
    assert done.wait(10)


@pytest.mark.parametrize("mode", ["per-device", "gateway"])
def test_two_hundred_devices_then_an_uplink_cut(mosquitto: MosquittoBroker, mode: str) -> None:
    watcher, capture = subscribe(mosquitto)
    fleet = build_fleet(seed=4, schools=2, devices=200)
    pool = MqttPool(mosquitto.address, reconnect_min_s=0.2, reconnect_max_s=1)
    transport: Transport = (
        PerDeviceTransport(pool) if mode == "per-device" else GatewayTransport(pool, __version__)
    )
    simulator = Simulator(fleet, transport, SimClock(TUESDAY_MORNING, 60), seed=4)
    simulator.start()
    pool.start(simulator.step)
    try:
        everyone = {d.device_id for d in simulator.devices}
        capture.wait_for(
            lambda ms: (
                {
                    m.topic.split("/")[3]
                    for m in ms
                    if m.topic.endswith("/telemetry") or m.topic.endswith("/health")
                }
                >= {d.device_id for d in fleet.devices if d.device_type != "scanner"}
            )
        )
        hellos = {m.topic.split("/")[3] for m in capture.on("hello")}
        assert everyone <= hellos
        expected_connections = 202 if mode == "per-device" else 2
        assert len(pool.clients) == expected_connections
        assert pool.stats.connected == expected_connections
        for message in list(capture.messages):
            decode_message(message.topic, message.payload)

        _on_pool(pool, lambda: transport.set_uplink("sim-d1-s02", False))
        school2 = {d.device_id for d in simulator.devices if d.site == "sim-d1-s02"}

        def offline_wills() -> set[str]:
            found = set()
            for message in capture.on("state"):
                state = decode_message(message.topic, message.payload).message
                assert isinstance(state, StateMessage)
                if state.status == "offline" and state.reason == "will":
                    found.add(state.device_id)
            return found

        try:
            capture.wait_for(lambda _m: offline_wills() >= school2)
        except AssertionError:
            raise AssertionError(
                f"no will for {sorted(school2 - offline_wills())[:5]} of {len(school2)}"
            ) from None
        assert not offline_wills() & {
            d.device_id for d in simulator.devices if d.site == "sim-d1-s01"
        }
        before = Counter(m.topic.split("/")[3] for m in capture.messages)
        _on_pool(pool, lambda: transport.set_uplink("sim-d1-s02", True))
        capture.wait_for(
            lambda ms: (
                {
                    m.topic.split("/")[3]
                    for m in ms[sum(before.values()) :]
                    if m.topic.endswith("/hello")
                }
                >= school2
            )
        )
    finally:
        pool.stop()
        watcher.stop(timeout_s=2)
