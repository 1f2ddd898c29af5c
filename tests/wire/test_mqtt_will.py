"""Every connection of a device registers a will with a new message id (the collector drops
repeated ids, so a reused will would report a device offline once in its life)."""

from __future__ import annotations

import shutil
import socket
import subprocess
import threading

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
    connects = threading.Semaphore(0)
    client = pool.add("pc-1", will=fresh_will, on_connect=lambda _client: connects.release())
    try:
        for cut in range(1, 3):
            # Each round waits for a new connection, not for a flag the last one may still show.
            assert connects.acquire(timeout=20)
            # Socket closed without DISCONNECT (the broker sends the will), from the loop.
            pool.call_soon(client.drop)
            will_ids(capture, cut)
            pool.call_soon(client.resume)
        ids = will_ids(capture, 2)
        assert len(set(ids)) == len(ids) == 2
    finally:
        pool.stop()
        watcher.stop()


def test_a_dropped_pooled_client_is_down_before_the_broker_can_fire_its_will(
    mosquitto: MosquittoBroker, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The flake of the test above, made deterministic: ``drop`` half-closed the socket and
    only then marked the client down. The broker fires the will as soon as it reads the FIN;
    a thread that saw the will could still read ``connected`` (and ``stats.connected``) as up,
    and a caller that waits for "connected" before dropping again dropped the resumed client
    before it had reconnected, holding it down for good. Here the pool's thread is held right
    after the FIN until the will has arrived, which is the interleaving a loaded machine made."""
    capture = MessageCapture()
    watcher = observer(mosquitto, capture)
    pool = MqttPool(mosquitto.address)
    connects = threading.Semaphore(0)
    client = pool.add("pc-1", will=fresh_will, on_connect=lambda _client: connects.release())
    will_seen = threading.Event()
    real_shutdown = socket.socket.shutdown

    def shutdown_then_stall(sock: socket.socket, how: int) -> None:
        real_shutdown(sock, how)
        if sock is client.paho.socket():
            assert will_seen.wait(20), "the pool's thread was never let go"

    monkeypatch.setattr(socket.socket, "shutdown", shutdown_then_stall)
    pool.start()
    try:
        assert connects.acquire(timeout=20)
        pool.call_soon(client.drop)
        will_ids(capture, 1)
        seen_connected, seen_count = client.connected, pool.stats.connected
        will_seen.set()
        assert (seen_connected, seen_count) == (False, 0)
    finally:
        will_seen.set()
        pool.stop()
        watcher.stop()


def test_pooled_client_reconnecting_by_itself_registers_a_fresh_will(
    mosquitto: MosquittoBroker,
) -> None:
    """Not only ``resume``: the pool's own reconnect after the broker ended a connection
    (here another connection with the same client id) must carry a new will too."""
    capture = MessageCapture()
    watcher = observer(mosquitto, capture)
    pool = MqttPool(mosquitto.address, reconnect_min_s=0.2, reconnect_max_s=1.0)
    connects = threading.Semaphore(0)
    client = pool.add("pc-1", will=fresh_will, on_connect=lambda _client: connects.release())
    pool.start()
    try:
        assert connects.acquire(timeout=20)
        # Taken over: the broker closes the pool's connection and publishes its will.
        mosquitto_pub = shutil.which("mosquitto_pub") or "/usr/bin/mosquitto_pub"
        subprocess.run(
            [mosquitto_pub, "-p", str(mosquitto.port), "-i", "pc-1", "-t", "x", "-m", "x"],
            check=True,
            timeout=30,
        )
        will_ids(capture, 1)
        assert connects.acquire(timeout=20)  # back by itself, not through resume
        pool.call_soon(client.drop)
        ids = will_ids(capture, 2)
        assert len(set(ids)) == len(ids) == 2
    finally:
        pool.stop()
        watcher.stop()
