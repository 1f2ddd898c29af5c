"""Shared checks every simulated device model must pass (Home Assistant's help_test_* idea).

``check_device_conformance`` runs one device of a model against a real broker and checks
what the wire contract promises: retained hello with identity fields, retained state with a
Last Will, inventory with the device's MAC/IP and a correct digest, readings that the
collector's own decoder accepts, and the commands a device obeys.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime

from campuswatch.agent.probes.inventory import inventory_digest
from campuswatch.firmware_sim.device import SimDevice
from campuswatch.firmware_sim.engine import Simulator
from campuswatch.firmware_sim.fleet import Fleet, School
from campuswatch.firmware_sim.schoolday import SimClock
from campuswatch.firmware_sim.transport import PerDeviceTransport
from campuswatch.wire.codec import decode_message, encode_message
from campuswatch.wire.messages import (
    CommandMessage,
    EventMessage,
    HelloMessage,
    InventoryMessage,
    Message,
    StateMessage,
)
from campuswatch.wire.mqtt import ReceivedMessage
from campuswatch.wire.mqtt_pool import MqttPool
from campuswatch.wire.topics import build_topic, subscription
from tests.support.mosquitto import MessageCapture, MosquittoBroker, subscribe

SITE = "sim-test-s01"
# A school morning, so every model has something to say.
CLASS_TIME = datetime.fromisoformat("2025-03-04T09:10:00+07:00")
READING_KINDS = {"pc": "health", "scanner": "discovery"}


@dataclass
class RunningDevice:
    device: SimDevice
    simulator: Simulator
    pool: MqttPool
    transport: PerDeviceTransport

    def on_pool(self, action: object) -> None:
        """Run ``action`` on the pool's thread and wait for it."""
        assert callable(action)
        done = threading.Event()

        def call() -> None:
            try:
                action()
            finally:
                done.set()

        self.pool.call_soon(call)
        assert done.wait(10), "the pool thread did not run the call"


@contextmanager
def running_device(broker: MosquittoBroker, model: type[SimDevice]) -> Iterator[RunningDevice]:
    device = model(index=0, seed=7, site=SITE, school=1, building="A", room="101")
    fleet = Fleet("sim-test", [School(1, SITE)], [device], {})
    pool = MqttPool(broker.address, reconnect_min_s=0.2, reconnect_max_s=1)
    transport = PerDeviceTransport(pool)
    # 60x: one report per real second, so the check sees several without waiting long.
    simulator = Simulator(fleet, transport, SimClock(CLASS_TIME, 60), seed=7, interval_s=60)
    simulator.start()
    pool.start(simulator.step)
    try:
        yield RunningDevice(device, simulator, pool, transport)
    finally:
        pool.stop()


def decoded(received: ReceivedMessage) -> Message:
    return decode_message(received.topic, received.payload).message


def _of_kind(capture: MessageCapture, device: SimDevice, kind: str) -> list[Message]:
    topic = build_topic(device.site, device.device_id, kind)
    return [decoded(m) for m in list(capture.messages) if m.topic == topic]


def wait_kind(
    capture: MessageCapture, device: SimDevice, kind: str, count: int = 1
) -> list[Message]:
    capture.wait_for(lambda _messages: len(_of_kind(capture, device, kind)) >= count)
    return _of_kind(capture, device, kind)


def send_command(broker: MosquittoBroker, device: SimDevice, command: str) -> None:
    sender, _ = subscribe(broker, "cw/v1/nothing/+/cmd")
    try:
        message = CommandMessage(
            device_id=device.device_id,
            site=device.site,
            command=command,  # type: ignore[arg-type]
            issued_by="test",
        )
        sender.publish(build_topic(device.site, device.device_id, "cmd"), encode_message(message))
    finally:
        sender.stop(timeout_s=2)


def check_device_conformance(broker: MosquittoBroker, model: type[SimDevice]) -> None:
    watcher, capture = subscribe(broker)
    try:
        with running_device(broker, model) as running:
            device = running.device
            hello = wait_kind(capture, device, "hello")[0]
            assert isinstance(hello, HelloMessage)
            assert hello.device_type == device.device_type
            for name in ("vendor", "model", "serial"):
                assert getattr(hello, name), f"hello has no {name}"
            if device.device_type == "pc":
                assert hello.identity is not None and hello.software == "campuswatch-agent"
            else:
                assert hello.mac == device.mac and hello.firmware_version == device.firmware_version
            states = wait_kind(capture, device, "state")
            assert isinstance(states[-1], StateMessage) and states[-1].status == "online"

            inventory = wait_kind(capture, device, "inventory")[0]
            assert isinstance(inventory, InventoryMessage)
            assert inventory.device_type == device.device_type
            assert inventory.digest == inventory_digest(inventory)
            assert [(i.mac, i.ipv4) for i in inventory.interfaces] == [(device.mac, [device.ip])]
            assert inventory.firmware_version == device.firmware_version

            reading_kind = READING_KINDS.get(device.device_type, "telemetry")
            wait_kind(capture, device, reading_kind, count=2)  # decode_message validated them

            # Retained: a collector that connects later still learns identity and state.
            late, late_capture = subscribe(broker, subscription(SITE, device.device_id))
            try:
                late_capture.wait_for(
                    lambda ms: (
                        {m.topic.rsplit("/", 1)[1] for m in ms if m.retain} >= {"hello", "state"}
                    )
                )
            finally:
                late.stop(timeout_s=2)

            before = len(wait_kind(capture, device, "inventory"))
            send_command(broker, device, "refresh_inventory")
            wait_kind(capture, device, "inventory", count=before + 1)

            send_command(broker, device, "identify")
            capture.wait_for(
                lambda _m: any(
                    isinstance(e, EventMessage) and e.event_type == "identify"
                    for e in _of_kind(capture, device, "event")
                )
            )

            send_command(broker, device, "reboot")
            try:
                capture.wait_for(
                    lambda _m: _reasons(capture, device)[-2:] == ["restart", "connected"]
                )
            except AssertionError:
                reasons = _reasons(capture, device)
                raise AssertionError(f"states {reasons}; {running.pool.stats}") from None

            # Vanish without DISCONNECT: the broker must publish the Last Will.
            running.on_pool(lambda: running.transport.take_offline(device, "abrupt"))
            capture.wait_for(lambda _m: _reasons(capture, device)[-1:] == ["will"])
    finally:
        watcher.stop(timeout_s=2)


def _reasons(capture: MessageCapture, device: SimDevice) -> list[str | None]:
    return [s.reason for s in _of_kind(capture, device, "state") if isinstance(s, StateMessage)]
