"""The wire contract: MQTT topics and message types shared by agents, devices and the collector.

Everything that crosses the broker is defined here and nowhere else. See docs/wire.md.

The names below are loaded on first use (PEP 562), not when the package is imported: a lab
PC's agent imports ``campuswatch.wire.messages`` and ``campuswatch.wire.mqtt`` directly, and
importing the package for them must not also pull in the validating decoder (issue 18).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from campuswatch.wire.codec import (
        MAX_PAYLOAD_BYTES,
        DecodedMessage,
        WireRejection,
        decode_message,
        encode_message,
    )
    from campuswatch.wire.ids import new_message_id, utc_now
    from campuswatch.wire.messages import (
        KIND_TYPES,
        SCHEMA_VERSION,
        AvMessage,
        AvProduct,
        CommandMessage,
        DiscoveredHost,
        DiscoveryMessage,
        EventMessage,
        HealthMessage,
        HelloMessage,
        InventoryMessage,
        Message,
        NetMessage,
        ProbeError,
        StateMessage,
        TelemetryMessage,
    )
    from campuswatch.wire.topics import KINDS, Topic, build_topic, parse_topic, subscription

_MODULE_OF = {
    **dict.fromkeys(
        (
            "MAX_PAYLOAD_BYTES",
            "DecodedMessage",
            "WireRejection",
            "decode_message",
            "encode_message",
        ),
        "codec",
    ),
    **dict.fromkeys(("new_message_id", "utc_now"), "ids"),
    **dict.fromkeys(
        (
            "KIND_TYPES",
            "SCHEMA_VERSION",
            "AvMessage",
            "AvProduct",
            "CommandMessage",
            "DiscoveredHost",
            "DiscoveryMessage",
            "EventMessage",
            "HealthMessage",
            "HelloMessage",
            "InventoryMessage",
            "Message",
            "NetMessage",
            "ProbeError",
            "StateMessage",
            "TelemetryMessage",
        ),
        "messages",
    ),
    **dict.fromkeys(("KINDS", "Topic", "build_topic", "parse_topic", "subscription"), "topics"),
}

__all__ = [
    "KINDS",
    "KIND_TYPES",
    "MAX_PAYLOAD_BYTES",
    "SCHEMA_VERSION",
    "AvMessage",
    "AvProduct",
    "CommandMessage",
    "DecodedMessage",
    "DiscoveredHost",
    "DiscoveryMessage",
    "EventMessage",
    "HealthMessage",
    "HelloMessage",
    "InventoryMessage",
    "Message",
    "NetMessage",
    "ProbeError",
    "StateMessage",
    "TelemetryMessage",
    "Topic",
    "WireRejection",
    "build_topic",
    "decode_message",
    "encode_message",
    "new_message_id",
    "parse_topic",
    "subscription",
    "utc_now",
]


def __getattr__(name: str) -> Any:
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
