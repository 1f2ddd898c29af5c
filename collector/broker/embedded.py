"""A small MQTT 5.0 broker so ``campuswatch demo`` runs on a machine without Mosquitto.

For the demo only, never for a school: it listens on loopback only, accepts any user name
and password, keeps everything in memory and runs on one asyncio thread. Schools run
Mosquitto with TLS, passwords and the ACL (docs/broker.md).

It implements what CampusWatch's own clients use (wire/mqtt.py, wire/mqtt_pool.py) and no
more: MQTT 5 only; QoS 0 and 1 (CONNACK says Maximum QoS 1, a QoS 2 publish is refused);
retained messages; Last Will with retain and Will Delay; clean start and session expiry,
with a bounded queue of QoS 1 messages for a disconnected session and redelivery (DUP) of
unacknowledged ones on resumption; keep-alive (1.5x, then the will); ``+``/``#`` wildcards
and ``$share/GROUP/filter`` shared subscriptions (round robin); subscription options (No
Local, Retain As Published, Retain Handling); session takeover; maximum packet size. A
malformed packet or a protocol error closes that connection and is counted; it never stops
the broker.

``python -m campuswatch.collector.broker.embedded --port 1883`` runs it as a process (what
the demo does); ``BrokerThread`` runs it inside a process (tests).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import dataclasses
import ipaddress
import logging
import math
import os
import secrets
import signal
import sys
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from enum import IntEnum
from types import TracebackType
from typing import Final

from campuswatch.wire.mqtt import BrokerAddress

log = logging.getLogger(__name__)


class PacketType(IntEnum):
    CONNECT = 1
    CONNACK = 2
    PUBLISH = 3
    PUBACK = 4
    PUBREC = 5
    PUBREL = 6
    PUBCOMP = 7
    SUBSCRIBE = 8
    SUBACK = 9
    UNSUBSCRIBE = 10
    UNSUBACK = 11
    PINGREQ = 12
    PINGRESP = 13
    DISCONNECT = 14
    AUTH = 15


class Reason(IntEnum):
    """The MQTT 5 reason codes this broker sends or acts on."""

    SUCCESS = 0x00
    GRANTED_QOS_1 = 0x01
    DISCONNECT_WITH_WILL = 0x04
    NO_SUBSCRIPTION_EXISTED = 0x11
    UNSPECIFIED_ERROR = 0x80
    MALFORMED_PACKET = 0x81
    PROTOCOL_ERROR = 0x82
    UNSUPPORTED_PROTOCOL_VERSION = 0x84
    SERVER_SHUTTING_DOWN = 0x8B
    BAD_AUTHENTICATION_METHOD = 0x8C
    KEEP_ALIVE_TIMEOUT = 0x8D
    SESSION_TAKEN_OVER = 0x8E
    TOPIC_FILTER_INVALID = 0x8F
    TOPIC_NAME_INVALID = 0x90
    TOPIC_ALIAS_INVALID = 0x94
    PACKET_TOO_LARGE = 0x95
    QUOTA_EXCEEDED = 0x97
    QOS_NOT_SUPPORTED = 0x9B
    SUBSCRIPTION_IDENTIFIERS_NOT_SUPPORTED = 0xA1


class Prop(IntEnum):
    """MQTT 5 property identifiers."""

    PAYLOAD_FORMAT_INDICATOR = 0x01
    MESSAGE_EXPIRY_INTERVAL = 0x02
    CONTENT_TYPE = 0x03
    RESPONSE_TOPIC = 0x08
    CORRELATION_DATA = 0x09
    SUBSCRIPTION_IDENTIFIER = 0x0B
    SESSION_EXPIRY_INTERVAL = 0x11
    ASSIGNED_CLIENT_IDENTIFIER = 0x12
    SERVER_KEEP_ALIVE = 0x13
    AUTHENTICATION_METHOD = 0x15
    AUTHENTICATION_DATA = 0x16
    REQUEST_PROBLEM_INFORMATION = 0x17
    WILL_DELAY_INTERVAL = 0x18
    REQUEST_RESPONSE_INFORMATION = 0x19
    RESPONSE_INFORMATION = 0x1A
    SERVER_REFERENCE = 0x1C
    REASON_STRING = 0x1F
    RECEIVE_MAXIMUM = 0x21
    TOPIC_ALIAS_MAXIMUM = 0x22
    TOPIC_ALIAS = 0x23
    MAXIMUM_QOS = 0x24
    RETAIN_AVAILABLE = 0x25
    USER_PROPERTY = 0x26
    MAXIMUM_PACKET_SIZE = 0x27
    WILDCARD_SUBSCRIPTION_AVAILABLE = 0x28
    SUBSCRIPTION_IDENTIFIER_AVAILABLE = 0x29
    SHARED_SUBSCRIPTION_AVAILABLE = 0x2A


_BYTE, _U16, _U32, _VARINT, _STRING, _BINARY, _PAIR = range(7)
_PROPERTY_TYPES: Final[dict[int, int]] = {
    Prop.PAYLOAD_FORMAT_INDICATOR: _BYTE,
    Prop.MESSAGE_EXPIRY_INTERVAL: _U32,
    Prop.CONTENT_TYPE: _STRING,
    Prop.RESPONSE_TOPIC: _STRING,
    Prop.CORRELATION_DATA: _BINARY,
    Prop.SUBSCRIPTION_IDENTIFIER: _VARINT,
    Prop.SESSION_EXPIRY_INTERVAL: _U32,
    Prop.ASSIGNED_CLIENT_IDENTIFIER: _STRING,
    Prop.SERVER_KEEP_ALIVE: _U16,
    Prop.AUTHENTICATION_METHOD: _STRING,
    Prop.AUTHENTICATION_DATA: _BINARY,
    Prop.REQUEST_PROBLEM_INFORMATION: _BYTE,
    Prop.WILL_DELAY_INTERVAL: _U32,
    Prop.REQUEST_RESPONSE_INFORMATION: _BYTE,
    Prop.RESPONSE_INFORMATION: _STRING,
    Prop.SERVER_REFERENCE: _STRING,
    Prop.REASON_STRING: _STRING,
    Prop.RECEIVE_MAXIMUM: _U16,
    Prop.TOPIC_ALIAS_MAXIMUM: _U16,
    Prop.TOPIC_ALIAS: _U16,
    Prop.MAXIMUM_QOS: _BYTE,
    Prop.RETAIN_AVAILABLE: _BYTE,
    Prop.USER_PROPERTY: _PAIR,
    Prop.MAXIMUM_PACKET_SIZE: _U32,
    Prop.WILDCARD_SUBSCRIPTION_AVAILABLE: _BYTE,
    Prop.SUBSCRIPTION_IDENTIFIER_AVAILABLE: _BYTE,
    Prop.SHARED_SUBSCRIPTION_AVAILABLE: _BYTE,
}
# Which properties a client may put in which packet (anything else is a protocol error).
_CONNECT_PROPS: Final = frozenset(
    {
        Prop.SESSION_EXPIRY_INTERVAL,
        Prop.RECEIVE_MAXIMUM,
        Prop.MAXIMUM_PACKET_SIZE,
        Prop.TOPIC_ALIAS_MAXIMUM,
        Prop.REQUEST_RESPONSE_INFORMATION,
        Prop.REQUEST_PROBLEM_INFORMATION,
        Prop.USER_PROPERTY,
        Prop.AUTHENTICATION_METHOD,
        Prop.AUTHENTICATION_DATA,
    }
)
_MESSAGE_PROPS: Final = frozenset(
    {
        Prop.PAYLOAD_FORMAT_INDICATOR,
        Prop.MESSAGE_EXPIRY_INTERVAL,
        Prop.CONTENT_TYPE,
        Prop.RESPONSE_TOPIC,
        Prop.CORRELATION_DATA,
        Prop.USER_PROPERTY,
    }
)
_WILL_PROPS: Final = _MESSAGE_PROPS | {Prop.WILL_DELAY_INTERVAL}
_PUBLISH_PROPS: Final = _MESSAGE_PROPS | {Prop.TOPIC_ALIAS, Prop.SUBSCRIPTION_IDENTIFIER}
_FORWARDED_PROPS: Final = _MESSAGE_PROPS - {Prop.MESSAGE_EXPIRY_INTERVAL}
_PUBACK_PROPS: Final = frozenset({Prop.REASON_STRING, Prop.USER_PROPERTY})
_SUBSCRIBE_PROPS: Final = frozenset({Prop.SUBSCRIPTION_IDENTIFIER, Prop.USER_PROPERTY})
_UNSUBSCRIBE_PROPS: Final = frozenset({Prop.USER_PROPERTY})
_DISCONNECT_PROPS: Final = frozenset(
    {Prop.SESSION_EXPIRY_INTERVAL, Prop.REASON_STRING, Prop.USER_PROPERTY, Prop.SERVER_REFERENCE}
)
_REPEATABLE: Final = frozenset({Prop.USER_PROPERTY, Prop.SUBSCRIPTION_IDENTIFIER})

NEVER_EXPIRES: Final = 0xFFFFFFFF
MAX_VARINT: Final = 268_435_455
PINGRESP_PACKET: Final = bytes([PacketType.PINGRESP << 4, 0])
# What an MQTT 3.1.1 client understands: CONNACK "unacceptable protocol version".
V311_REFUSAL: Final = bytes([PacketType.CONNACK << 4, 2, 0, 1])

PropertyValue = int | str | bytes | tuple[str, str]


@dataclass(frozen=True, slots=True)
class BrokerLimits:
    max_packet_size: int = 1024 * 1024
    """Largest packet accepted from a client (advertised in CONNACK); bigger ones close the
    connection with reason 0x95. Mosquitto's config from ``broker config`` uses 1 MiB too."""
    max_queued_messages: int = 20_000
    """QoS 1 messages kept per session beyond the in-flight window (while offline or slow);
    further ones are dropped and counted."""
    max_inflight: int = 1000
    """Unacknowledged QoS 1 messages towards one client (also capped by its Receive Maximum)."""
    max_session_expiry_s: int = 7 * 24 * 3600
    max_subscriptions_per_session: int = 1000
    max_retained_messages: int = 200_000
    max_write_buffer: int = 8 * 1024 * 1024
    """QoS 0 messages to a client whose socket buffer is this full are dropped (slow reader)."""
    connect_timeout_s: float = 10.0


@dataclass(slots=True)
class BrokerStats:
    connections: int = 0
    connects_total: int = 0
    sessions: int = 0
    retained: int = 0
    messages_received_total: int = 0
    messages_sent_total: int = 0
    wills_published_total: int = 0
    dropped_total: Counter[str] = field(default_factory=Counter)
    """Messages not delivered, by reason (queue_full, slow_reader, too_large_for_client …)."""
    closed_total: Counter[str] = field(default_factory=Counter)
    """Connections the broker closed, by reason (malformed, protocol_error, keep_alive …)."""


class ProtocolViolation(Exception):
    """Ends one connection: CONNACK (before CONNECT succeeded) or DISCONNECT with ``reason``."""

    def __init__(self, reason: Reason, detail: str) -> None:
        super().__init__(f"{reason.name.lower()}: {detail}")
        self.reason = reason


def _malformed(detail: str) -> ProtocolViolation:
    return ProtocolViolation(Reason.MALFORMED_PACKET, detail)


def _protocol_error(detail: str) -> ProtocolViolation:
    return ProtocolViolation(Reason.PROTOCOL_ERROR, detail)


# --- encoding ----------------------------------------------------------------------------


def encode_varint(value: int) -> bytes:
    if not 0 <= value <= MAX_VARINT:
        raise ValueError(f"{value} does not fit a variable byte integer")
    out = bytearray()
    while True:
        value, digit = divmod(value, 128)
        out.append(digit | (0x80 if value else 0))
        if not value:
            return bytes(out)


def encode_string(text: str) -> bytes:
    data = text.encode("utf-8")
    return len(data).to_bytes(2, "big") + data


def encode_binary(data: bytes) -> bytes:
    return len(data).to_bytes(2, "big") + data


def encode_property(identifier: int, value: PropertyValue) -> bytes:
    kind = _PROPERTY_TYPES[identifier]
    head = encode_varint(identifier)
    if kind == _PAIR and isinstance(value, tuple):
        return head + encode_string(value[0]) + encode_string(value[1])
    if kind == _STRING and isinstance(value, str):
        return head + encode_string(value)
    if kind == _BINARY and isinstance(value, bytes):
        return head + encode_binary(value)
    if isinstance(value, int):
        if kind == _VARINT:
            return head + encode_varint(value)
        width = {_BYTE: 1, _U16: 2, _U32: 4}[kind]
        return head + value.to_bytes(width, "big")
    raise TypeError(f"property 0x{identifier:02x} cannot hold {value!r}")


def encode_properties(items: Iterable[tuple[int, PropertyValue]]) -> bytes:
    """The property block: its length, then the properties."""
    body = b"".join(encode_property(identifier, value) for identifier, value in items)
    return encode_varint(len(body)) + body


def encode_packet(packet_type: PacketType, flags: int, body: bytes) -> bytes:
    return bytes([(packet_type << 4) | flags]) + encode_varint(len(body)) + body


def encode_disconnect(reason: Reason) -> bytes:
    return encode_packet(PacketType.DISCONNECT, 0, bytes([reason]))


# --- decoding ----------------------------------------------------------------------------


class PacketReader:
    """Reads one packet's body; running short or bad UTF-8 is a malformed packet."""

    __slots__ = ("_data", "_pos")

    def __init__(self, data: bytes) -> None:
        self._data = data
        self._pos = 0

    def at_end(self) -> bool:
        return self._pos >= len(self._data)

    def _take(self, count: int) -> bytes:
        end = self._pos + count
        if end > len(self._data):
            raise _malformed("packet ends early")
        chunk = self._data[self._pos : end]
        self._pos = end
        return chunk

    def byte(self) -> int:
        return self._take(1)[0]

    def u16(self) -> int:
        return int.from_bytes(self._take(2), "big")

    def u32(self) -> int:
        return int.from_bytes(self._take(4), "big")

    def varint(self) -> int:
        value = 0
        for shift in (0, 7, 14, 21):
            digit = self.byte()
            value |= (digit & 0x7F) << shift
            if not digit & 0x80:
                return value
        raise _malformed("variable byte integer longer than 4 bytes")

    def binary(self) -> bytes:
        return self._take(self.u16())

    def string(self) -> str:
        raw = self.binary()
        try:
            text = raw.decode("utf-8")  # strict: also refuses encoded surrogates
        except UnicodeDecodeError:
            raise _malformed("string is not valid UTF-8") from None
        if "\x00" in text:
            raise _malformed("string contains U+0000")
        return text

    def rest(self) -> bytes:
        chunk = self._data[self._pos :]
        self._pos = len(self._data)
        return chunk

    def properties(self, allowed: frozenset[Prop]) -> Properties:
        block = PacketReader(self._take(self.varint()))
        found = Properties()
        while not block.at_end():
            identifier = block.varint()
            kind = _PROPERTY_TYPES.get(identifier)
            if kind is None:
                raise _malformed(f"unknown property 0x{identifier:02x}")
            if identifier not in allowed:
                raise _protocol_error(f"property 0x{identifier:02x} is not allowed here")
            value: PropertyValue
            if kind == _BYTE:
                value = block.byte()
            elif kind == _U16:
                value = block.u16()
            elif kind == _U32:
                value = block.u32()
            elif kind == _VARINT:
                value = block.varint()
            elif kind == _STRING:
                value = block.string()
            elif kind == _BINARY:
                value = block.binary()
            else:
                value = (block.string(), block.string())
            if identifier not in _REPEATABLE and identifier in found.values:
                raise _protocol_error(f"property 0x{identifier:02x} appears twice")
            found.values.setdefault(identifier, value)
            found.items.append((identifier, value))
        return found


@dataclass(slots=True)
class Properties:
    values: dict[int, PropertyValue] = field(default_factory=dict)
    """The first value of each property."""
    items: list[tuple[int, PropertyValue]] = field(default_factory=list)
    """Every property in order (user properties and subscription identifiers repeat)."""

    def number(self, identifier: Prop, default: int) -> int:
        value = self.values.get(identifier)
        return value if isinstance(value, int) else default

    def __contains__(self, identifier: object) -> bool:
        return identifier in self.values


# --- topics ------------------------------------------------------------------------------


def valid_topic_name(topic: str) -> bool:
    return bool(topic) and "+" not in topic and "#" not in topic


def parse_filter(text: str) -> tuple[str | None, str]:
    """``(share group or None, filter)``; ValueError when the filter is invalid."""
    group: str | None = None
    topic_filter = text
    if text.startswith("$share/"):
        parts = text.split("/", 2)
        if len(parts) < 3 or not parts[1] or "+" in parts[1] or "#" in parts[1]:
            raise ValueError(f"invalid shared subscription {text[:200]!r}")
        group, topic_filter = parts[1], parts[2]
    if not topic_filter:
        raise ValueError("empty topic filter")
    levels = topic_filter.split("/")
    for index, level in enumerate(levels):
        if "#" in level and (level != "#" or index != len(levels) - 1):
            raise ValueError(f"'#' must be a whole last level: {text[:200]!r}")
        if "+" in level and level != "+":
            raise ValueError(f"'+' must be a whole level: {text[:200]!r}")
    return group, topic_filter


def filter_matches(topic_filter: str, topic: str) -> bool:
    """Whether ``topic`` matches ``topic_filter`` (wildcards never match ``$`` topics)."""
    if topic.startswith("$") and topic_filter[:1] in ("+", "#"):
        return False
    wanted = topic_filter.split("/")
    levels = topic.split("/")
    for index, level in enumerate(wanted):
        if level == "#":
            return True
        if index >= len(levels) or (level != "+" and level != levels[index]):
            return False
    return len(wanted) == len(levels)


@dataclass(slots=True)
class Subscription:
    qos: int
    no_local: bool = False
    retain_as_published: bool = False
    retain_handling: int = 0


class SharedGroup:
    """The members of one ``$share/GROUP/filter``; each message goes to one of them."""

    __slots__ = ("_cursor", "members")

    def __init__(self) -> None:
        self.members: dict[str, Subscription] = {}
        self._cursor = 0

    def pick(self, online: Callable[[str], bool]) -> tuple[str, Subscription] | None:
        """Round robin over connected members; an offline one (its session queues) only
        when none is connected."""
        ids = list(self.members)
        if not ids:
            return None
        for offset in range(len(ids)):
            index = (self._cursor + offset) % len(ids)
            if online(ids[index]):
                self._cursor = index + 1
                return ids[index], self.members[ids[index]]
        index = self._cursor % len(ids)
        self._cursor = index + 1
        return ids[index], self.members[ids[index]]


class _Node:
    __slots__ = ("children", "direct", "shared")

    def __init__(self) -> None:
        self.children: dict[str, _Node] = {}
        self.direct: dict[str, Subscription] = {}
        self.shared: dict[str, SharedGroup] = {}

    def empty(self) -> bool:
        return not (self.children or self.direct or self.shared)


class TopicTree:
    """Subscriptions by topic level, so a publish costs its levels, not every subscription."""

    def __init__(self) -> None:
        self._root = _Node()

    def add(self, group: str | None, topic_filter: str, client_id: str, sub: Subscription) -> bool:
        """Add or replace; True when the client already had this subscription."""
        node = self._root
        for level in topic_filter.split("/"):
            node = node.children.setdefault(level, _Node())
        if group is None:
            existed = client_id in node.direct
            node.direct[client_id] = sub
        else:
            members = node.shared.setdefault(group, SharedGroup()).members
            existed = client_id in members
            members[client_id] = sub
        return existed

    def remove(self, group: str | None, topic_filter: str, client_id: str) -> bool:
        path = [self._root]
        for level in topic_filter.split("/"):
            child = path[-1].children.get(level)
            if child is None:
                return False
            path.append(child)
        node = path[-1]
        if group is None:
            removed = node.direct.pop(client_id, None) is not None
        else:
            shared = node.shared.get(group)
            removed = shared is not None and shared.members.pop(client_id, None) is not None
            if shared is not None and not shared.members:
                del node.shared[group]
        levels = topic_filter.split("/")
        for depth in range(len(levels), 0, -1):  # prune empty branches
            if not path[depth].empty():
                break
            del path[depth - 1].children[levels[depth - 1]]
        return removed

    def match(
        self, topic: str, publisher: str | None
    ) -> tuple[dict[str, Subscription], list[SharedGroup]]:
        """Every client with a matching (non-shared) subscription, with the strongest options
        of its matching subscriptions, and every matching share group."""
        direct: dict[str, Subscription] = {}
        groups: list[SharedGroup] = []
        levels = topic.split("/")
        dollar = topic.startswith("$")

        def collect(node: _Node) -> None:
            for client_id, sub in node.direct.items():
                if sub.no_local and client_id == publisher:
                    continue
                known = direct.get(client_id)
                if known is None:
                    direct[client_id] = sub
                else:
                    direct[client_id] = Subscription(
                        max(known.qos, sub.qos),
                        retain_as_published=known.retain_as_published or sub.retain_as_published,
                    )
            groups.extend(node.shared.values())

        stack: list[tuple[_Node, int]] = [(self._root, 0)]
        while stack:
            node, depth = stack.pop()
            wildcards = not (depth == 0 and dollar)
            if wildcards and (multi := node.children.get("#")) is not None:
                collect(multi)  # "a/#" also matches "a"
            if depth == len(levels):
                collect(node)
                continue
            if wildcards and (single := node.children.get("+")) is not None:
                stack.append((single, depth + 1))
            if (exact := node.children.get(levels[depth])) is not None:
                stack.append((exact, depth + 1))
        return direct, groups


# --- messages and sessions ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Message:
    topic: str
    payload: bytes
    qos: int
    retain: bool
    properties: bytes = b""
    """Encoded properties forwarded unchanged (no length prefix, no message expiry)."""
    expires_at: float | None = None
    """Event-loop time after which the message is no longer delivered."""

    def expired(self, now: float) -> bool:
        return self.expires_at is not None and now >= self.expires_at

    def encode(
        self, *, qos: int, retain: bool, packet_id: int | None, dup: bool, now: float
    ) -> bytes:
        properties = self.properties
        if self.expires_at is not None:
            remaining = max(1, math.ceil(self.expires_at - now))
            properties += encode_property(Prop.MESSAGE_EXPIRY_INTERVAL, remaining)
        body = encode_string(self.topic)
        if packet_id is not None:
            body += packet_id.to_bytes(2, "big")
        body += encode_varint(len(properties)) + properties + self.payload
        flags = (8 if dup else 0) | (qos << 1) | (1 if retain else 0)
        return encode_packet(PacketType.PUBLISH, flags, body)


@dataclass(frozen=True, slots=True)
class Outgoing:
    message: Message
    qos: int
    retain: bool


@dataclass(frozen=True, slots=True)
class Will:
    message: Message
    delay_s: int
    expiry_s: int | None
    """Message Expiry Interval, counted from when the will is published."""


class Session:
    __slots__ = (
        "client_id",
        "connection",
        "expiry_s",
        "expiry_timer",
        "inflight",
        "next_packet_id",
        "pending_will",
        "queue",
        "subscriptions",
        "will_timer",
    )

    def __init__(self, client_id: str, expiry_s: int) -> None:
        self.client_id = client_id
        self.expiry_s = expiry_s
        self.connection: Connection | None = None
        self.subscriptions: dict[str, Subscription] = {}
        self.inflight: dict[int, Outgoing] = {}
        self.queue: collections.deque[Outgoing] = collections.deque()
        self.next_packet_id = 1
        self.expiry_timer: asyncio.TimerHandle | None = None
        self.will_timer: asyncio.TimerHandle | None = None
        self.pending_will: Will | None = None

    def allocate_packet_id(self) -> int:
        while True:
            packet_id = self.next_packet_id
            self.next_packet_id = packet_id % 0xFFFF + 1
            if packet_id not in self.inflight:
                return packet_id


class Connection:
    """One client's network connection (a session outlives it)."""

    __slots__ = (
        "client_id",
        "closed",
        "connected",
        "keepalive_s",
        "max_packet_size",
        "normal_disconnect",
        "peer",
        "receive_maximum",
        "session",
        "will",
        "writer",
    )

    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self.writer = writer
        peer = writer.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer)
        self.client_id = ""
        self.connected = False
        self.closed = False
        self.normal_disconnect = False
        self.keepalive_s = 0
        self.receive_maximum = 0xFFFF
        self.max_packet_size = MAX_VARINT + 5
        self.session: Session | None = None
        self.will: Will | None = None

    def send(self, data: bytes) -> None:
        if not self.closed and not self.writer.is_closing():
            self.writer.write(data)

    def buffered(self) -> int:
        return self.writer.transport.get_write_buffer_size()

    def close(self) -> None:
        self.closed = True
        self.writer.close()


@dataclass(frozen=True, slots=True)
class ConnectRequest:
    client_id: str
    clean_start: bool
    keepalive_s: int
    properties: Properties
    will: Will | None
    username: str | None


# --- the broker --------------------------------------------------------------------------


def require_loopback(host: str) -> None:
    """It accepts any password, so it must never be reachable from the school's LAN."""
    if host == "localhost":
        return
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"the embedded broker listens on loopback only, not {host!r}") from None
    if not address.is_loopback:
        raise ValueError(f"the embedded broker listens on loopback only, not {host!r}")


class EmbeddedBroker:
    """The broker on the running event loop: ``await start()``, later ``await stop()``."""

    def __init__(
        self, host: str = "127.0.0.1", port: int = 1883, limits: BrokerLimits | None = None
    ) -> None:
        require_loopback(host)
        self.host = host
        self.requested_port = port
        self.limits = limits or BrokerLimits()
        self.stats = BrokerStats()
        self._sessions: dict[str, Session] = {}
        self._connections: set[Connection] = set()
        self._handlers: set[asyncio.Task[None]] = set()
        self._tree = TopicTree()
        self._retained: dict[str, Message] = {}
        self._server: asyncio.Server | None = None
        self._stopping = False

    @property
    def port(self) -> int:
        if self._server is None or not self._server.sockets:
            raise RuntimeError("the broker is not listening")
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self) -> None:
        self._server = await asyncio.start_server(
            self._serve, self.host, self.requested_port, reuse_address=True
        )
        log.info("embedded MQTT broker (demo only) listening on %s:%d", self.host, self.port)

    async def stop(self, timeout_s: float = 5.0) -> None:
        """Stop accepting, tell every client DISCONNECT 0x8B (no wills), wait for handlers."""
        self._stopping = True
        if self._server is not None:
            self._server.close()
        for connection in list(self._connections):
            if connection.connected:
                connection.send(encode_disconnect(Reason.SERVER_SHUTTING_DOWN))
            connection.close()
        if self._handlers:
            await asyncio.wait(list(self._handlers), timeout=timeout_s)
        for session in self._sessions.values():
            for timer in (session.expiry_timer, session.will_timer):
                if timer is not None:
                    timer.cancel()
        if self._server is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._server.wait_closed(), timeout_s)
        log.info("embedded MQTT broker stopped")

    # --- one connection ------------------------------------------------------------------

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._handlers.add(task)
        connection = Connection(writer)
        self._connections.add(connection)
        self.stats.connections += 1
        try:
            await self._converse(connection, reader)
        except ProtocolViolation as exc:
            self.stats.closed_total[exc.reason.name.lower()] += 1
            log.info("closing %s (%s): %s", connection.client_id or "-", connection.peer, exc)
            if connection.connected:
                connection.send(encode_disconnect(exc.reason))
            else:
                connection.send(self._connack(exc.reason, False, ()))
        except TimeoutError:
            reason = "keep_alive_timeout" if connection.connected else "connect_timeout"
            self.stats.closed_total[reason] += 1
            log.info("closing %s (%s): %s", connection.client_id or "-", connection.peer, reason)
            if connection.connected:
                connection.send(encode_disconnect(Reason.KEEP_ALIVE_TIMEOUT))
        except (ConnectionError, asyncio.IncompleteReadError, OSError):
            pass  # the client went away; its will goes out below
        except Exception:  # a broker bug: lose this connection, never the broker
            self.stats.closed_total["internal_error"] += 1
            log.exception("embedded broker failed on a packet from %s", connection.peer)
        finally:
            self._connection_ended(connection, will=not connection.normal_disconnect)
            self._connections.discard(connection)
            self.stats.connections -= 1
            with contextlib.suppress(Exception):
                await writer.wait_closed()
            if task is not None:
                self._handlers.discard(task)

    async def _converse(self, connection: Connection, reader: asyncio.StreamReader) -> None:
        async with asyncio.timeout(self.limits.connect_timeout_s):
            packet_type, flags, body = await self._read_packet(reader)
        if packet_type != PacketType.CONNECT:
            raise _protocol_error(f"first packet is {packet_type}, not CONNECT")
        if not self._handle_connect(connection, flags, body):
            return
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(None) as keepalive:
            while not connection.closed:
                if connection.keepalive_s:
                    keepalive.reschedule(loop.time() + connection.keepalive_s * 1.5)
                packet_type, flags, body = await self._read_packet(reader)
                if not self._dispatch(connection, packet_type, flags, body):
                    return

    async def _read_packet(self, reader: asyncio.StreamReader) -> tuple[int, int, bytes]:
        first = (await reader.readexactly(1))[0]
        length = 0
        for shift in (0, 7, 14, 21):
            digit = (await reader.readexactly(1))[0]
            length |= (digit & 0x7F) << shift
            if not digit & 0x80:
                header = 2 + shift // 7
                break
        else:
            raise _malformed("remaining length longer than 4 bytes")
        if header + length > self.limits.max_packet_size:
            raise ProtocolViolation(
                Reason.PACKET_TOO_LARGE,
                f"{header + length} bytes > maximum {self.limits.max_packet_size}",
            )
        body = await reader.readexactly(length) if length else b""
        return first >> 4, first & 0x0F, body

    def _dispatch(self, connection: Connection, packet_type: int, flags: int, body: bytes) -> bool:
        """Handle one packet after CONNECT; False when the client said DISCONNECT."""
        if packet_type == PacketType.PUBLISH:
            self._handle_publish(connection, flags, body)
        elif packet_type == PacketType.PUBACK:
            self._expect_flags(packet_type, flags, 0)
            self._handle_puback(connection, body)
        elif packet_type == PacketType.SUBSCRIBE:
            self._expect_flags(packet_type, flags, 2)
            self._handle_subscribe(connection, body)
        elif packet_type == PacketType.UNSUBSCRIBE:
            self._expect_flags(packet_type, flags, 2)
            self._handle_unsubscribe(connection, body)
        elif packet_type == PacketType.PINGREQ:
            self._expect_flags(packet_type, flags, 0)
            if body:
                raise _malformed("PINGREQ with a body")
            connection.send(PINGRESP_PACKET)
        elif packet_type == PacketType.DISCONNECT:
            self._expect_flags(packet_type, flags, 0)
            self._handle_disconnect(connection, body)
            return False
        elif packet_type == 0:
            raise _malformed("reserved packet type 0")
        else:
            # CONNECT again, QoS 2 flows (never offered), AUTH (no enhanced auth), and
            # packets only a server sends.
            raise _protocol_error(f"unexpected {PacketType(packet_type).name}")
        return True

    @staticmethod
    def _expect_flags(packet_type: int, flags: int, wanted: int) -> None:
        if flags != wanted:
            raise _malformed(f"{PacketType(packet_type).name} with flags {flags:#x}")

    # --- CONNECT -------------------------------------------------------------------------

    def _handle_connect(self, connection: Connection, flags: int, body: bytes) -> bool:
        if flags:
            raise _malformed("CONNECT with flags")
        reader = PacketReader(body)
        name = reader.string()
        if name not in ("MQTT", "MQIsdp"):
            raise _protocol_error(f"protocol name {name[:20]!r}")
        level = reader.byte()
        if name != "MQTT" or level != 5:
            self.stats.closed_total["unsupported_protocol_version"] += 1
            log.info("refusing %s: MQTT protocol level %d (only MQTT 5)", connection.peer, level)
            connection.send(V311_REFUSAL)
            connection.close()
            return False
        request = self._parse_connect(reader)
        if Prop.AUTHENTICATION_METHOD in request.properties:
            raise ProtocolViolation(Reason.BAD_AUTHENTICATION_METHOD, "no enhanced authentication")
        receive_maximum = request.properties.number(Prop.RECEIVE_MAXIMUM, 0xFFFF)
        max_packet = request.properties.number(Prop.MAXIMUM_PACKET_SIZE, MAX_VARINT + 5)
        if receive_maximum == 0 or max_packet == 0:
            raise _protocol_error("Receive Maximum and Maximum Packet Size must not be 0")

        connack_props: list[tuple[int, PropertyValue]] = [
            (Prop.MAXIMUM_QOS, 1),
            (Prop.MAXIMUM_PACKET_SIZE, self.limits.max_packet_size),
            (Prop.SUBSCRIPTION_IDENTIFIER_AVAILABLE, 0),
        ]
        client_id = request.client_id
        if not client_id:
            client_id = f"cw-embedded-{secrets.token_hex(8)}"
            connack_props.append((Prop.ASSIGNED_CLIENT_IDENTIFIER, client_id))
        asked_expiry = request.properties.number(Prop.SESSION_EXPIRY_INTERVAL, 0)
        expiry = min(asked_expiry, self.limits.max_session_expiry_s)
        if expiry != asked_expiry:
            connack_props.append((Prop.SESSION_EXPIRY_INTERVAL, expiry))

        connection.client_id = client_id
        connection.keepalive_s = request.keepalive_s
        connection.receive_maximum = min(receive_maximum, self.limits.max_inflight)
        connection.max_packet_size = max_packet
        connection.will = request.will

        session = self._sessions.get(client_id)
        if session is not None and session.connection is not None:
            old = session.connection
            log.info("client %s connected again from %s: taking over", client_id, connection.peer)
            old.send(encode_disconnect(Reason.SESSION_TAKEN_OVER))
            self.stats.closed_total["session_taken_over"] += 1
            # Now, not when the old handler notices: its will must precede the new "online".
            self._connection_ended(old, will=True)
            session = self._sessions.get(client_id)
        if session is not None and request.clean_start:
            self._end_session(session)
            session = None
        session_present = session is not None
        if session is None:
            session = Session(client_id, expiry)
            self._sessions[client_id] = session
            self.stats.sessions = len(self._sessions)
        else:
            for timer in (session.expiry_timer, session.will_timer):
                if timer is not None:
                    timer.cancel()
            session.expiry_timer = session.will_timer = None
            session.pending_will = None  # back before the will delay ran out: no will
            session.expiry_s = expiry
        session.connection = connection
        connection.session = session
        connection.connected = True
        self.stats.connects_total += 1
        connection.send(self._connack(Reason.SUCCESS, session_present, connack_props))
        if session_present:
            now = asyncio.get_running_loop().time()
            for packet_id, outgoing in session.inflight.items():
                connection.send(
                    outgoing.message.encode(
                        qos=1, retain=outgoing.retain, packet_id=packet_id, dup=True, now=now
                    )
                )
                self.stats.messages_sent_total += 1
            self._pump(session)
        log.debug(
            "%s connected from %s (session present %s)", client_id, connection.peer, session_present
        )
        return True

    def _parse_connect(self, reader: PacketReader) -> ConnectRequest:
        flags = reader.byte()
        if flags & 0x01:
            raise _malformed("reserved CONNECT flag set")
        clean_start = bool(flags & 0x02)
        has_will = bool(flags & 0x04)
        will_qos = (flags >> 3) & 0x03
        will_retain = bool(flags & 0x20)
        has_password = bool(flags & 0x40)
        has_username = bool(flags & 0x80)
        if will_qos == 3 or (not has_will and (will_qos or will_retain)):
            raise _malformed("inconsistent will flags")
        keepalive_s = reader.u16()
        properties = reader.properties(_CONNECT_PROPS)
        client_id = reader.string()
        will: Will | None = None
        if has_will:
            will_props = reader.properties(_WILL_PROPS)
            topic = reader.string()
            payload = reader.binary()
            if will_qos > 1:
                raise ProtocolViolation(Reason.QOS_NOT_SUPPORTED, "will QoS 2")
            if not valid_topic_name(topic):
                raise ProtocolViolation(Reason.TOPIC_NAME_INVALID, f"will topic {topic[:200]!r}")
            expiry = will_props.values.get(Prop.MESSAGE_EXPIRY_INTERVAL)
            will = Will(
                self._message(topic, payload, will_qos, will_retain, will_props, expires=False),
                will_props.number(Prop.WILL_DELAY_INTERVAL, 0),
                expiry if isinstance(expiry, int) else None,
            )
        username = reader.string() if has_username else None
        if has_password:
            reader.binary()  # any password: demo only, loopback only
        if not reader.at_end():
            raise _malformed("bytes after the CONNECT payload")
        return ConnectRequest(client_id, clean_start, keepalive_s, properties, will, username)

    @staticmethod
    def _connack(
        reason: Reason, session_present: bool, properties: Iterable[tuple[int, PropertyValue]]
    ) -> bytes:
        body = bytes([1 if session_present else 0, reason]) + encode_properties(properties)
        return encode_packet(PacketType.CONNACK, 0, body)

    @staticmethod
    def _message(
        topic: str,
        payload: bytes,
        qos: int,
        retain: bool,
        properties: Properties,
        *,
        expires: bool = True,
    ) -> Message:
        forwarded = b"".join(
            encode_property(identifier, value)
            for identifier, value in properties.items
            if identifier in _FORWARDED_PROPS
        )
        expiry = properties.values.get(Prop.MESSAGE_EXPIRY_INTERVAL)
        expires_at = (
            asyncio.get_running_loop().time() + expiry
            if expires and isinstance(expiry, int)
            else None
        )
        return Message(topic, payload, qos, retain, forwarded, expires_at)

    # --- end of a connection and of a session --------------------------------------------

    def _connection_ended(self, connection: Connection, *, will: bool) -> None:
        """Detach from the session, publish or schedule the will, start the session's expiry.
        Idempotent: a takeover runs it before the old connection's handler does."""
        session = connection.session
        connection.session = None
        if not connection.closed:
            connection.close()
        if session is None or session.connection is not connection:
            return
        session.connection = None
        if self._stopping:
            return  # shutting down: no wills, no timers
        pending = connection.will if will else None
        loop = asyncio.get_running_loop()
        if pending is not None:
            delay = min(pending.delay_s, session.expiry_s)
            if delay <= 0:
                self._publish_will(pending)
            else:
                session.pending_will = pending
                session.will_timer = loop.call_later(delay, self._delayed_will, session)
        if session.expiry_s == 0:
            self._end_session(session)
        elif session.expiry_s != NEVER_EXPIRES:
            session.expiry_timer = loop.call_later(session.expiry_s, self._end_session, session)

    def _delayed_will(self, session: Session) -> None:
        session.will_timer = None
        will, session.pending_will = session.pending_will, None
        if will is not None:
            self._publish_will(will)

    def _publish_will(self, will: Will) -> None:
        self.stats.wills_published_total += 1
        message = will.message
        if will.expiry_s is not None:
            expires_at = asyncio.get_running_loop().time() + will.expiry_s
            message = dataclasses.replace(message, expires_at=expires_at)
        self._route(message, publisher=None)

    def _end_session(self, session: Session) -> None:
        for timer in (session.expiry_timer, session.will_timer):
            if timer is not None:
                timer.cancel()
        session.expiry_timer = session.will_timer = None
        if session.pending_will is not None:  # the session ends first: the will goes now
            self._delayed_will(session)
        for text in session.subscriptions:
            group, topic_filter = parse_filter(text)
            self._tree.remove(group, topic_filter, session.client_id)
        session.subscriptions.clear()
        if self._sessions.get(session.client_id) is session:
            del self._sessions[session.client_id]
        self.stats.sessions = len(self._sessions)
        dropped = len(session.queue) + len(session.inflight)
        if dropped:
            self.stats.dropped_total["session_expired"] += dropped

    # --- PUBLISH in, messages out --------------------------------------------------------

    def _handle_publish(self, connection: Connection, flags: int, body: bytes) -> None:
        qos = (flags >> 1) & 0x03
        retain = bool(flags & 0x01)
        if qos == 3:
            raise _malformed("PUBLISH with QoS 3")
        if qos == 0 and flags & 0x08:
            raise _malformed("DUP set on a QoS 0 PUBLISH")
        reader = PacketReader(body)
        topic = reader.string()
        packet_id = reader.u16() if qos else 0
        if qos and packet_id == 0:
            raise _malformed("PUBLISH with packet id 0")
        properties = reader.properties(_PUBLISH_PROPS)
        if Prop.TOPIC_ALIAS in properties:
            raise ProtocolViolation(Reason.TOPIC_ALIAS_INVALID, "topic aliases are not offered")
        if Prop.SUBSCRIPTION_IDENTIFIER in properties:
            raise _protocol_error("a client must not send a Subscription Identifier")
        payload = reader.rest()
        if qos == 2:
            raise ProtocolViolation(Reason.QOS_NOT_SUPPORTED, "QoS 2 (Maximum QoS is 1)")
        if not valid_topic_name(topic):
            raise ProtocolViolation(Reason.TOPIC_NAME_INVALID, f"topic {topic[:200]!r}")
        self.stats.messages_received_total += 1
        message = self._message(topic, payload, qos, retain, properties)
        self._route(message, publisher=connection.client_id)
        if qos == 1:
            # After routing: the message is in every subscriber's session before the ack.
            connection.send(encode_packet(PacketType.PUBACK, 0, packet_id.to_bytes(2, "big")))

    def _route(self, message: Message, publisher: str | None) -> None:
        if message.retain:
            self._retain(message)
        direct, groups = self._tree.match(message.topic, publisher)
        for client_id, sub in direct.items():
            session = self._sessions.get(client_id)
            if session is not None:
                retain = message.retain and sub.retain_as_published
                self._deliver(session, message, min(message.qos, sub.qos), retain)
        for group in groups:
            picked = group.pick(self._online)
            if picked is None:
                continue
            client_id, sub = picked
            session = self._sessions.get(client_id)
            if session is not None:
                retain = message.retain and sub.retain_as_published
                self._deliver(session, message, min(message.qos, sub.qos), retain)

    def _online(self, client_id: str) -> bool:
        session = self._sessions.get(client_id)
        return session is not None and session.connection is not None

    def _retain(self, message: Message) -> None:
        if not message.payload:
            self._retained.pop(message.topic, None)
        elif (
            message.topic in self._retained
            or len(self._retained) < self.limits.max_retained_messages
        ):
            self._retained[message.topic] = message
        else:
            self.stats.dropped_total["retained_store_full"] += 1
        self.stats.retained = len(self._retained)

    def _deliver(self, session: Session, message: Message, qos: int, retain: bool) -> None:
        outgoing = Outgoing(message, qos, retain)
        connection = session.connection
        if qos == 0:
            if connection is None:
                return  # QoS 0 is not kept for an offline session
            if connection.buffered() > self.limits.max_write_buffer:
                self.stats.dropped_total["slow_reader"] += 1
                return
            self._send(connection, outgoing, None)
            return
        if (
            connection is not None
            and not session.queue
            and len(session.inflight) < connection.receive_maximum
        ):
            self._send_qos1(session, connection, outgoing)
        elif len(session.queue) < self.limits.max_queued_messages:
            session.queue.append(outgoing)
        else:
            if not self.stats.dropped_total["queue_full"]:
                log.warning("queue of %s is full; dropping messages", session.client_id)
            self.stats.dropped_total["queue_full"] += 1

    def _send_qos1(self, session: Session, connection: Connection, outgoing: Outgoing) -> None:
        packet_id = session.allocate_packet_id()
        if self._send(connection, outgoing, packet_id):
            session.inflight[packet_id] = outgoing

    def _send(self, connection: Connection, outgoing: Outgoing, packet_id: int | None) -> bool:
        now = asyncio.get_running_loop().time()
        if outgoing.message.expired(now):
            self.stats.dropped_total["expired"] += 1
            return False
        data = outgoing.message.encode(
            qos=outgoing.qos, retain=outgoing.retain, packet_id=packet_id, dup=False, now=now
        )
        if len(data) > connection.max_packet_size:
            self.stats.dropped_total["too_large_for_client"] += 1
            return False
        connection.send(data)
        self.stats.messages_sent_total += 1
        return True

    def _pump(self, session: Session) -> None:
        connection = session.connection
        while (
            connection is not None
            and session.queue
            and len(session.inflight) < connection.receive_maximum
        ):
            self._send_qos1(session, connection, session.queue.popleft())

    def _handle_puback(self, connection: Connection, body: bytes) -> None:
        reader = PacketReader(body)
        packet_id = reader.u16()
        if not reader.at_end():
            reader.byte()  # the client's reason code: acknowledged either way
            if not reader.at_end():
                reader.properties(_PUBACK_PROPS)
        session = connection.session
        if session is not None and session.inflight.pop(packet_id, None) is not None:
            self._pump(session)

    # --- SUBSCRIBE / UNSUBSCRIBE / DISCONNECT --------------------------------------------

    def _handle_subscribe(self, connection: Connection, body: bytes) -> None:
        session = connection.session
        assert session is not None
        reader = PacketReader(body)
        packet_id = reader.u16()
        if packet_id == 0:
            raise _malformed("SUBSCRIBE with packet id 0")
        properties = reader.properties(_SUBSCRIBE_PROPS)
        if Prop.SUBSCRIPTION_IDENTIFIER in properties:
            raise ProtocolViolation(
                Reason.SUBSCRIPTION_IDENTIFIERS_NOT_SUPPORTED, "subscription identifiers"
            )
        requests: list[tuple[str, Subscription]] = []
        while not reader.at_end():
            text = reader.string()
            options = reader.byte()
            qos, retain_handling = options & 0x03, (options >> 4) & 0x03
            if options & 0xC0 or qos == 3 or retain_handling == 3:
                raise _malformed(f"subscription options {options:#x}")
            requests.append(
                (
                    text,
                    Subscription(qos, bool(options & 0x04), bool(options & 0x08), retain_handling),
                )
            )
        if not requests:
            raise _protocol_error("SUBSCRIBE without a topic filter")
        codes: list[int] = []
        retained: list[Outgoing] = []
        for text, sub in requests:
            try:
                group, topic_filter = parse_filter(text)
            except ValueError:
                codes.append(Reason.TOPIC_FILTER_INVALID)
                continue
            if group is not None and sub.no_local:
                raise _protocol_error("No Local on a shared subscription")
            if (
                text not in session.subscriptions
                and len(session.subscriptions) >= self.limits.max_subscriptions_per_session
            ):
                codes.append(Reason.QUOTA_EXCEEDED)
                continue
            sub.qos = min(sub.qos, 1)
            existed = self._tree.add(group, topic_filter, session.client_id, sub)
            session.subscriptions[text] = sub
            codes.append(sub.qos)
            if group is None and (
                sub.retain_handling == 0 or (sub.retain_handling == 1 and not existed)
            ):
                retained.extend(self._retained_for(topic_filter, sub.qos))
        suback = packet_id.to_bytes(2, "big") + encode_properties(()) + bytes(codes)
        connection.send(encode_packet(PacketType.SUBACK, 0, suback))
        for outgoing in retained:  # after the SUBACK, retain flag set
            self._deliver(session, outgoing.message, outgoing.qos, True)

    def _retained_for(self, topic_filter: str, qos: int) -> list[Outgoing]:
        if "+" not in topic_filter and "#" not in topic_filter:
            found = self._retained.get(topic_filter)
            candidates = [found] if found is not None else []
        else:
            candidates = [m for t, m in self._retained.items() if filter_matches(topic_filter, t)]
        now = asyncio.get_running_loop().time()
        result = []
        for message in candidates:
            if message.expired(now):
                self._retained.pop(message.topic, None)
                continue
            result.append(Outgoing(message, min(qos, message.qos), True))
        self.stats.retained = len(self._retained)
        return result

    def _handle_unsubscribe(self, connection: Connection, body: bytes) -> None:
        session = connection.session
        assert session is not None
        reader = PacketReader(body)
        packet_id = reader.u16()
        if packet_id == 0:
            raise _malformed("UNSUBSCRIBE with packet id 0")
        reader.properties(_UNSUBSCRIBE_PROPS)
        filters: list[str] = []
        while not reader.at_end():
            filters.append(reader.string())
        if not filters:
            raise _protocol_error("UNSUBSCRIBE without a topic filter")
        codes: list[int] = []
        for text in filters:
            try:
                group, topic_filter = parse_filter(text)
            except ValueError:
                codes.append(Reason.TOPIC_FILTER_INVALID)
                continue
            if session.subscriptions.pop(text, None) is None:
                codes.append(Reason.NO_SUBSCRIPTION_EXISTED)
                continue
            self._tree.remove(group, topic_filter, session.client_id)
            codes.append(Reason.SUCCESS)
        unsuback = packet_id.to_bytes(2, "big") + encode_properties(()) + bytes(codes)
        connection.send(encode_packet(PacketType.UNSUBACK, 0, unsuback))

    def _handle_disconnect(self, connection: Connection, body: bytes) -> None:
        reader = PacketReader(body)
        reason = reader.byte() if not reader.at_end() else Reason.SUCCESS
        if not reader.at_end():
            properties = reader.properties(_DISCONNECT_PROPS)
            session = connection.session
            if Prop.SESSION_EXPIRY_INTERVAL in properties and session is not None:
                expiry = properties.number(Prop.SESSION_EXPIRY_INTERVAL, 0)
                if session.expiry_s == 0 and expiry != 0:
                    raise _protocol_error("session expiry set on DISCONNECT after 0 on CONNECT")
                session.expiry_s = min(expiry, self.limits.max_session_expiry_s)
        # Only "normal disconnection" discards the will; 0x04 and error codes send it.
        connection.normal_disconnect = reason == Reason.SUCCESS
        log.debug("%s disconnected (reason %#x)", connection.client_id, reason)


# --- running it --------------------------------------------------------------------------


class BrokerThread:
    """The broker on its own event loop in a daemon thread (tests, embedding in a process)."""

    def __init__(
        self, host: str = "127.0.0.1", port: int = 0, limits: BrokerLimits | None = None
    ) -> None:
        self.broker = EmbeddedBroker(host, port, limits)
        self._thread = threading.Thread(target=self._run, name="embedded-broker", daemon=True)
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._error: BaseException | None = None
        self.port = 0

    @property
    def address(self) -> BrokerAddress:
        return BrokerAddress(self.broker.host, self.port, False)

    @property
    def url(self) -> str:
        return f"mqtt://{self.broker.host}:{self.port}"

    @property
    def stats(self) -> BrokerStats:
        return self.broker.stats

    def start(self, timeout_s: float = 10.0) -> BrokerThread:
        self._thread.start()
        if not self._ready.wait(timeout_s):
            raise RuntimeError("embedded broker did not start")
        if self._error is not None:
            raise self._error
        return self

    def stop(self, timeout_s: float = 10.0) -> None:
        loop, stop = self._loop, self._stop
        if loop is not None and stop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop already finished
                loop.call_soon_threadsafe(stop.set)
        self._thread.join(timeout_s)

    def call(self, function: Callable[[], None]) -> None:
        """Run ``function`` on the broker's loop and wait for it (tests inspect state)."""
        assert self._loop is not None
        done = threading.Event()

        def run() -> None:
            try:
                function()
            finally:
                done.set()

        self._loop.call_soon_threadsafe(run)
        done.wait(10)

    def _run(self) -> None:
        asyncio.run(self._main())

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        try:
            await self.broker.start()
            self.port = self.broker.port
        except BaseException as exc:
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        await self._stop.wait()
        await self.broker.stop()

    def __enter__(self) -> BrokerThread:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


async def serve(
    host: str, port: int, limits: BrokerLimits, *, stop_on_stdin_eof: bool = False
) -> None:
    """Run until SIGINT or SIGTERM (or, with ``stop_on_stdin_eof``, until the parent that
    holds our stdin goes away, so a killed demo leaves no broker behind)."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    if stop_on_stdin_eof:

        def watch_stdin() -> None:
            # os.read, not sys.stdin: a daemon thread blocked inside the buffered reader
            # holds its lock and makes interpreter shutdown abort.
            with contextlib.suppress(OSError):
                while os.read(stdin_fd, 4096):
                    pass
            with contextlib.suppress(RuntimeError):  # the loop has already finished
                loop.call_soon_threadsafe(stop.set)

        stdin_fd = sys.stdin.fileno()

        threading.Thread(target=watch_stdin, name="stdin-watch", daemon=True).start()
    broker = EmbeddedBroker(host, port, limits)
    await broker.start()
    await stop.wait()
    await broker.stop()


def main(argv: Sequence[str] | None = None) -> int:
    defaults = BrokerLimits()
    parser = argparse.ArgumentParser(
        prog="python -m campuswatch.collector.broker.embedded",
        description="A small in-memory MQTT 5 broker for `campuswatch demo` (loopback only, "
        "any password). Not for schools: use Mosquitto (docs/broker.md).",
    )
    parser.add_argument("--host", default="127.0.0.1", help="a loopback address")
    parser.add_argument("--port", type=int, default=1883)
    parser.add_argument("--max-packet-size", type=int, default=defaults.max_packet_size)
    parser.add_argument("--max-queued-messages", type=int, default=defaults.max_queued_messages)
    parser.add_argument("--stop-on-stdin-eof", action="store_true")
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        require_loopback(args.host)
    except ValueError as exc:
        parser.error(str(exc))
    limits = BrokerLimits(
        max_packet_size=args.max_packet_size, max_queued_messages=args.max_queued_messages
    )
    try:
        asyncio.run(serve(args.host, args.port, limits, stop_on_stdin_eof=args.stop_on_stdin_eof))
    except OSError as exc:
        log.error("embedded broker cannot listen on %s:%d: %s", args.host, args.port, exc)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
