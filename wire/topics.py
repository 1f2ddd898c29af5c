"""MQTT topic layout: ``cw/v1/{site}/{device_id}/{kind}``.

Site and device ids are restricted to characters that can never be MQTT wildcards or
level separators, so a parsed topic is unambiguous and an ACL pattern can pin a device
to its own subtree.
"""

from __future__ import annotations

import re
from typing import Final

import msgspec

PREFIX: Final = "cw"
VERSION: Final = "v1"
KINDS: Final = (
    "state",
    "hello",
    "inventory",
    "av",
    "net",
    "health",
    "telemetry",
    "event",
    "discovery",
    "cmd",
)


def json_schema_pattern(pattern: str) -> str:
    """``pattern`` for JSON Schema (ECMA-262) and pydantic (Rust regex): a final ``\\Z`` → ``$``.

    Neither dialect has ``\\Z`` (ECMA reads it as a plain "Z"), and in both ``$`` without
    multi-line mode already means the end of the text, as ``\\Z`` does in Python.
    """
    return pattern.removesuffix("\\Z") + "$" if pattern.endswith("\\Z") else pattern


# ``\Z``, never ``$``: Python's ``$`` also matches before a final newline, and an id such as
# "evil\n" would split a line of Mosquitto's password or ACL file in two.
IDENTIFIER_PATTERN: Final = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}\Z"
IDENTIFIER_JSON_PATTERN: Final = json_schema_pattern(IDENTIFIER_PATTERN)
_IDENTIFIER = re.compile(IDENTIFIER_PATTERN)


class TopicError(ValueError):
    """A topic that is not part of the contract."""


class Topic(msgspec.Struct, frozen=True):
    site: str
    device_id: str
    kind: str

    def __str__(self) -> str:
        return f"{PREFIX}/{VERSION}/{self.site}/{self.device_id}/{self.kind}"


def is_identifier(value: str) -> bool:
    return _IDENTIFIER.fullmatch(value) is not None


def build_topic(site: str, device_id: str, kind: str) -> str:
    if kind not in KINDS:
        raise TopicError(f"unknown kind {kind!r}")
    for label, value in (("site", site), ("device_id", device_id)):
        if not is_identifier(value):
            raise TopicError(f"{label} {value!r} must match {IDENTIFIER_PATTERN}")
    return str(Topic(site, device_id, kind))


def parse_topic(topic: str) -> Topic:
    parts = topic.split("/")
    if len(parts) != 5 or parts[0] != PREFIX:
        raise TopicError(f"not a {PREFIX}/{VERSION}/site/device/kind topic: {topic[:200]!r}")
    if parts[1] != VERSION:
        raise TopicError(f"unsupported topic version {parts[1][:20]!r}")
    _, _, site, device_id, kind = parts
    if not is_identifier(site) or not is_identifier(device_id):
        raise TopicError(f"bad site or device id in topic {topic[:200]!r}")
    if kind not in KINDS:
        raise TopicError(f"unknown kind {kind[:40]!r}")
    return Topic(site, device_id, kind)


def subscription(site: str = "+", device_id: str = "+", kind: str = "+") -> str:
    """A subscription filter; ``+`` stands for any value at that level."""
    return f"{PREFIX}/{VERSION}/{site}/{device_id}/{kind}"
