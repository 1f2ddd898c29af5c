"""The demo's embedded MQTT 5 broker against paho-mqtt peers and raw, hostile sockets."""

from __future__ import annotations

import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator

import paho.mqtt.client as paho
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions

from campuswatch.collector.broker.embedded import (
    V311_REFUSAL,
    BrokerLimits,
    BrokerThread,
    PacketReader,
    Subscription,
    TopicTree,
    encode_properties,
    encode_string,
    encode_varint,
    filter_matches,
    parse_filter,
    require_loopback,
)
from tests.support.ports import free_port


class Peer:
    """A paho MQTT 5 client on its own network thread that records what it receives."""

    def __init__(
        self,
        broker: BrokerThread,
        client_id: str,
        *,
        clean_start: bool = True,
        session_expiry_s: int = 0,
        will: tuple[str, bytes, bool] | None = None,
        manual_ack: bool = False,
        max_packet_size: int | None = None,
    ) -> None:
        self.messages: list[paho.MQTTMessage] = []
        self.disconnects: list[ReasonCode] = []
        self.session_present: bool | None = None
        self._condition = threading.Condition()
        self._connected = threading.Event()
        client = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=paho.MQTTv5,
            manual_ack=manual_ack,
        )
        client.username_pw_set("anyone", "any password")
        if will is not None:
            client.will_set(will[0], will[1], qos=1, retain=will[2])
        client.on_message = self._on_message
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        if session_expiry_s:
            properties.SessionExpiryInterval = session_expiry_s
        if max_packet_size:
            properties.MaximumPacketSize = max_packet_size
        client.connect(
            "127.0.0.1", broker.port, clean_start=clean_start, properties=properties, keepalive=30
        )
        client.loop_start()
        self.client = client
        assert self._connected.wait(10), f"{client_id} could not connect"

    def _on_connect(self, client: paho.Client, userdata: object, flags: paho.ConnectFlags,
                    reason: ReasonCode, properties: Properties | None) -> None:  # fmt: skip
        self.session_present = bool(flags.session_present)
        self._connected.set()

    def _on_disconnect(self, client: paho.Client, userdata: object, flags: object,
                       reason: ReasonCode, properties: Properties | None) -> None:  # fmt: skip
        with self._condition:
            self.disconnects.append(reason)
            self._condition.notify_all()

    def _on_message(self, client: paho.Client, userdata: object, message: paho.MQTTMessage) -> None:
        with self._condition:
            self.messages.append(message)
            self._condition.notify_all()

    def wait_for(
        self, predicate: Callable[[list[paho.MQTTMessage]], bool], timeout_s: float = 10
    ) -> list[paho.MQTTMessage]:
        deadline = time.monotonic() + timeout_s
        with self._condition:
            while not predicate(self.messages):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    seen = [(m.topic, m.payload) for m in self.messages]
                    raise AssertionError(f"condition not met; received {seen}")
                self._condition.wait(remaining)
            return list(self.messages)

    def wait_until_disconnected(self, timeout_s: float = 10) -> ReasonCode:
        deadline = time.monotonic() + timeout_s
        with self._condition:
            while not self.disconnects:
                remaining = deadline - time.monotonic()
                assert remaining > 0, "not disconnected"
                self._condition.wait(remaining)
            return self.disconnects[0]

    def payloads(self, topic: str | None = None) -> list[bytes]:
        with self._condition:
            return [bytes(m.payload) for m in self.messages if topic in (None, m.topic)]

    def subscribe(self, topic_filter: str, qos: int = 1, **options: object) -> None:
        done = threading.Event()
        self.client.on_subscribe = lambda *args: done.set()
        self.client.subscribe(topic_filter, options=SubscribeOptions(qos=qos, **options))  # type: ignore[arg-type]
        assert done.wait(10), f"no SUBACK for {topic_filter}"

    def publish(self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False) -> None:
        info = self.client.publish(topic, payload, qos=qos, retain=retain)
        assert info.rc == MQTTErrorCode.MQTT_ERR_SUCCESS
        info.wait_for_publish(10)

    def stop(self, reason: int = 0) -> None:
        """DISCONNECT with ``reason`` (0 normal: no will; 4: send the will)."""
        self.client.disconnect(reasoncode=ReasonCode(PacketTypes.DISCONNECT, identifier=reason))
        self.client.loop_stop()

    def kill(self) -> None:
        """Vanish without DISCONNECT, as a power cut would."""
        self.client.loop_stop()
        sock = self.client.socket()
        if sock is not None:
            sock.close()  # type: ignore[union-attr]


@pytest.fixture
def peers(embedded_broker: BrokerThread) -> Iterator[Callable[..., Peer]]:
    made: list[Peer] = []

    def make(client_id: str | None = None, **options: object) -> Peer:
        peer = Peer(embedded_broker, client_id or f"peer-{free_port()}", **options)  # type: ignore[arg-type]
        made.append(peer)
        return peer

    yield make
    for peer in made:
        peer.client.disconnect()  # wakes paho's loop, so loop_stop returns at once
        peer.client.loop_stop()


def eventually(condition: Callable[[], bool], timeout_s: float = 10) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not met"
        time.sleep(0.02)


def marker(publisher: Peer, subscriber: Peer, topic: str = "test/marker") -> None:
    """Publish a marker and wait for it: whatever was sent before it has been delivered."""
    token = f"marker-{free_port()}".encode()
    publisher.publish(topic, token)
    subscriber.wait_for(lambda ms: any(m.payload == token for m in ms))


# --- retained messages ---------------------------------------------------------------------


def test_retained_message_reaches_later_subscribers_until_cleared(
    peers: Callable[..., Peer],
) -> None:
    publisher = peers()
    publisher.publish("cw/v1/s1/d1/state", b"online", retain=True)
    early = peers()
    early.subscribe("cw/v1/+/+/state")
    [first] = early.wait_for(lambda ms: len(ms) == 1)
    assert (first.payload, first.retain, first.qos) == (b"online", True, 1)

    # Forwarded to an existing subscription: retain flag 0 (no Retain As Published) …
    publisher.publish("cw/v1/s1/d1/state", b"offline", retain=True)
    second = early.wait_for(lambda ms: len(ms) == 2)[1]
    assert (second.payload, second.retain) == (b"offline", False)
    # … and with Retain As Published, 1.
    keeper = peers()
    keeper.subscribe("cw/v1/s1/#", retainAsPublished=True)
    keeper.wait_for(lambda ms: len(ms) == 1)  # the stored retained message
    publisher.publish("cw/v1/s1/d1/state", b"rebooting", retain=True)
    assert keeper.wait_for(lambda ms: len(ms) == 2)[1].retain

    late = peers()
    late.subscribe("cw/v1/#")
    assert late.wait_for(lambda ms: len(ms) == 1)[0].payload == b"rebooting"

    publisher.publish("cw/v1/s1/d1/state", b"", retain=True)  # clears it
    cleared = peers()
    cleared.subscribe("cw/v1/#")
    marker(publisher, cleared, "cw/v1/s1/d1/health")
    assert cleared.payloads("cw/v1/s1/d1/state") == []


def test_retain_handling_2_sends_no_retained_messages(peers: Callable[..., Peer]) -> None:
    publisher = peers()
    publisher.publish("a/retained", b"kept", retain=True)
    subscriber = peers()
    subscriber.subscribe("a/#", retainHandling=SubscribeOptions.RETAIN_DO_NOT_SEND)
    marker(publisher, subscriber, "a/marker")
    assert subscriber.payloads("a/retained") == []


# --- Last Will ---------------------------------------------------------------------------


def test_will_is_published_and_retained_when_a_client_vanishes(
    peers: Callable[..., Peer], embedded_broker: BrokerThread
) -> None:
    watcher = peers()
    watcher.subscribe("cw/v1/+/+/state")
    device = peers("cw-sim-7", will=("cw/v1/s1/pc-7/state", b"offline-will", True))
    device.kill()
    will = watcher.wait_for(lambda ms: len(ms) == 1)[0]
    assert (will.topic, will.payload) == ("cw/v1/s1/pc-7/state", b"offline-will")
    late = peers()
    late.subscribe("cw/v1/+/+/state")
    assert late.wait_for(lambda ms: len(ms) == 1)[0].retain
    assert embedded_broker.stats.wills_published_total == 1


def test_normal_disconnect_discards_the_will_and_reason_4_sends_it(
    peers: Callable[..., Peer],
) -> None:
    watcher = peers()
    watcher.subscribe("will/#")
    polite = peers(will=("will/polite", b"gone", False))
    polite.stop(reason=0)
    marker(watcher, watcher, "will/marker")
    assert watcher.payloads("will/polite") == []

    asks_for_will = peers(will=("will/asked", b"gone", False))
    asks_for_will.stop(reason=0x04)
    assert watcher.wait_for(lambda ms: any(m.topic == "will/asked" for m in ms))


def test_keep_alive_timeout_closes_the_connection_and_sends_the_will(
    peers: Callable[..., Peer], embedded_broker: BrokerThread
) -> None:
    watcher = peers()
    watcher.subscribe("will/#")
    silent = RawClient(embedded_broker)
    silent.connect("silent", keepalive_s=1, will=("will/silent", b"timed out"))
    # Nothing more is sent: after 1.5 keep-alive periods the broker gives up on it.
    assert silent.read_packet()[:3] == bytes([0xE0, 1, 0x8D])  # DISCONNECT keep-alive timeout
    assert silent.closed_by_broker()
    assert watcher.wait_for(lambda ms: len(ms) == 1)[0].payload == b"timed out"
    assert embedded_broker.stats.closed_total["keep_alive_timeout"] == 1


# --- sessions ----------------------------------------------------------------------------


def test_persistent_session_receives_qos1_messages_published_while_offline(
    peers: Callable[..., Peer],
) -> None:
    collector = peers("cw-demo", clean_start=False, session_expiry_s=3600)
    assert collector.session_present is False
    collector.subscribe("cw/v1/#")
    collector.stop()
    publisher = peers()
    for n in range(5):
        publisher.publish(f"cw/v1/s1/d{n}/health", f"{n}".encode())
    publisher.publish("cw/v1/s1/d9/health", b"qos0 is not kept", qos=0)

    back = peers("cw-demo", clean_start=False, session_expiry_s=3600)
    assert back.session_present is True
    received = back.wait_for(lambda ms: len(ms) >= 5)
    assert [m.payload for m in received] == [b"0", b"1", b"2", b"3", b"4"]
    marker(publisher, back, "cw/v1/s1/d0/health")
    assert b"qos0 is not kept" not in back.payloads()
    back.stop()

    fresh = peers("cw-demo", clean_start=True)
    assert fresh.session_present is False
    publisher.publish("cw/v1/s1/d1/health", b"after clean start")
    fresh.subscribe("test/marker")
    marker(publisher, fresh)
    assert fresh.payloads("cw/v1/s1/d1/health") == []  # the old subscription went with it


def test_unacknowledged_messages_are_redelivered_with_dup_on_reconnect(
    peers: Callable[..., Peer],
) -> None:
    consumer = peers("slow-consumer", clean_start=False, session_expiry_s=600, manual_ack=True)
    consumer.subscribe("jobs/#")
    publisher = peers()
    for n in range(3):
        publisher.publish(f"jobs/{n}", b"work")
    first = consumer.wait_for(lambda ms: len(ms) == 3)
    assert not any(m.dup for m in first)
    consumer.kill()  # crashed before acknowledging anything

    again = peers("slow-consumer", clean_start=False, session_expiry_s=600, manual_ack=True)
    redelivered = again.wait_for(lambda ms: len(ms) == 3)
    assert [m.topic for m in redelivered] == ["jobs/0", "jobs/1", "jobs/2"]
    assert all(m.dup for m in redelivered)
    for message in redelivered:
        again.client.ack(message.mid, 1)
    again.subscribe("test/marker")
    marker(publisher, again)
    again.client.ack(again.messages[-1].mid, 1)
    again.subscribe("test/sync")  # its SUBACK: the broker has read every ack before it
    again.kill()

    third = peers("slow-consumer", clean_start=False, session_expiry_s=600, manual_ack=True)
    marker(publisher, third)
    assert [m.topic for m in third.messages] == ["test/marker"]


def test_offline_queue_is_bounded_and_counts_what_it_drops() -> None:
    with BrokerThread(port=free_port(), limits=BrokerLimits(max_queued_messages=5)) as broker:
        durable = Peer(broker, "durable", clean_start=False, session_expiry_s=60)
        durable.subscribe("q/#")
        durable.stop()
        publisher = Peer(broker, "publisher")
        for n in range(8):
            publisher.publish("q/x", f"{n}".encode())
        back = Peer(broker, "durable", clean_start=False, session_expiry_s=60)
        back.subscribe("test/marker")
        marker(publisher, back)
        assert back.payloads("q/x") == [b"0", b"1", b"2", b"3", b"4"]
        assert broker.stats.dropped_total["queue_full"] == 3
        for peer in (publisher, back):
            peer.stop()


def test_same_client_id_takes_the_session_over_and_the_old_will_goes_first(
    peers: Callable[..., Peer], embedded_broker: BrokerThread
) -> None:
    watcher = peers()
    watcher.subscribe("cw/v1/s1/agent/state")
    old = RawClient(embedded_broker)
    old.connect("cw-agent-1", will=("cw/v1/s1/agent/state", b"offline"))
    new = peers("cw-agent-1")
    new.publish("cw/v1/s1/agent/state", b"online")
    assert old.read_packet() == bytes([0xE0, 1, 0x8E])  # DISCONNECT session taken over
    assert old.closed_by_broker()
    states = watcher.wait_for(lambda ms: len(ms) == 2)
    assert [m.payload for m in states] == [b"offline", b"online"]


# --- subscriptions -------------------------------------------------------------------------


def test_shared_subscription_splits_messages_round_robin(peers: Callable[..., Peer]) -> None:
    members = [peers(f"collector-{n}") for n in range(2)]
    for member in members:
        member.subscribe("$share/collectors/cw/v1/#")
    everyone = peers()
    everyone.subscribe("cw/v1/#")
    publisher = peers()
    sent = [f"{n}".encode() for n in range(20)]
    for payload in sent:
        publisher.publish("cw/v1/s1/d1/health", payload)
    everyone.wait_for(lambda ms: len(ms) == 20)
    eventually(lambda: sum(len(member.payloads()) for member in members) >= 20)
    split = [member.payloads() for member in members]
    assert [len(part) for part in split] == [10, 10]
    assert sorted(split[0] + split[1]) == sorted(sent)


def test_shared_group_sends_everything_to_the_member_still_connected(
    peers: Callable[..., Peer],
) -> None:
    gone = peers("member-gone", clean_start=False, session_expiry_s=600)
    gone.subscribe("$share/g/jobs/#")
    staying = peers("member-staying")
    staying.subscribe("$share/g/jobs/#")
    gone.stop()
    publisher = peers()
    for n in range(6):
        publisher.publish(f"jobs/{n}", b"x")
    assert len(staying.wait_for(lambda ms: len(ms) == 6)) == 6


def test_wildcards_and_dollar_topics(peers: Callable[..., Peer]) -> None:
    subscriber = peers()
    subscriber.subscribe("#")
    single = peers()
    single.subscribe("+/x")
    publisher = peers()
    publisher.publish("$SYS/x", b"system")
    publisher.publish("a/x", b"a")
    publisher.publish("a/b/x", b"deep")
    marker(publisher, subscriber)
    assert subscriber.payloads()[:2] == [b"a", b"deep"]
    assert b"system" not in subscriber.payloads()
    marker(publisher, single, "z/x")
    assert single.payloads()[0] == b"a"
    assert b"system" not in single.payloads()


def test_subscription_qos_caps_delivery_and_unsubscribe_stops_it(
    peers: Callable[..., Peer],
) -> None:
    subscriber = peers()
    subscriber.subscribe("t/#", qos=0)
    publisher = peers()
    publisher.publish("t/1", b"one")
    assert subscriber.wait_for(lambda ms: len(ms) == 1)[0].qos == 0
    done = threading.Event()
    subscriber.client.on_unsubscribe = lambda *args: done.set()
    subscriber.client.unsubscribe("t/#")
    assert done.wait(10)
    subscriber.subscribe("test/marker")
    publisher.publish("t/2", b"two")
    marker(publisher, subscriber)
    assert subscriber.payloads("t/2") == []


def test_messages_over_the_clients_maximum_packet_size_are_dropped(
    peers: Callable[..., Peer], embedded_broker: BrokerThread
) -> None:
    small = peers(max_packet_size=256)
    small.subscribe("big/#")
    publisher = peers()
    publisher.publish("big/1", b"x" * 1000)
    publisher.publish("big/2", b"fits")
    assert small.wait_for(lambda ms: len(ms) == 1)[0].payload == b"fits"
    assert embedded_broker.stats.dropped_total["too_large_for_client"] == 1


# --- hostile input -------------------------------------------------------------------------


class RawClient:
    """A bare socket speaking (or mangling) MQTT 5 by hand."""

    def __init__(self, broker: BrokerThread) -> None:
        self.sock = socket.create_connection(("127.0.0.1", broker.port), timeout=10)

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def connect(
        self, client_id: str, *, keepalive_s: int = 60, will: tuple[str, bytes] | None = None
    ) -> None:
        flags = 0x02 | (0x04 | 0x08 if will else 0)  # clean start; will QoS 1
        body = encode_string("MQTT") + bytes([5, flags]) + keepalive_s.to_bytes(2, "big")
        body += encode_properties(()) + encode_string(client_id)
        if will is not None:
            body += encode_properties(()) + encode_string(will[0])
            body += len(will[1]).to_bytes(2, "big") + will[1]
        self.send(packet(0x10, body))
        connack = self.read_packet()
        assert connack[:4] == bytes([0x20, connack[1], 0, 0]), connack

    def read_packet(self) -> bytes:
        first = self._read(1)
        length, shift, header = 0, 0, b""
        while True:
            digit = self._read(1)
            header += digit
            length |= (digit[0] & 0x7F) << shift
            shift += 7
            if not digit[0] & 0x80:
                break
        return first + header + self._read(length)

    def closed_by_broker(self) -> bool:
        return self.sock.recv(1) == b""

    def _read(self, count: int) -> bytes:
        data = b""
        while len(data) < count:
            chunk = self.sock.recv(count - len(data))
            assert chunk, f"connection closed after {data!r}"
            data += chunk
        return data

    def close(self) -> None:
        self.sock.close()


def packet(first: int, body: bytes) -> bytes:
    return bytes([first]) + encode_varint(len(body)) + body


def publish_packet(topic: bytes, payload: bytes = b"x", first: int = 0x32) -> bytes:
    body = len(topic).to_bytes(2, "big") + topic + b"\x00\x01" + b"\x00" + payload
    return packet(first, body)


ATTACKS: dict[str, tuple[bytes, bytes | None, str]] = {
    # name: (bytes after a good CONNECT, what the broker answers, counted reason)
    "garbage": (b"\xff\xff\xff\xff\xff\xff", bytes([0xE0, 1, 0x81]), "malformed_packet"),
    "five length bytes": (b"\x30\xff\xff\xff\xff\x01", bytes([0xE0, 1, 0x81]), "malformed_packet"),
    "too large": (b"\x30\xff\xff\xff\x7f", bytes([0xE0, 1, 0x95]), "packet_too_large"),
    "qos 2": (publish_packet(b"a/b", first=0x34), bytes([0xE0, 1, 0x9B]), "qos_not_supported"),
    "qos 3": (publish_packet(b"a/b", first=0x36), bytes([0xE0, 1, 0x81]), "malformed_packet"),
    "wildcard topic": (publish_packet(b"a/#"), bytes([0xE0, 1, 0x90]), "topic_name_invalid"),
    "bad utf-8": (publish_packet(b"a/\xff"), bytes([0xE0, 1, 0x81]), "malformed_packet"),
    "nul in topic": (publish_packet(b"a/\x00"), bytes([0xE0, 1, 0x81]), "malformed_packet"),
    "truncated": (packet(0x32, b"\x00\x10a/b"), bytes([0xE0, 1, 0x81]), "malformed_packet"),
    "unknown property": (
        packet(0x32, b"\x00\x03a/b\x00\x01\x02\x7f\x00x"),
        bytes([0xE0, 1, 0x81]),
        "malformed_packet",
    ),
    "topic alias": (
        packet(0x32, b"\x00\x03a/b\x00\x01\x03\x23\x00\x01x"),
        bytes([0xE0, 1, 0x94]),
        "topic_alias_invalid",
    ),
    "subscribe flags": (
        packet(0x80, b"\x00\x01\x00\x00\x01a\x01"),
        bytes([0xE0, 1, 0x81]),
        "malformed_packet",
    ),
    "subscribe reserved bits": (
        packet(0x82, b"\x00\x01\x00\x00\x01a\xc1"),
        bytes([0xE0, 1, 0x81]),
        "malformed_packet",
    ),
    "shared no local": (
        packet(0x82, b"\x00\x01\x00" + encode_string("$share/g/a") + b"\x05"),
        bytes([0xE0, 1, 0x82]),
        "protocol_error",
    ),
    "second connect": (packet(0x10, b"\x00"), bytes([0xE0, 1, 0x82]), "protocol_error"),
    "pubrel": (packet(0x62, b"\x00\x01"), bytes([0xE0, 1, 0x82]), "protocol_error"),
    "reserved type 0": (packet(0x00, b""), bytes([0xE0, 1, 0x81]), "malformed_packet"),
}


@pytest.mark.parametrize("name", sorted(ATTACKS))
def test_a_bad_packet_closes_that_connection_only(
    name: str, peers: Callable[..., Peer], embedded_broker: BrokerThread
) -> None:
    bystander = peers()
    bystander.subscribe("still/#")
    attack, answer, reason = ATTACKS[name]
    raw = RawClient(embedded_broker)
    raw.connect(f"attacker-{free_port()}")
    raw.send(attack)
    assert raw.read_packet() == answer
    assert raw.closed_by_broker()
    raw.close()
    assert embedded_broker.stats.closed_total[reason] == 1
    bystander.publish("still/alive", b"yes")
    assert bystander.wait_for(lambda ms: len(ms) == 1)[0].payload == b"yes"


def test_bad_connects_are_refused(embedded_broker: BrokerThread) -> None:
    v311 = RawClient(embedded_broker)
    v311.send(packet(0x10, encode_string("MQTT") + b"\x04\x02\x00\x3c" + encode_string("old")))
    assert v311.read_packet() == V311_REFUSAL  # what a 3.1.1 client understands
    assert v311.closed_by_broker()

    publish_first = RawClient(embedded_broker)
    publish_first.send(publish_packet(b"a/b"))
    assert publish_first.read_packet()[3] == 0x82  # CONNACK protocol error
    assert publish_first.closed_by_broker()

    will_qos2 = RawClient(embedded_broker)
    body = encode_string("MQTT") + bytes([5, 0x02 | 0x04 | 0x10]) + b"\x00\x3c\x00"
    body += encode_string("w") + b"\x00" + encode_string("w/t") + b"\x00\x01x"
    will_qos2.send(packet(0x10, body))
    assert will_qos2.read_packet()[3] == 0x9B  # CONNACK QoS not supported
    assert embedded_broker.stats.connects_total == 0


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(noise=st.binary(min_size=1, max_size=200))
def test_random_bytes_after_connect_never_hurt_the_broker(
    embedded_broker: BrokerThread, noise: bytes
) -> None:
    raw = RawClient(embedded_broker)
    raw.connect(f"fuzz-{free_port()}")
    raw.send(noise)
    raw.sock.shutdown(socket.SHUT_WR)
    while raw.sock.recv(4096):  # whatever it answers, it then closes
        pass
    raw.close()
    assert embedded_broker.stats.closed_total["internal_error"] == 0


# --- the pieces, directly ----------------------------------------------------------------


def test_properties_round_trip_and_duplicates_are_refused() -> None:
    block = encode_properties([(0x11, 3600), (0x26, ("k", "v")), (0x26, ("k", "w")), (0x21, 10)])
    found = PacketReader(block).properties(frozenset({0x11, 0x26, 0x21}))  # type: ignore[arg-type]
    assert found.values == {0x11: 3600, 0x26: ("k", "v"), 0x21: 10}
    assert [v for k, v in found.items if k == 0x26] == [("k", "v"), ("k", "w")]
    twice = encode_properties([(0x11, 1), (0x11, 2)])
    with pytest.raises(Exception, match="appears twice"):
        PacketReader(twice).properties(frozenset({0x11}))  # type: ignore[arg-type]
    with pytest.raises(Exception, match="not allowed"):
        PacketReader(block).properties(frozenset({0x11}))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("text", "valid"),
    [
        ("a/b", True),
        ("a/+/c", True),
        ("#", True),
        ("a/#", True),
        ("$share/g/a/#", True),
        ("a/#/b", False),
        ("a/b#", False),
        ("a+/b", False),
        ("", False),
        ("$share/g/", False),
        ("$share//a", False),
        ("$share/g+/a", False),
    ],
)
def test_topic_filter_validation(text: str, valid: bool) -> None:
    if valid:
        parse_filter(text)
    else:
        with pytest.raises(ValueError):
            parse_filter(text)


LEVEL = st.sampled_from(["a", "b", "$SYS", ""])
TOPIC = st.lists(LEVEL, min_size=1, max_size=4).map("/".join)
FILTER_LEVEL = st.sampled_from(["a", "b", "$SYS", "", "+"])
FILTER = st.tuples(st.lists(FILTER_LEVEL, min_size=1, max_size=4), st.booleans()).map(
    lambda parts: "/".join(parts[0] + (["#"] if parts[1] else []))
)


@given(filters=st.lists(FILTER, min_size=1, max_size=6, unique=True), topic=TOPIC)
def test_topic_tree_matches_like_the_plain_matcher(filters: list[str], topic: str) -> None:
    tree = TopicTree()
    for index, topic_filter in enumerate(filters):
        tree.add(None, topic_filter, f"client-{index}", Subscription(qos=1))
    direct, _ = tree.match(topic, None)
    expected = {f"client-{i}" for i, f in enumerate(filters) if filter_matches(f, topic)}
    assert set(direct) == expected
    for index, topic_filter in enumerate(filters):
        assert tree.remove(None, topic_filter, f"client-{index}")
    assert tree.match(topic, None) == ({}, [])


def test_filter_matching_edge_cases() -> None:
    assert filter_matches("a/#", "a")
    assert filter_matches("#", "a/b/c")
    assert not filter_matches("#", "$SYS/x")
    assert not filter_matches("+/x", "$SYS/x")
    assert filter_matches("$SYS/#", "$SYS/x")
    assert filter_matches("+/+", "/x")
    assert not filter_matches("a/+", "a/b/c")


def test_only_loopback_addresses_are_accepted() -> None:
    require_loopback("127.0.0.1")
    require_loopback("::1")
    require_loopback("localhost")
    for host in ("0.0.0.0", "10.0.0.5", "broker.school.vn"):
        with pytest.raises(ValueError, match="loopback"):
            require_loopback(host)


def test_shared_group_counter_is_even() -> None:
    """Round robin, not random: 3 members, 9 messages, 3 each."""
    tree = TopicTree()
    for n in range(3):
        tree.add("g", "x/#", f"m{n}", Subscription(qos=1))
    _, [group] = tree.match("x/1", None)
    picks = Counter(group.pick(lambda client_id: True)[0] for _ in range(9))  # type: ignore[index]
    assert picks == {"m0": 3, "m1": 3, "m2": 3}
