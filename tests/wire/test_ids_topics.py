from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime

import msgspec
import pydantic
import pytest

from campuswatch.collector.api.schemas import SiteIn
from campuswatch.wire.ids import message_id_time, new_message_id
from campuswatch.wire.messages import Identifier, MacAddress, MessageId
from campuswatch.wire.schema import render_schemas
from campuswatch.wire.topics import (
    IDENTIFIER_JSON_PATTERN,
    TopicError,
    build_topic,
    is_identifier,
    parse_topic,
    subscription,
)


def test_message_ids_are_uuid7_unique_and_sorted() -> None:
    ids = [new_message_id() for _ in range(20000)]
    assert len(set(ids)) == len(ids)
    assert ids == sorted(ids)
    parsed = uuid.UUID(ids[0])
    assert parsed.version == 7
    assert parsed.variant == uuid.RFC_4122


def test_message_id_carries_its_creation_time() -> None:
    before = datetime.now(UTC)
    created = message_id_time(new_message_id())
    assert abs((created - before).total_seconds()) < 5


def test_topic_round_trip() -> None:
    topic = build_topic("hcm-q1-thcs-a", "pc-0a1b", "av")
    assert topic == "cw/v1/hcm-q1-thcs-a/pc-0a1b/av"
    parsed = parse_topic(topic)
    assert (parsed.site, parsed.device_id, parsed.kind) == ("hcm-q1-thcs-a", "pc-0a1b", "av")


@pytest.mark.parametrize(
    ("site", "device_id", "kind"),
    [("a/b", "d", "av"), ("s", "+", "av"), ("s", "#", "av"), ("s", "d", "nope"), ("", "d", "av")],
)
def test_build_topic_refuses_ids_that_would_break_topic_levels(
    site: str, device_id: str, kind: str
) -> None:
    with pytest.raises(TopicError):
        build_topic(site, device_id, kind)


def test_subscription_defaults_to_wildcards() -> None:
    assert subscription() == "cw/v1/+/+/+"
    assert subscription(site="s1", kind="av") == "cw/v1/s1/+/av"


# Python's ``$`` also matches before a final newline: "evil\n" once passed every identifier
# check and broke Mosquitto's password and ACL files (one line per account).
NEWLINE_TAILED = ("evil\n", "school-a\n", "pc-1\r", "pc-1\n\n", "\npc-1")


@pytest.mark.parametrize("value", NEWLINE_TAILED)
def test_identifiers_are_matched_whole(value: str) -> None:
    assert not is_identifier(value)
    with pytest.raises(TopicError):
        build_topic(value, "pc-1", "av")
    with pytest.raises(TopicError):
        build_topic("school-a", value, "av")
    with pytest.raises(TopicError):
        parse_topic(f"cw/v1/school-a/{value}/av")
    with pytest.raises(TopicError):
        parse_topic(f"cw/v1/{value}/pc-1/av")


@pytest.mark.parametrize("value", NEWLINE_TAILED)
def test_wire_types_refuse_a_trailing_newline_in_an_identifier(value: str) -> None:
    with pytest.raises(msgspec.ValidationError):
        msgspec.json.decode(msgspec.json.encode(value), type=Identifier)


@pytest.mark.parametrize(
    ("annotation", "good"),
    [
        (MessageId, "0190f5a2-1c2b-7d3e-8f40-123456789abc"),
        (MacAddress, "3c:52:82:00:00:01"),
    ],
)
def test_every_wire_pattern_is_matched_whole(annotation: object, good: str) -> None:
    assert msgspec.json.decode(msgspec.json.encode(good), type=annotation) == good
    with pytest.raises(msgspec.ValidationError):
        msgspec.json.decode(msgspec.json.encode(good + "\n"), type=annotation)


def test_every_published_pattern_is_ecma_and_still_whole() -> None:
    # JSON Schema patterns are ECMA-262, which has no \Z; its $ is the end of the text.
    for name, text in render_schemas().items():
        for pattern in re.findall(r'"pattern": "([^"]*)"', text):
            assert "\\\\Z" not in pattern, (name, pattern)
            if pattern.startswith("^"):
                assert pattern.endswith("$"), (name, pattern)
    assert IDENTIFIER_JSON_PATTERN.endswith("$") and "\\Z" not in IDENTIFIER_JSON_PATTERN


@pytest.mark.parametrize("value", NEWLINE_TAILED)
def test_the_api_models_refuse_a_trailing_newline_in_an_identifier(value: str) -> None:
    # pydantic runs the JSON Schema form of the pattern (Rust regex: $ is the end of text).
    with pytest.raises(pydantic.ValidationError):
        SiteIn(id=value, level="school", name="A")
    assert SiteIn(id="school-a", level="school", name="A").id == "school-a"
