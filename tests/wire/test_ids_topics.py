from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest

from campuswatch.wire.ids import message_id_time, new_message_id
from campuswatch.wire.topics import TopicError, build_topic, parse_topic, subscription


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
