"""The wire contract: MQTT topics and message types shared by agents, devices and the collector.

Everything that crosses the broker is defined here and nowhere else. See docs/wire.md.
"""

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
