"""Adversarial payloads against the one gate every received message passes.

``decode_message`` may only ever return a ``DecodedMessage`` or raise ``WireRejection``: any
other exception (``RecursionError`` on deep JSON was one) escapes into the ingest loop, which
must then guess whether the message or the store is at fault. Whatever it accepts must also
be safe downstream: every number finite, so pages, reports and the time-series store never
see ``inf``.
"""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from campuswatch.wire import MAX_PAYLOAD_BYTES, WireRejection, decode_message, encode_message
from campuswatch.wire.codec import (
    MAX_DEPTH,
    REJECT_REASONS,
    DecodedMessage,
    nesting_depth_exceeds,
)
from campuswatch.wire.messages import KIND_TYPES

NOW = datetime(2026, 12, 3, 8, 0, tzinfo=UTC)
SITE, DEVICE = "school-a", "pc-1"

# One valid body per kind, so mutations start from something the schema accepts and reach
# the validators behind the first field.
VALID: dict[str, dict[str, Any]] = {
    "state": {"status": "online", "reason": "connected"},
    "hello": {"device_type": "pc", "software": "agent", "software_version": "1.0",
              "capabilities": ["av"], "intervals_s": {"health": 60}},
    "inventory": {"digest": "0" * 64, "hostname": "LAB-01",
                  "disks": [{"device": "sda", "mountpoint": "/", "total_bytes": 10}],
                  "software": [{"name": "Firefox", "version": "120"}]},
    "av": {"status": "protected",
           "products": [{"name": "Defender", "source": "defender", "enabled": True}]},
    "net": {"gateway": {"address": "10.0.0.1", "rtt_ms": 1.5}, "loss_pct": 0.0,
            "targets": [{"url": "https://example.org", "ok": True, "latency_ms": 30}]},
    "health": {"cpu_pct": 12.5, "uptime_s": 3600, "disks": [
        {"mountpoint": "/", "used_pct": 40, "free_bytes": 1000}]},
    "telemetry": {"device_type": "env_sensor", "values": {"co2_ppm": 800.0},
                  "states": {"door": "closed"}},
    "event": {"event_type": "door.forced", "severity": "high", "attributes": {"door": "1"}},
    "discovery": {"subnet": "10.0.0.0/24", "hosts": [{"ip": "10.0.0.5", "open_ports": [80]}]},
    "cmd": {"command": "run_probes", "args": {"probe": "av"}},
}  # fmt: skip
assert set(VALID) == set(KIND_TYPES)


def envelope(kind: str) -> dict[str, Any]:
    return {
        "v": 1,
        "id": "0190a0b0-0000-7000-8000-000000000001",
        "ts": "2026-12-03T07:59:00+00:00",
        "device_id": DEVICE,
        "site": SITE,
        "kind": kind,
        **VALID[kind],
    }


odd_text = st.text(
    alphabet=st.characters(codec="utf-8")
    | st.sampled_from(["\x00", "\u202e", "\ufeff", "\U0001f600", "\u0301", "\\", '"', "[", "{"]),
    max_size=40,
)
scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | odd_text
)
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(odd_text, inner, max_size=4),
    max_leaves=20,
)


@st.composite
def deep_nesting(draw: st.DrawFn) -> bytes:
    """Brackets, balanced or not, up to far beyond any recursion limit."""
    depth = draw(st.integers(min_value=1, max_value=200_000))
    opener = draw(st.sampled_from([b"[", b'{"a":', b'[{"a":']))
    closer = {b"[": b"]", b'{"a":': b"}", b'[{"a":': b"}]"}[opener]
    inner = draw(st.sampled_from([b"1", b"", b'"x"', b"[]"]))
    closes = draw(st.sampled_from([depth, depth // 2, 0]))
    return opener * depth + inner + closer * closes


@st.composite
def huge_values(draw: st.DrawFn) -> bytes:
    size = draw(st.sampled_from([300, 5_000, 70_000, 400_000]))
    return draw(
        st.sampled_from(
            [
                b'"' + b"x" * size + b'"',
                b'"' + b"\\u0000" * (size // 6) + b'"',
                b"[" + b"0," * size + b"0]",
                b"{" + b",".join(b'"k%d":1' % n for n in range(size // 8)) + b"}",
                b"9" * min(size, 20_000),
                b"1e" + b"9" * 30,
                b"-1e400",
                b"NaN",
                b"Infinity",
            ]
        )
    )


@st.composite
def mutated_message(draw: st.DrawFn) -> tuple[str, bytes]:
    """A valid message with one field (top level or one level down) replaced."""
    kind = draw(st.sampled_from(sorted(VALID)))
    document = envelope(kind)
    fields = sorted(document)
    name = draw(st.sampled_from([*fields, "unknown_field"]))
    replacement = draw(
        st.one_of(
            json_values.map(lambda value: json.dumps(value, ensure_ascii=False).encode()),
            deep_nesting(),
            huge_values(),
        )
    )
    marker = "__REPLACED__"
    document[name] = marker
    encoded = json.dumps(document, ensure_ascii=draw(st.booleans())).encode()
    return kind, encoded.replace(f'"{marker}"'.encode(), replacement, 1)


payloads = st.one_of(
    mutated_message(),
    st.tuples(st.sampled_from(sorted(VALID)), deep_nesting()),
    st.tuples(st.sampled_from(sorted(VALID)), huge_values()),
    st.tuples(st.sampled_from(sorted(VALID)), st.binary(max_size=3000)),
    st.tuples(
        st.sampled_from(sorted(VALID)),
        json_values.map(lambda value: json.dumps(value).encode()),
    ),
)


def assert_finite(value: object, where: str = "$") -> None:
    if isinstance(value, float):
        assert math.isfinite(value), where
    elif isinstance(value, dict):
        for key, item in value.items():
            assert_finite(item, f"{where}.{key}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            assert_finite(item, f"{where}[{index}]")


@settings(
    max_examples=400,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(payloads)
def test_adversarial_payloads_are_decoded_or_rejected_never_anything_else(
    case: tuple[str, bytes],
) -> None:
    kind, payload = case
    topic = f"cw/v1/{SITE}/{DEVICE}/{kind}"
    try:
        decoded = decode_message(topic, payload, received_at=NOW)
    except WireRejection as exc:
        assert exc.reason in REJECT_REASONS
        assert exc.detail
        return
    assert isinstance(decoded, DecodedMessage)
    assert len(payload) <= MAX_PAYLOAD_BYTES
    assert_finite(msgspec.to_builtins(decoded.message))
    # What was accepted can be sent on again (the collector re-encodes for the register).
    assert decode_message(topic, encode_message(decoded.message), received_at=NOW).message == (
        decoded.message
    )


def test_the_fuzzer_reaches_acceptance_and_every_interesting_rejection() -> None:
    # Guards the strategies themselves: mutations of valid messages must still be valid
    # where untouched, and the limits must be what rejects the adversarial shapes.
    for kind in VALID:
        payload = json.dumps(envelope(kind)).encode()
        decode_message(f"cw/v1/{SITE}/{DEVICE}/{kind}", payload, received_at=NOW)
    reasons = set()
    for payload in (
        b"[" * 100_000,
        b'{"v":1,"x":' + b"[" * 5_000 + b"]" * 5_000 + b"}",
        b"x" * (MAX_PAYLOAD_BYTES + 1),
        b"{",
    ):
        try:
            decode_message(f"cw/v1/{SITE}/{DEVICE}/health", payload, received_at=NOW)
        except WireRejection as exc:
            reasons.add(exc.reason)
    assert reasons == {"depth", "oversize", "json"}


def true_depth(value: object) -> int:
    if isinstance(value, dict):
        return 1 + max((true_depth(item) for item in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((true_depth(item) for item in value), default=0)
    return 0


bracket_text = st.text(alphabet=st.sampled_from(list('[]{}"\\ax\x00')), max_size=12)
nested_values = st.recursive(
    st.none() | st.integers() | bracket_text,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(bracket_text, inner, max_size=3),
    max_leaves=40,
)


@settings(max_examples=500, deadline=None)
@given(value=nested_values, limit=st.integers(min_value=0, max_value=6), ascii=st.booleans())
def test_the_depth_check_measures_what_a_json_reader_sees(
    value: object, limit: int, ascii: bool
) -> None:
    # Brackets, quotes and backslashes inside strings must neither hide nor invent depth.
    payload = json.dumps(value, ensure_ascii=ascii).encode()
    assert nesting_depth_exceeds(payload, limit) == (true_depth(value) > limit)


@pytest.mark.parametrize("strings", [3, 300])  # few escapes visited one by one, many replaced
@pytest.mark.parametrize("deep", [False, True])
def test_escaped_quotes_neither_hide_nor_invent_depth(strings: int, deep: bool) -> None:
    # Each string holds escaped quotes and backslashes next to brackets: read wrongly, a
    # quote's escape would swap inside and outside, hiding the nesting or inventing it.
    tricky = ['\\" [[[[ \\\\', '\\\\" ]]', '{{\\"\\\\\\"'] * strings
    nested: object = "end"
    for _ in range(MAX_DEPTH + 1 if deep else MAX_DEPTH - 2):
        nested = [nested, '\\"[']
    value = {"strings": tricky, "nested": nested}
    payload = json.dumps(value).encode()
    assert nesting_depth_exceeds(payload) == (true_depth(value) > MAX_DEPTH) == deep
