"""Every connection of a device registers a will with a new message id (the collector drops
repeated ids, so a reused will would report a device offline once in its life)."""

from __future__ import annotations

import threading
import time

import pytest

from campuswatch.wire import encode_message
from campuswatch.wire.codec import decode_message
from campuswatch.wire.messages import StateMessage
from campuswatch.wire.mqtt import LastWill, MqttConnection, ReceivedMessage
from campuswatch.wire.mqtt_pool import MqttPool
from campuswatch.wire.topics import build_topic
from tests.support.mosquitto import MessageCapture, MosquittoBroker

pytestmark = pytest.mark.e2e
TOPIC = build_topic("school-a", "pc-1", "state")


def fresh_will() -> LastWill:
    offline = StateMessage(device_id="pc-1", site="school-a", status="offline", reason="will")
    return LastWill(TOPIC, encode_message(offline))


def will_ids(capture: MessageCapture, count: int) -> list[str]:
    def wills(messages: list[ReceivedMessage]) -> list[str]:
        ids = []
        for received in messages:
            message = decode_message(received.topic, received.payload).message
            if isinstance(message, StateMessage) and message.reason == "will":
                ids.append(message.id)
        return ids

    capture.wait_for(lambda messages: len(wills(messages)) >= count)
    return wills(capture.messages)


def observer(mosquitto: MosquittoBroker, capture: MessageCapture) -> MqttConnection:
    connection = MqttConnection("observer", mosquitto.address, on_message=capture)
    connection.subscribe(TOPIC, qos=1)
    connection.start()
    assert connection.wait_connected(10)
    return connection


def test_connection_registers_a_fresh_will_after_each_cut(mosquitto: MosquittoBroker) -> None:
    capture = MessageCapture()
    watcher = observer(mosquitto, capture)
    connects = threading.Semaphore(0)
    device = MqttConnection(
        "pc-1",
        mosquitto.address,
        will=fresh_will,
        reconnect_min_s=0.2,
        reconnect_max_s=1,
        on_connect=lambda _session_present: connects.release(),
    )
    device.start()
    try:
        for cut in range(1, 3):
            # A new connection each round, not the old one paho has not yet seen closed.
            assert connects.acquire(timeout=10)
            device._client.socket().close()  # type: ignore[union-attr]  # the cable, not DISCONNECT
            will_ids(capture, cut)
        assert connects.acquire(timeout=10)
        ids = will_ids(capture, 2)
        assert len(set(ids)) == len(ids) == 2
    finally:
        device.stop()
        watcher.stop()


def test_pooled_client_registers_a_fresh_will_each_connection(
    mosquitto: MosquittoBroker,
) -> None:
    capture = MessageCapture()
    watcher = observer(mosquitto, capture)
    pool = MqttPool(mosquitto.address, reconnect_min_s=0.2, reconnect_max_s=1.0)
    pool.start()
    client = pool.add("pc-1", will=fresh_will)
    try:
        for cut in range(1, 3):
            deadline = time.monotonic() + 10
            while not client.connected:
                assert time.monotonic() < deadline
                time.sleep(0.05)
            # Socket closed without DISCONNECT (the broker sends the will), from the loop.
            pool.call_soon(client.drop)
            will_ids(capture, cut)
            pool.call_soon(client.resume)
        ids = will_ids(capture, 2)
        assert len(set(ids)) == len(ids) == 2
    finally:
        pool.stop()
        watcher.stop()
