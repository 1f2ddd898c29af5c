"""Encoding and validating decoding of wire messages.

``decode_message`` is the single gate every received payload passes; it raises
``WireRejection`` with a short machine reason (used as a metric label) and a human detail.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from typing import Any, Final, Literal, get_args

import msgspec

from campuswatch.wire.ids import utc_now
from campuswatch.wire.messages import KIND_TYPES, SCHEMA_VERSION, Message, kind_of
from campuswatch.wire.topics import Topic, TopicError, parse_topic

# Inventory with a full software list is the largest message (~2,000 packages ≈ 150 kB).
MAX_PAYLOAD_BYTES: Final = 512 * 1024
# A device clock this far ahead is treated as broken, not as "the future".
MAX_FUTURE_SKEW: Final = timedelta(minutes=10)
# Arrays and objects nested deeper than this are refused before msgspec sees them: its
# decoder recurses, so ~1,000 levels (2 kB of brackets) raise RecursionError. Real messages
# nest 4 deep (inventory → interfaces → item → ipv4); unknown fields get the same bound.
MAX_DEPTH: Final = 32

RejectReason = Literal[
    "topic",
    "oversize",
    "depth",
    "json",
    "schema",
    "kind_mismatch",
    "version",
    "identity",
    "future",
    "invalid",
]
REJECT_REASONS: Final[tuple[RejectReason, ...]] = get_args(RejectReason)
"""``invalid``: the decoder failed in a way none of the others names (a bug, or an input
nobody foresaw); the message is refused all the same, never passed on as an exception."""


class WireRejection(ValueError):
    def __init__(self, reason: RejectReason, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason: RejectReason = reason
        self.detail = detail


class DecodedMessage(msgspec.Struct, frozen=True):
    topic: Topic
    message: Message
    received_at: datetime
    clock_skew_s: float
    """Device time minus receive time; large negative values are normal for a replayed backlog."""


_encoder = msgspec.json.Encoder()
_decoders: dict[str, msgspec.json.Decoder[Any]] = {}
"""Built on first use per kind: a lab PC's agent only ever decodes commands, and a decoder
for every kind it never receives would stay in its memory for nothing (issue 18)."""


def _decoder_for(kind: str) -> msgspec.json.Decoder[Any]:
    decoder = _decoders.get(kind)
    if decoder is None:
        decoder = _decoders.setdefault(kind, msgspec.json.Decoder(KIND_TYPES[kind]))
    return decoder


class _VersionProbe(msgspec.Struct):
    v: object = None


_version_decoder = msgspec.json.Decoder(_VersionProbe)


def encode_message(message: Message) -> bytes:
    return _encoder.encode(message)


# Only quotes and brackets matter for depth, and only how many brackets are open, not which
# kind (a mismatch is malformed JSON, refused by msgspec before it recurses any further).
# Backslashes are kept at first, to see whether a quote may be escaped.
_NOT_STRUCTURE: Final = bytes(byte for byte in range(256) if byte not in b'"[]{}')
_NOT_STRUCTURE_OR_ESCAPE: Final = bytes(byte for byte in range(256) if byte not in b'"[]{}\\')
_AS_SQUARE: Final = bytes.maketrans(b"{}", b"[]")


def nesting_depth_exceeds(payload: bytes, limit: int = MAX_DEPTH) -> bool:
    """True if arrays/objects in ``payload`` nest deeper than ``limit`` (brackets inside
    strings do not count). Runs before msgspec on every message, so it uses only C-speed
    byte operations, over the whole payload only once in the usual case."""
    structure = payload.translate(_AS_SQUARE, _NOT_STRUCTURE_OR_ESCAPE)
    if structure.count(b"[") <= limit:
        return False  # too few brackets to be that deep: most messages stop here
    # A quote may be escaped, or an escape merely sits before a closing quote (in the
    # structure, the bytes between them are gone): if so, read the escapes in the payload.
    unescaped = _without_escaped_quotes(payload) if b'\\"' in structure else payload
    if unescaped is payload:
        structure = structure.translate(None, b"\\")
    else:
        structure = unescaped.translate(_AS_SQUARE, _NOT_STRUCTURE)
    # Strings: drop every pair of adjacent quotes (an empty string, or one string's end and
    # the next one's start: either way string content stays between the remaining pairs),
    # then whatever lies between the quotes left, the few strings that contain brackets.
    structure = structure.replace(b'""', b"")
    if b'"' in structure:
        structure = b"".join(structure.split(b'"')[::2])
    # Each pass removes the innermost level: adjacent "[]" pairs cannot overlap.
    removed_levels = 0
    while removed_levels < limit:
        reduced = structure.replace(b"[]", b"")
        if not reduced:
            return False
        if len(reduced) == len(structure):
            break  # malformed (unbalanced): measure what is left before msgspec recurses
        structure = reduced
        removed_levels += 1
    # Left: nothing, nesting deeper than ``limit``, or (malformed) closers then openers.
    return removed_levels + structure.count(b"[") > limit


_BACKSLASHES: Final = re.compile(rb"\\+")
_QUOTE: Final = ord('"')
# Beyond this many runs of backslashes, two C-speed replacements beat visiting each run.
_ESCAPES_VISITED: Final = 256


def _without_escaped_quotes(payload: bytes) -> bytes:
    """``payload`` with its escaped quotes (a quote after an odd run of backslashes)
    blanked out, so that the quotes left are the ones that delimit strings; ``payload``
    itself if it has none."""
    escaped: list[int] = []
    start = payload.find(b"\\")  # memchr: fast, unlike a regex search
    for _ in range(_ESCAPES_VISITED):
        if start == -1:
            break
        run = _BACKSLASHES.match(payload, start)
        assert run is not None
        end = run.end()
        if (end - start) % 2 and end < len(payload) and payload[end] == _QUOTE:
            escaped.append(end)
        start = payload.find(b"\\", end + 1)
    else:
        # Escaped backslashes first (left to right, as a JSON reader pairs them).
        return payload.replace(b"\\\\", b"").replace(b'\\"', b"")
    if not escaped:
        return payload
    blanked = bytearray(payload)
    for position in escaped:
        blanked[position] = ord(" ")
    return bytes(blanked)


def decode_message(
    topic: str,
    payload: bytes,
    *,
    received_at: datetime | None = None,
    max_future_skew: timedelta = MAX_FUTURE_SKEW,
) -> DecodedMessage:
    """Parse and validate one MQTT message; raise ``WireRejection`` on any problem.

    Nothing else ever escapes: a caller must be able to take any other exception as its
    own (the store's) fault, not the message's."""
    try:
        return _decode(topic, payload, received_at or utc_now(), max_future_skew)
    except WireRejection:
        raise
    except RecursionError:
        raise WireRejection("depth", "nesting too deep for the decoder") from None
    except Exception as exc:
        raise WireRejection("invalid", f"{type(exc).__name__}: {exc}"[:300]) from None


def _decode(
    topic: str, payload: bytes, received_at: datetime, max_future_skew: timedelta
) -> DecodedMessage:
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise WireRejection("oversize", f"{len(payload)} bytes > {MAX_PAYLOAD_BYTES}")
    try:
        parsed_topic = parse_topic(topic)
    except TopicError as exc:
        raise WireRejection("topic", str(exc)) from None
    if nesting_depth_exceeds(payload):
        raise WireRejection("depth", f"arrays/objects nested deeper than {MAX_DEPTH} levels")
    try:
        version = _version_decoder.decode(payload).v
    except msgspec.ValidationError as exc:
        raise WireRejection("schema", str(exc)[:300]) from None
    except msgspec.DecodeError as exc:
        raise WireRejection("json", str(exc)[:300]) from None
    if version != SCHEMA_VERSION or isinstance(version, bool):
        raise WireRejection("version", f"schema version {version!r}, expected {SCHEMA_VERSION}")
    try:
        message = _decoder_for(parsed_topic.kind).decode(payload)
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
