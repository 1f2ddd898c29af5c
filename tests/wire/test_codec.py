from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from campuswatch.wire import (
    MAX_PAYLOAD_BYTES,
    AvMessage,
    AvProduct,
    StateMessage,
    WireRejection,
    decode_message,
    encode_message,
)
from campuswatch.wire.codec import REJECT_REASONS
from campuswatch.wire.messages import KIND_TYPES

TOPIC = "cw/v1/school-a/pc-1/av"


def av_payload(**changes: object) -> bytes:
    message = AvMessage(
        device_id="pc-1",
        site="school-a",
        status="protected",
        products=[AvProduct(name="ClamAV", source="clamav", signatures_up_to_date=True)],
    )
    data = json.loads(encode_message(message))
    data.update(changes)
    return json.dumps(data).encode()


def test_round_trip_keeps_every_field() -> None:
    decoded = decode_message(TOPIC, av_payload())
    assert isinstance(decoded.message, AvMessage)
    assert decoded.message.products[0].name == "ClamAV"
    assert decoded.topic.site == "school-a"
    assert decoded.message.v == 1


@pytest.mark.parametrize(
    ("topic", "payload", "reason"),
    [
        ("cw/v1/school-a/pc-1/av", b"{not json", "json"),
        ("cw/v1/school-a/pc-1/av", b"[1, 2]", "schema"),
        ("cw/v1/school-a/pc-1/bogus", av_payload(), "topic"),
        ("cw/v2/school-a/pc-1/av", av_payload(), "topic"),
        ("cw/v1/school-a/pc+1/av", av_payload(), "topic"),
        ("cw/v1/school-a/pc-1/av/extra", av_payload(), "topic"),
        ("cw/v1/school-a/pc-1/av", av_payload(v=2), "version"),
        ("cw/v1/school-a/pc-1/av", av_payload(v="1"), "version"),
        ("cw/v1/school-a/pc-1/av", av_payload(status="fine"), "schema"),
        ("cw/v1/school-a/pc-1/av", av_payload(products="ClamAV"), "schema"),
        ("cw/v1/school-a/pc-1/av", av_payload(ts="2026-01-01T00:00:00"), "schema"),
        ("cw/v1/school-a/pc-1/av", av_payload(id="not-a-uuid"), "schema"),
        ("cw/v1/school-a/pc-1/av", av_payload(device_id="pc-2"), "identity"),
        ("cw/v1/school-a/pc-1/av", av_payload(site="school-b"), "identity"),
        ("cw/v1/school-a/pc-1/state", av_payload(), "kind_mismatch"),
        ("cw/v1/school-a/pc-1/av", b"x" * (MAX_PAYLOAD_BYTES + 1), "oversize"),
    ],
)
def test_rejects_with_a_reason(topic: str, payload: bytes, reason: str) -> None:
    with pytest.raises(WireRejection) as info:
        decode_message(topic, payload)
    assert info.value.reason == reason
    assert info.value.detail


def test_timestamps_far_in_the_future_are_rejected_but_old_ones_kept() -> None:
    now = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
    future = (now + timedelta(hours=2)).isoformat()
    with pytest.raises(WireRejection) as info:
        decode_message(TOPIC, av_payload(ts=future), received_at=now)
    assert info.value.reason == "future"
    past = (now - timedelta(days=3)).isoformat()
    decoded = decode_message(TOPIC, av_payload(ts=past), received_at=now)
    assert decoded.clock_skew_s == pytest.approx(-3 * 86400)


def test_unknown_fields_are_ignored_for_forward_compatibility() -> None:
    decoded = decode_message(TOPIC, av_payload(new_optional_field={"x": 1}))
    assert isinstance(decoded.message, AvMessage)


def test_state_message_has_every_envelope_field_on_the_wire() -> None:
    data = json.loads(encode_message(StateMessage(device_id="d", site="s", status="online")))
    assert {"v", "id", "ts", "device_id", "site", "kind", "status"} <= set(data)


@settings(max_examples=300, deadline=None)
@given(
    kind=st.sampled_from(sorted(KIND_TYPES)),
    payload=st.one_of(
        st.binary(max_size=2000),
        st.recursive(
            st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30),
            lambda inner: (
                st.lists(inner, max_size=5)
                | st.dictionaries(st.text(max_size=12), inner, max_size=6)
            ),
            max_leaves=30,
        ).map(lambda value: json.dumps(value).encode()),
    ),
)
def test_fuzzed_payloads_never_escape_as_anything_but_a_rejection(
    kind: str, payload: bytes
) -> None:
    try:
        decode_message(f"cw/v1/s/d/{kind}", payload)
    except WireRejection as exc:
        assert exc.reason in REJECT_REASONS


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=80))
def test_fuzzed_topics_are_rejected_cleanly(topic: str) -> None:
    try:
        decode_message(topic, av_payload())
    except WireRejection as exc:
        assert exc.reason in REJECT_REASONS


def test_every_kind_round_trips_a_minimal_message() -> None:
    minimal: dict[str, dict[str, object]] = {
        "state": {"status": "offline"},
        "hello": {"device_type": "pc", "software": "a", "software_version": "1"},
        "inventory": {"digest": "0" * 64},
        "av": {"status": "no_av"},
        "net": {},
        "health": {},
        "telemetry": {"device_type": "env_sensor", "values": {"co2_ppm": 812.0}},
        "event": {"event_type": "door_forced", "severity": "high"},
        "discovery": {"subnet": "10.0.0.0/24"},
        "cmd": {"command": "run_probes"},
    }
    assert set(minimal) == set(KIND_TYPES)
    for kind, body in minimal.items():
        message = msgspec.convert(
            {"device_id": "dev-1", "site": "school-a", **body}, KIND_TYPES[kind]
        )
        decoded = decode_message(f"cw/v1/school-a/dev-1/{kind}", encode_message(message))
        assert decoded.message == message


def nested(depth: int, inside: bytes = b"") -> bytes:
    return b"[" * depth + inside + b"]" * depth


@pytest.mark.parametrize("depth", [33, 1_000, 100_000])
@pytest.mark.parametrize("field", ["new_optional_field", "products"])
def test_deep_nesting_is_rejected_as_depth_not_a_recursion_error(depth: int, field: str) -> None:
    # 1,000 levels fit in 2 kB; msgspec's recursive decoder raised RecursionError on them,
    # which the ingest loop took for a storage failure and retried forever.
    document = av_payload()[:-1] + f', "{field}": '.encode() + nested(depth) + b"}"
    with pytest.raises(WireRejection) as info:
        decode_message(TOPIC, document)
    assert info.value.reason == "depth"


def test_brackets_inside_strings_do_not_count_as_nesting() -> None:
    text = '[{"\\"' * 5_000
    decoded = decode_message(TOPIC, av_payload(note=text, deep={"a": [{"b": [1]}]}))
    assert isinstance(decoded.message, AvMessage)


def test_nesting_up_to_the_limit_is_accepted() -> None:
    from campuswatch.wire.codec import MAX_DEPTH

    # The document itself is one level, so MAX_DEPTH - 1 more levels still fit.
    document = av_payload()[:-1] + b', "extra": ' + nested(MAX_DEPTH - 1) + b"}"
    assert isinstance(decode_message(TOPIC, document).message, AvMessage)


def test_schema_valid_but_absurd_numbers_are_rejected() -> None:
    topic = "cw/v1/school-a/pc-1/health"
    base = {"device_id": "pc-1", "site": "school-a", "kind": "health", "v": 1}
    for field, value in [
        ("uptime_s", 1e30),
        ("load1", 1e300),
        ("memory_used_bytes", 2**63),
        ("agent_cpu_pct", 1e13),
        ("memory_used_bytes", -1),
    ]:
        payload = json.dumps({**base, "id": "0190a0b0-0000-7000-8000-000000000001",
                              "ts": "2026-12-03T08:00:00Z", field: value}).encode()  # fmt: skip
        with pytest.raises(WireRejection) as info:
            decode_message(topic, payload, received_at=datetime(2026, 12, 3, 8, tzinfo=UTC))
        assert info.value.reason == "schema", field
