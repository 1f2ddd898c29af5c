"""A subscriber that acknowledges only what it has stored asks the broker (MQTT 5 Receive
Maximum) for no more unacknowledged messages than it can hold, so paho's network thread
need not block on a full hand-over queue while it could be reading and acknowledging."""

from __future__ import annotations

import threading

import pytest

from campuswatch.wire.mqtt import MqttConnection, ReceivedMessage
from tests.support.mosquitto import MessageCapture, MosquittoBroker
from tests.support.waiting import wait_until

pytestmark = pytest.mark.e2e


class Barrier:
    """Passed as a connection's ``on_published``: ``wait(connection)`` returns once it has
    handled every packet the broker wrote to it before.

    The broker answers our PUBLISH with a PUBACK on the same socket, after whatever it sent
    us earlier, and paho handles incoming packets in order."""

    def __init__(self) -> None:
        self._acked = threading.Event()

    def __call__(self, _mid: int) -> None:
        self._acked.set()

    def wait(self, connection: MqttConnection) -> None:
        self._acked.clear()
        assert connection.publish("barrier/ping", b"", qos=1) is not None
        assert self._acked.wait(10), "no PUBACK for the barrier"


def test_the_broker_sends_no_more_unacknowledged_messages_than_receive_maximum(
    mosquitto: MosquittoBroker,
) -> None:
    held: list[ReceivedMessage] = []
    lock = threading.Lock()

    def keep(message: ReceivedMessage) -> None:
        with lock:
            held.append(message)

    slow_barrier, witness_barrier = Barrier(), Barrier()
    slow = MqttConnection(
        "slow-subscriber",
        mosquitto.address,
        manual_ack=True,
        receive_maximum=10,
        on_message=keep,
        on_published=slow_barrier,
    )
    slow.subscribe("load/#", qos=1)
    slow.start()
    everything = MessageCapture()
    witness = MqttConnection(
        "witness", mosquitto.address, on_message=everything, on_published=witness_barrier
    )
    witness.subscribe("load/#", qos=1)
    witness.start()
    publisher = MqttConnection("publisher", mosquitto.address, max_inflight=100)
    publisher.start()
    try:
        assert slow.wait_connected(10) and witness.wait_connected(10)
        assert publisher.wait_connected(10)
        # Subscribed: SUBSCRIBE went out on connecting, before the barrier's PUBLISH.
        slow_barrier.wait(slow)
        witness_barrier.wait(witness)
        before = len(everything.messages)

        for n in range(50):
            publisher.publish(f"load/{n}", str(n).encode(), qos=1)
        # The broker has handled all 50 once a subscriber without a limit has them all.
        wait_until(lambda: len(everything.messages) >= before + 50, message="all 50 routed")
        slow_barrier.wait(slow)
        with lock:
            assert len(held) == 10, "the broker sent more than the subscriber can hold"
            assert [m.payload for m in held] == [str(n).encode() for n in range(10)]
        # Not asserted: the window after acknowledging. Mosquitto 2.0.11 (Debian 12) refills
        # a whole window per PUBACK (eclipse-mosquitto/mosquitto#2301), so past the first
        # window the bound is the ingest queue's blocking hand-over, not the broker.
    finally:
        for connection in (slow, witness, publisher):
            connection.stop()
