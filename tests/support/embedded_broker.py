"""The demo's embedded MQTT broker on a free port, in a thread of the test process."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from campuswatch.collector.broker.embedded import BrokerThread
from campuswatch.wire.mqtt import MqttConnection
from tests.support.mosquitto import MessageCapture
from tests.support.ports import free_port


@pytest.fixture
def embedded_broker() -> Iterator[BrokerThread]:
    broker = BrokerThread(port=free_port()).start()
    yield broker
    broker.stop()
    # A handler that raised anything but a protocol violation is a broker bug.
    assert broker.stats.closed_total["internal_error"] == 0


def subscribe_embedded(
    broker: BrokerThread, topic_filter: str = "cw/v1/#"
) -> tuple[MqttConnection, MessageCapture]:
    """A test subscriber through our own ``MqttConnection``."""
    capture = MessageCapture()
    connection = MqttConnection(
        f"test-sub-{free_port()}", broker.address, on_message=capture, reconnect_max_s=2
    )
    connection.subscribe(topic_filter, qos=1)
    connection.start()
    assert connection.wait_connected(10), "test subscriber could not connect"
    return connection, capture
