"""Encoding and validating decoding of wire messages.

``decode_message`` is the single gate every received payload passes; it raises
``WireRejection`` with a short machine reason (used as a metric label) and a human detail.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final, Literal

import msgspec

from campuswatch.wire.ids import utc_now
from campuswatch.wire.messages import KIND_TYPES, SCHEMA_VERSION, Message, kind_of
from campuswatch.wire.topics import Topic, TopicError, parse_topic

# Inventory with a full software list is the largest message (~2,000 packages ≈ 150 kB).
MAX_PAYLOAD_BYTES: Final = 512 * 1024
# A device clock this far ahead is treated as broken, not as "the future".
MAX_FUTURE_SKEW: Final = timedelta(minutes=10)

RejectReason = Literal[
    "topic", "oversize", "json", "schema", "kind_mismatch", "version", "identity", "future"
]
REJECT_REASONS: Final[tuple[RejectReason, ...]] = (
    "topic",
    "oversize",
    "json",
    "schema",
    "kind_mismatch",
    "version",
    "identity",
    "future",
)


class WireRejection(ValueError):
    def __init__(self, reason: RejectReason, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason: RejectReason = reason
        self.detail = detail


@dataclass(frozen=True, slots=True)
class DecodedMessage:
    topic: Topic
    message: Message
    received_at: datetime
    clock_skew_s: float
    """Device time minus receive time; large negative values are normal for a replayed backlog."""


_encoder = msgspec.json.Encoder()
_decoders = {kind: msgspec.json.Decoder(cls) for kind, cls in KIND_TYPES.items()}


class _VersionProbe(msgspec.Struct):
    v: object = None


_version_decoder = msgspec.json.Decoder(_VersionProbe)


def encode_message(message: Message) -> bytes:
    return _encoder.encode(message)


def decode_message(
    topic: str,
    payload: bytes,
    *,
    received_at: datetime | None = None,
    max_future_skew: timedelta = MAX_FUTURE_SKEW,
) -> DecodedMessage:
    """Parse and validate one MQTT message; raise ``WireRejection`` on any problem."""
    received_at = received_at or utc_now()
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise WireRejection("oversize", f"{len(payload)} bytes > {MAX_PAYLOAD_BYTES}")
    try:
        parsed_topic = parse_topic(topic)
    except TopicError as exc:
        raise WireRejection("topic", str(exc)) from None
    try:
        version = _version_decoder.decode(payload).v
    except msgspec.ValidationError as exc:
        raise WireRejection("schema", str(exc)[:300]) from None
    except msgspec.DecodeError as exc:
        raise WireRejection("json", str(exc)[:300]) from None
    if version != SCHEMA_VERSION or isinstance(version, bool):
        raise WireRejection("version", f"schema version {version!r}, expected {SCHEMA_VERSION}")
    try:
        message = _decoders[parsed_topic.kind].decode(payload)
    except msgspec.ValidationError as exc:
        text = str(exc)
        mismatch = "Invalid value" in text and "`$.kind`" in text
        reason: RejectReason = "kind_mismatch" if mismatch else "schema"
        raise WireRejection(reason, text[:500]) from None
    except msgspec.DecodeError as exc:
        raise WireRejection("json", str(exc)[:300]) from None
    if kind_of(message) != parsed_topic.kind:
        raise WireRejection("kind_mismatch", f"payload kind {kind_of(message)!r} on {topic!r}")
    if message.device_id != parsed_topic.device_id or message.site != parsed_topic.site:
        raise WireRejection(
            "identity",
            f"payload says {message.site}/{message.device_id}, "
            f"topic says {parsed_topic.site}/{parsed_topic.device_id}",
        )
    skew = (message.ts - received_at).total_seconds()
    if skew > max_future_skew.total_seconds():
        raise WireRejection("future", f"timestamp {message.ts.isoformat()} is {skew:.0f} s ahead")
    return DecodedMessage(parsed_topic, message, received_at, skew)
