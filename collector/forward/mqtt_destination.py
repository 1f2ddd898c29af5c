"""Alerts published to an MQTT broker (QoS 1, not retained) for IOC wall displays and bridges.

All MQTT work goes through ``campuswatch.wire.mqtt``; a batch counts as sent only when the
broker has acknowledged every message (PUBACK), so a broker restart never loses one.
The default topic sits outside ``cw/v1/#`` so the collector's own ingest subscription never
receives its alerts back as malformed device messages.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Sequence
from typing import Final, Literal

from campuswatch.collector.forward import PRODUCT, PRODUCT_VERSION, VENDOR
from campuswatch.collector.forward.base import (
    DestinationRejected,
    DestinationUnavailable,
    OutboxItem,
)
from campuswatch.collector.forward.cef import render_cef
from campuswatch.collector.forward.json_formats import render_ecs, render_ocsf
from campuswatch.collector.signals import AlertNotification
from campuswatch.wire.mqtt import MqttConnection, TlsOptions, parse_broker_url

DEFAULT_TOPIC: Final = "cw/alerts/v1/{site_id}"
TOPIC_FIELDS: Final = (
    "site_id",
    "school_id",
    "district_id",
    "province_id",
    "rule_id",
    "level",
    "event",
    "device_id",
)
# A value must stay one topic level: wildcards and separators would change the topic's shape.
_TOPIC_UNSAFE: Final = re.compile(r"[+#/\x00]")

MqttFormat = Literal["ecs", "ocsf", "cef"]


def topic_for(template: str, n: AlertNotification) -> str:
    values = {
        name: _TOPIC_UNSAFE.sub("_", str(getattr(n, name) or "unknown")) for name in TOPIC_FIELDS
    }
    return template.format_map(values)


def check_topic_template(template: str) -> None:
    """Refuse at start-up a template naming fields that do not exist, or with wildcards."""
    if "+" in template or "#" in template:
        raise ValueError(f"topic template {template!r} must not contain MQTT wildcards")
    placeholders = dict.fromkeys(TOPIC_FIELDS, "x")
    try:
        template.format_map(placeholders)
    except (KeyError, IndexError, ValueError) as exc:
        raise ValueError(
            f"topic template {template!r} may only use {{{'}, {'.join(TOPIC_FIELDS)}}}"
        ) from exc


class MqttDestination:
    def __init__(
        self,
        broker_url: str,
        *,
        topic_template: str = DEFAULT_TOPIC,
        message_format: MqttFormat = "ecs",
        qos: int = 1,
        client_id: str = "campuswatch-forwarder",
        ack_timeout_s: float = 10.0,
        ca_file: str | None = None,
        cert_file: str | None = None,
        key_file: str | None = None,
        vendor: str = VENDOR,
        product: str = PRODUCT,
        product_version: str = PRODUCT_VERSION,
        language: str = "en",
    ) -> None:
        check_topic_template(topic_template)
        if qos not in (1, 2):
            raise ValueError("alerts need an acknowledged delivery: qos must be 1 or 2")
        self.topic_template = topic_template
        self.message_format: MqttFormat = message_format
        self.language = language
        self.qos = qos
        self.ack_timeout_s = ack_timeout_s
        self._product = (vendor, product, product_version)
        self._acked: set[int] = set()
        self._acked_changed = threading.Condition()
        tls = TlsOptions(ca_file, cert_file, key_file) if ca_file or cert_file else None
        self._connection = MqttConnection(
            client_id,
            parse_broker_url(broker_url),
            tls=tls,
            reconnect_max_s=30,
            on_published=self._on_published,
        )
        self._connection.start()

    def __repr__(self) -> str:
        return f"MqttDestination({self._connection.broker})"

    def _on_published(self, mid: int) -> None:
        with self._acked_changed:
            self._acked.add(mid)
            self._acked_changed.notify_all()

    def render(self, n: AlertNotification) -> bytes:
        vendor, product, version = self._product
        if self.message_format == "cef":
            return render_cef(
                n, vendor=vendor, product=product, version=version, language=self.language
            ).encode()
        render = render_ecs if self.message_format == "ecs" else render_ocsf
        document = render(
            n, vendor=vendor, product=product, version=version, language=self.language
        )
        return json.dumps(document, ensure_ascii=False, separators=(",", ":")).encode()

    def send(self, batch: Sequence[OutboxItem]) -> None:
        if not batch:
            return
        if not self._connection.wait_connected(self.ack_timeout_s):
            raise DestinationUnavailable(
                f"{self!r} not connected: {self._connection.last_error or 'connecting'}"
            )
        try:
            messages = [(topic_for(self.topic_template, i.notification), i) for i in batch]
        except (KeyError, ValueError) as exc:
            raise DestinationRejected(f"cannot build topic: {exc}") from exc
        with self._acked_changed:
            # One batch in flight at a time (one runner thread per destination): late PUBACKs of
            # an abandoned batch must not be mistaken for this one's when paho reuses a mid.
            self._acked.clear()
        waiting: set[int] = set()
        for topic, item in messages:
            mid = self._connection.publish(
                topic, self.render(item.notification), qos=self.qos, retain=False
            )
            if mid is None:
                raise DestinationUnavailable(f"{self!r}: connection lost while publishing")
            waiting.add(mid)
        deadline = time.monotonic() + self.ack_timeout_s
        with self._acked_changed:
            while not waiting <= self._acked:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    missing = len(waiting - self._acked)
                    raise DestinationUnavailable(f"{self!r}: {missing} message(s) not acknowledged")
                self._acked_changed.wait(remaining)
            self._acked -= waiting

    def close(self) -> None:
        self._connection.stop()
