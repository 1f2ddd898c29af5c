"""MQTT destination against a real Mosquitto."""

from __future__ import annotations

import json

import pytest

from campuswatch.collector.forward.base import DestinationUnavailable, OutboxItem
from campuswatch.collector.forward.mqtt_destination import (
    MqttDestination,
    check_topic_template,
    topic_for,
)
from tests.collector.forward.samples import OPENED_AT, av_disabled
from tests.support.mosquitto import MosquittoBroker, subscribe


def item(index: int, **overrides: object) -> OutboxItem:
    n = av_disabled(alert_id=index, event_id=f"evt-{index}", **overrides)
    return OutboxItem(index, "ioc", n, 1, OPENED_AT)


def test_alerts_are_published_per_site_with_qos1_and_no_retain(
    mosquitto: MosquittoBroker,
) -> None:
    subscriber, capture = subscribe(mosquitto, "cw/alerts/v1/#")
    destination = MqttDestination(mosquitto.url, client_id="fwd-test")
    try:
        destination.send([item(1), item(2, site_id="thcs/+#odd")])
        messages = capture.wait_for(lambda m: len(m) >= 2)
        by_topic = {m.topic: m for m in messages}
        assert set(by_topic) == {"cw/alerts/v1/thcs-ndc-lab1", "cw/alerts/v1/thcs___odd"}
        first = by_topic["cw/alerts/v1/thcs-ndc-lab1"]
        assert first.qos == 1
        assert not first.retain
        document = json.loads(first.payload)
        assert document["event"]["id"] == "evt-1"
        assert document["rule"]["id"] == "av.realtime_off"
    finally:
        destination.close()
        subscriber.stop()


def test_broker_outage_is_unavailable_then_recovers(mosquitto: MosquittoBroker) -> None:
    destination = MqttDestination(mosquitto.url, client_id="fwd-outage", ack_timeout_s=2)
    try:
        destination.send([item(1)])
        mosquitto.stop()
        with pytest.raises(DestinationUnavailable):
            destination.send([item(2)])
        mosquitto.start()
        subscriber, capture = subscribe(mosquitto, "cw/alerts/v1/#")
        destination.ack_timeout_s = 15  # paho reconnects with back-off of up to a few seconds
        destination.send([item(3)])
        messages = capture.wait_for(lambda m: len(m) >= 1)
        assert json.loads(messages[0].payload)["event"]["id"] == "evt-3"
        subscriber.stop()
    finally:
        destination.close()


def test_topic_templates_are_checked() -> None:
    assert topic_for("cw/alerts/{district_id}/{level}", av_disabled()) == "cw/alerts/cau-giay/high"
    for bad in ("cw/alerts/#", "cw/{nope}", "cw/{site_id"):
        with pytest.raises(ValueError):
            check_topic_template(bad)
