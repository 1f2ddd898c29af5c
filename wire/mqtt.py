"""Every MQTT detail lives here: the only module in CampusWatch that imports paho-mqtt.

Agents, simulated devices and the collector all connect through ``MqttConnection``:
MQTT v5, the Last Will registered before connecting, TLS and passwords, reconnect with
exponential back-off (paho's ``reconnect_delay_set``), and optional manual acknowledgement
so a receiver can confirm a QoS 1 message only after storing it.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import ssl
import sys
import threading
from collections.abc import Callable
from typing import Any
from urllib.parse import unquote, urlsplit

import msgspec
import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

log = logging.getLogger(__name__)


class BrokerUrlError(ValueError):
    pass


class BrokerAddress(msgspec.Struct, frozen=True):
    host: str
    port: int
    tls: bool
    username: str | None = None
    password: str | None = None

    def __str__(self) -> str:
        return f"{'mqtts' if self.tls else 'mqtt'}://{self.host}:{self.port}"


def parse_broker_url(url: str) -> BrokerAddress:
    """``mqtt://[user:pass@]host[:1883]`` or ``mqtts://host[:8883]``."""
    parts = urlsplit(url)
    if parts.scheme not in ("mqtt", "mqtts", "tcp", "ssl"):
        raise BrokerUrlError(f"broker URL {url!r} must start with mqtt:// or mqtts://")
    tls = parts.scheme in ("mqtts", "ssl")
    if not parts.hostname:
        raise BrokerUrlError(f"broker URL {url!r} has no host")
    try:
        port = parts.port or (8883 if tls else 1883)
    except ValueError:
        raise BrokerUrlError(f"broker URL {url!r} has an invalid port") from None
    return BrokerAddress(
        parts.hostname,
        port,
        tls,
        unquote(parts.username) if parts.username else None,
        unquote(parts.password) if parts.password else None,
    )


class TlsOptions(msgspec.Struct, frozen=True):
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    insecure: bool = False
    """Skip host-name checks (lab set-ups with IP-addressed brokers); never the default."""


class LastWill(msgspec.Struct, frozen=True):
    topic: str
    payload: bytes
    qos: int = 1
    retain: bool = True


WillSource = LastWill | Callable[[], LastWill]
"""A will, or a function making a fresh one for every connection attempt. Use the function
form when the payload carries a message id: the collector drops a repeated id, so a device
whose every will carries the same id would be seen going offline only once in its life."""


def resolve_will(source: WillSource | None) -> LastWill | None:
    return source() if callable(source) else source


def describe_connect_failure(error: BaseException | None) -> str:
    """Why a connection attempt failed, in words an IT person acts on."""
    if isinstance(error, ConnectionRefusedError):
        return "connection refused"
    if isinstance(error, socket.gaierror):
        return f"unknown host: {error.strerror or error}"
    if isinstance(error, ssl.SSLCertVerificationError):
        return f"TLS certificate not accepted: {error.verify_message or error.reason}"
    if isinstance(error, ssl.SSLError):
        return f"TLS failure: {error.reason or error}"
    if isinstance(error, TimeoutError | socket.timeout):
        return "timed out"
    if isinstance(error, OSError):
        return f"network error: {error.strerror or error}"
    return "connection failed" if error is None else f"connection failed: {error}"


class BrokerStateLog:
    """Says a broker's state once per change, not on every retry of the back-off.

    Shared by ``MqttConnection`` (agent, collector) and ``MqttPool`` (the simulator's
    thousands of connections to one broker), so all three say it in the same words: which
    broker, and why it cannot be used; and that it is connected again.
    """

    def __init__(self, broker: BrokerAddress) -> None:
        self.broker = broker
        self.problem: str | None = None
        """Why the broker cannot be used right now (None while connected or not yet tried)."""
        self._said: str | None = None
        self._ever_connected = False

    def failing(self, state: str) -> None:
        """A connection attempt failed: ``state`` is e.g. "unreachable (connection refused)"."""
        self.problem = state
        if state == self._said:
            log.debug("MQTT %s still %s", self.broker, state)
            return
        self._said = state
        log.warning(
            "MQTT broker %s %s; retrying with back-off, messages wait meanwhile",
            self.broker,
            state,
        )

    def lost(self, reason: str) -> None:
        """A connection that was up went down without being asked to."""
        if self._said is not None:
            return  # already said to be down; losing one more connection changes nothing
        state = f"disconnected: {reason}"
        self.problem = state
        self._said = state
        log.warning("MQTT connection to %s lost (%s); reconnecting", self.broker, reason)

    def connected(self, who: str, *, every_time: bool = True) -> None:
        """A connection is up; with ``every_time`` False only the first one and the first
        after a problem are said (a pool of many connections to one broker)."""
        changed = self._said is not None or not self._ever_connected
        self.problem = None
        self._said = None
        self._ever_connected = True
        if every_time or changed:
            log.info("MQTT connected to %s as %s", self.broker, who)


class ReceivedMessage(msgspec.Struct, frozen=True):
    topic: str
    payload: bytes
    qos: int
    retain: bool
    mid: int


MessageHandler = Callable[[ReceivedMessage], None]


class MqttConnection:
    """One client connection that keeps itself connected until ``stop``."""

    def __init__(
        self,
        client_id: str,
        broker: BrokerAddress,
        *,
        username: str | None = None,
        password: str | None = None,
        tls: TlsOptions | None = None,
        keepalive_s: int = 60,
        will: WillSource | None = None,
        reconnect_min_s: float = 1.0,
        reconnect_max_s: float = 120.0,
        manual_ack: bool = False,
        clean_start: bool = True,
        session_expiry_s: int = 0,
        max_inflight: int = 20,
        receive_maximum: int | None = None,
        on_connect: Callable[[bool], None] | None = None,
        on_disconnect: Callable[[str], None] | None = None,
        on_message: MessageHandler | None = None,
        on_published: Callable[[int], None] | None = None,
    ) -> None:
        self.broker = broker
        self.client_id = client_id
        self._keepalive_s = keepalive_s
        self._clean_start = clean_start
        self._session_expiry_s = session_expiry_s
        if receive_maximum is not None and not 1 <= receive_maximum <= 65_535:
            raise ValueError(f"receive_maximum must be 1..65535, not {receive_maximum}")
        self.receive_maximum = receive_maximum
        """Most QoS 1/2 messages the broker may send before we acknowledge (MQTT 5 Receive
        Maximum; None: the protocol's 65,535). A subscriber that acknowledges only what it
        has stored sets it to what it can hold, so paho's thread need not block handing over
        (Mosquitto 2.0.11 keeps to it for the first window only: eclipse-mosquitto#2301)."""
        self._on_connect_cb = on_connect
        self._on_disconnect_cb = on_disconnect
        self._on_message_cb = on_message
        self._on_published_cb = on_published
        self._subscriptions: list[tuple[str, int]] = []
        self._connected = threading.Event()
        self._stopping = False
        self._state = BrokerStateLog(broker)
        self.failed_attempts = 0
        """Connection attempts that failed since this connection was made."""

        client = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=paho.MQTTv5,
            manual_ack=manual_ack,
        )
        user = username if username is not None else broker.username
        secret = password if password is not None else broker.password
        if user is not None:
            client.username_pw_set(user, secret)
        if broker.tls or (tls and (tls.ca_file or tls.cert_file)):
            tls = tls or TlsOptions()
            client.tls_set(
                ca_certs=tls.ca_file,
                certfile=tls.cert_file,
                keyfile=tls.key_file,
                cert_reqs=ssl.CERT_REQUIRED,
                tls_version=ssl.PROTOCOL_TLS_CLIENT,
            )
            client.tls_insecure_set(tls.insecure)
        self._client = client
        self._will_source = will
        # Registered before connect: the broker publishes it if we vanish (SIGKILL, cable).
        self._set_will()
        client.reconnect_delay_set(
            min_delay=max(1, int(reconnect_min_s)), max_delay=int(reconnect_max_s)
        )
        client.max_inflight_messages_set(max_inflight)
        client.on_connect = self._handle_connect
        client.on_disconnect = self._handle_disconnect
        client.on_connect_fail = self._handle_connect_fail
        client.on_message = self._handle_message
        client.on_publish = self._handle_publish

    # --- lifecycle ---------------------------------------------------------------------

    def start(self) -> None:
        """Connect in the background; failures are retried with back-off, never raised."""
        properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        if self._session_expiry_s:
            properties.SessionExpiryInterval = self._session_expiry_s
        if self.receive_maximum is not None:
            properties.ReceiveMaximum = self.receive_maximum
        self._client.connect_async(
            self.broker.host,
            self.broker.port,
            keepalive=self._keepalive_s,
            clean_start=self._clean_start,
            properties=properties,
        )
        self._client.loop_start()

    def stop(
        self, *, publish_before: tuple[str, bytes] | None = None, timeout_s: float = 5
    ) -> None:
        """Disconnect cleanly (no Last Will); optionally publish a final retained message."""
        self._stopping = True
        if publish_before is not None and self.connected:
            info = self._client.publish(publish_before[0], publish_before[1], qos=1, retain=True)
            with contextlib.suppress(RuntimeError, ValueError):
                info.wait_for_publish(timeout_s)
        self._client.disconnect()
        self._client.loop_stop()

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    @property
    def last_error(self) -> str | None:
        """Why the broker cannot be used right now (None while connected or not yet tried)."""
        return self._state.problem

    def wait_connected(self, timeout_s: float) -> bool:
        return self._connected.wait(timeout_s)

    # --- traffic -----------------------------------------------------------------------

    def publish(
        self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False
    ) -> int | None:
        """Hand a message to paho; return its mid, or None when not connected."""
        if not self.connected:
            return None
        info = self._client.publish(topic, payload, qos=qos, retain=retain)
        if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            return None
        return int(info.mid)

    def subscribe(self, topic_filter: str, qos: int = 1) -> None:
        """Subscribe now and again after every reconnect."""
        self._subscriptions.append((topic_filter, qos))
        if self.connected:
            self._client.subscribe(topic_filter, qos)

    def ack(self, message: ReceivedMessage) -> None:
        """Confirm a message received with ``manual_ack`` (after it is safely stored)."""
        self._client.ack(message.mid, message.qos)

    # --- paho callbacks (run on paho's network thread) ---------------------------------

    def _handle_connect(
        self,
        client: paho.Client,
        userdata: Any,
        flags: paho.ConnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        if reason_code.is_failure:
            self.failed_attempts += 1
            self._state.failing(f"refused the connection of {self.client_id} ({reason_code})")
            return
        if callable(self._will_source):
            # The CONNECT just sent carried the current will; the next connection gets a new
            # one (paho reconnects by several paths, this is the one every success passes).
            self._set_will()
        for topic_filter, qos in self._subscriptions:
            client.subscribe(topic_filter, qos)
        self._connected.set()
        self._state.connected(self.client_id)
        if self._on_connect_cb is not None:
            self._on_connect_cb(bool(flags.session_present))

    def _set_will(self) -> None:
        will = resolve_will(self._will_source)
        if will is not None:
            self._client.will_set(will.topic, will.payload, qos=will.qos, retain=will.retain)

    def _handle_disconnect(
        self,
        client: paho.Client,
        userdata: Any,
        flags: paho.DisconnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        was_connected = self.connected
        self._connected.clear()
        reason = str(reason_code)
        if not self._stopping and was_connected:
            # A refused or failed attempt also ends here; its own reason was said already.
            self._state.lost(reason)
        if self._on_disconnect_cb is not None:
            self._on_disconnect_cb(reason)

    def _handle_connect_fail(self, client: paho.Client, userdata: Any) -> None:
        # paho calls this from inside its ``except OSError`` around the connect, and passes
        # no exception: the one being handled is the reason.
        self.failed_attempts += 1
        if not self._stopping:
            self._state.failing(f"unreachable ({describe_connect_failure(sys.exc_info()[1])})")

    def _handle_message(
        self, client: paho.Client, userdata: Any, message: paho.MQTTMessage
    ) -> None:
        if self._on_message_cb is None:
            return
        received = ReceivedMessage(
            message.topic, bytes(message.payload), message.qos, bool(message.retain), message.mid
        )
        try:
            self._on_message_cb(received)
        except Exception:  # a handler bug must not kill paho's network thread
            log.exception("MQTT message handler failed for %s", message.topic[:200])

    def _handle_publish(
        self,
        client: paho.Client,
        userdata: Any,
        mid: int,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        if self._on_published_cb is not None:
            self._on_published_cb(mid)
