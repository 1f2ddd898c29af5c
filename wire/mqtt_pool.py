"""Many MQTT client connections driven by one thread: the simulator's transport at scale.

``MqttConnection`` (wire/mqtt.py) gives every connection its own paho network thread, which
is right for one agent and wrong for 10,000 simulated devices (10,000 threads, each with a
stack and a wake-up every second). Here one selector (epoll) loop drives every paho client
through paho's external-loop API (``loop_read``/``loop_write``/``loop_misc`` and the
``on_socket_*`` callbacks), so a client costs a socket and one paho object, not a thread.

Everything a caller does to a pooled client must happen on the pool's thread: inside the
``tick`` callback of ``run``, inside a client callback, or through ``call_soon``. paho is not
written for several threads poking one client without its own loop thread.
"""

from __future__ import annotations

import collections
import contextlib
import heapq
import itertools
import logging
import resource
import selectors
import socket
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from campuswatch.wire.mqtt import (
    BrokerAddress,
    BrokerStateLog,
    ReceivedMessage,
    TlsOptions,
    WillSource,
    describe_connect_failure,
    resolve_will,
)

log = logging.getLogger(__name__)

# paho answers keep-alive pings and retries from loop_misc; once a second is what paho's own
# loop does, and a 60 s keep-alive leaves plenty of margin.
MISC_INTERVAL_S = 1.0


@dataclass(slots=True)
class PoolStats:
    connected: int = 0
    connects_total: int = 0
    connect_failures_total: int = 0
    disconnects_total: int = 0
    published_total: int = 0
    acked_total: int = 0
    publish_refused_total: int = 0
    received_total: int = 0
    callback_errors_total: int = 0


def raise_open_file_limit(wanted: int) -> int:
    """Raise this process's soft RLIMIT_NOFILE towards ``wanted`` (one fd per client).

    Returns the limit now in force. The hard limit is raised too when running as root.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= wanted:
        return soft
    target_hard = hard
    if hard != resource.RLIM_INFINITY and hard < wanted:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, wanted))
            return wanted
        except (ValueError, OSError):
            target_hard = hard
    new_soft = wanted if target_hard == resource.RLIM_INFINITY else min(wanted, target_hard)
    resource.setrlimit(resource.RLIMIT_NOFILE, (new_soft, target_hard))
    return new_soft


class PooledClient:
    """One MQTT connection in a pool. Create it with ``MqttPool.add``."""

    __slots__ = (
        "_backoff_s",
        "_held_down",
        "_max_inflight",
        "_pool",
        "_renew_pending",
        "_subscriptions",
        "_will",
        "_will_used",
        "client_id",
        "connected",
        "on_connect",
        "on_disconnect",
        "on_message",
        "paho",
    )

    def __init__(
        self,
        pool: MqttPool,
        client_id: str,
        paho_client: paho.Client,
        will: WillSource | None,
        max_inflight: int,
        on_connect: Callable[[PooledClient], None] | None,
        on_message: Callable[[PooledClient, ReceivedMessage], None] | None,
        on_disconnect: Callable[[PooledClient, str], None] | None,
    ) -> None:
        self._pool = pool
        self.client_id = client_id
        self.paho = paho_client
        self._will = will
        self._max_inflight = max_inflight
        self.on_connect = on_connect
        self.on_message = on_message
        self.on_disconnect = on_disconnect
        self.connected = False
        self._held_down = False
        self._renew_pending = False
        self._will_used = False
        """The will set on ``paho`` went out in a CONNECT: the broker may hold it or have
        fired it, so the next attempt needs a new one (a new message id)."""
        self._backoff_s = pool.reconnect_min_s
        self._subscriptions: list[tuple[str, int]] = []

    def publish(self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False) -> bool:
        """Queue a message; False (and counted) when not connected."""
        if not self.connected:
            self._pool.stats.publish_refused_total += 1
            return False
        info = self.paho.publish(topic, payload, qos=qos, retain=retain)
        if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            self._pool.stats.publish_refused_total += 1
            return False
        self._pool.stats.published_total += 1
        return True

    def subscribe(self, topic_filter: str, qos: int = 1) -> None:
        """Subscribe now (if connected) and again after every reconnect."""
        self._subscriptions.append((topic_filter, qos))
        if self.connected:
            self.paho.subscribe(topic_filter, qos)

    def close(self, *, final: tuple[str, bytes] | None = None) -> None:
        """Leave cleanly with DISCONNECT, so the broker does not fire the Last Will."""
        self._held_down = True
        self._pool._failing.discard(self)
        if self.connected:
            if final is not None:
                self.paho.publish(final[0], final[1], qos=1, retain=True)
            self.paho.disconnect()

    def drop(self) -> None:
        """Vanish as a cut cable or power loss would: the TCP connection closes without
        DISCONNECT, so the broker publishes the Last Will. Stays down until ``resume``."""
        # A retry already queued is skipped by the loop while the client is held down.
        self._held_down = True
        self._pool._failing.discard(self)
        # Down before the FIN leaves: the broker fires the will as soon as it reads it, and
        # another thread that saw the will must not still read this client (or the pool's
        # count) as connected; a caller waiting for "connected" would drop it again.
        if self.connected:
            self.connected = False
            self._pool.stats.connected -= 1
            self._pool.stats.disconnects_total += 1
        sock = self.paho.socket()
        if sock is None:
            return
        if self.paho.want_write():
            self.paho.loop_write()  # a dying gasp queued just before still leaves
        # Half-close: FIN after everything written, no DISCONNECT, so the broker reads it
        # all and then fires the will. A full close here would answer the broker's pending
        # PUBACKs with a TCP reset, and a reset makes the broker discard what it had not
        # yet read. paho finishes the close when it reads the broker's EOF.
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_WR)  # type: ignore[attr-defined]

    def resume(self) -> None:
        """Connect again after ``drop`` or ``close``, as a device that restarted: with a
        fresh paho client, so nothing from before (an unacknowledged goodbye) is resent
        after the new "online"."""
        if not self._held_down:
            return
        self._held_down = False
        self._backoff_s = self._pool.reconnect_min_s
        if self.connected or self.paho.socket() is not None:
            self._renew_pending = True  # still closing; the disconnect callback reconnects
            return
        self._pool._renew(self)
        self._pool._schedule_connect(self, 0.0)

    @property
    def held_down(self) -> bool:
        return self._held_down


class MqttPool:
    """A selector loop over many paho clients; ``run`` blocks, ``start`` runs it in a thread."""

    def __init__(
        self,
        broker: BrokerAddress,
        *,
        keepalive_s: int = 60,
        connects_per_tick: int = 200,
        reconnect_min_s: float = 1.0,
        reconnect_max_s: float = 60.0,
        max_inflight: int = 20,
        tls: TlsOptions | None = None,
    ) -> None:
        self.broker = broker
        self._tls_context = _tls_context(tls or TlsOptions()) if broker.tls else None
        self._state = BrokerStateLog(broker)
        self._failing: set[PooledClient] = set()
        """Clients whose last attempt failed: the broker is said to be back once none is left,
        so a broker that takes some connections and refuses others is not said on every one."""
        self.keepalive_s = keepalive_s
        self.reconnect_min_s = reconnect_min_s
        self.reconnect_max_s = reconnect_max_s
        self.max_inflight = max_inflight
        self.stats = PoolStats()
        self._connects_per_tick = connects_per_tick
        self._selector = selectors.DefaultSelector()
        self._by_paho: dict[int, PooledClient] = {}
        self._write_pending: set[PooledClient] = set()
        self._write_registered: set[PooledClient] = set()
        self._connect_queue: collections.deque[PooledClient] = collections.deque()
        self._delayed: list[tuple[float, int, PooledClient]] = []
        self._sequence = itertools.count()
        self._calls: collections.deque[Callable[[], None]] = collections.deque()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._clients: list[PooledClient] = []
        self._wakeup_r, self._wakeup_w = socket.socketpair()
        self._wakeup_r.setblocking(False)
        self._wakeup_w.setblocking(False)
        self._selector.register(self._wakeup_r, selectors.EVENT_READ, None)

    # --- clients -----------------------------------------------------------------------

    def add(
        self,
        client_id: str,
        *,
        will: WillSource | None = None,
        username: str | None = None,
        on_connect: Callable[[PooledClient], None] | None = None,
        on_message: Callable[[PooledClient, ReceivedMessage], None] | None = None,
        on_disconnect: Callable[[PooledClient, str], None] | None = None,
        connect: bool = True,
        max_inflight: int | None = None,
    ) -> PooledClient:
        """Create a client; it connects from the loop, a few hundred per tick."""
        if username is not None and username != self.broker.username:
            raise ValueError("pooled clients share the broker URL's credentials")
        inflight = max_inflight or self.max_inflight
        client = self._new_paho(client_id, will, inflight)
        pooled = PooledClient(
            self, client_id, client, will, inflight, on_connect, on_message, on_disconnect
        )
        self._by_paho[id(client)] = pooled
        self._clients.append(pooled)
        if connect:
            self._connect_queue.append(pooled)
        else:
            pooled._held_down = True
        return pooled

    def _new_paho(self, client_id: str, will: WillSource | None, max_inflight: int) -> paho.Client:
        client = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=paho.MQTTv5)
        if self.broker.username is not None:
            client.username_pw_set(self.broker.username, self.broker.password)
        if self._tls_context is not None:
            # One context for every client: the CA file is read once, not once per device.
            client.tls_set_context(self._tls_context)
        _set_will(client, will)
        client.max_inflight_messages_set(max_inflight)
        # paho's default queue is unbounded; a broker that stops acknowledging must not grow
        # 10,000 queues without limit. A connection carrying a school (big window) gets more.
        client.max_queued_messages_set(max(1000, max_inflight * 100))
        client.on_connect = self._handle_connect
        client.on_disconnect = self._handle_disconnect
        client.on_message = self._handle_message
        client.on_publish = self._handle_publish
        client.on_socket_open = self._handle_socket_open
        client.on_socket_close = self._handle_socket_close
        client.on_socket_register_write = self._handle_register_write
        client.on_socket_unregister_write = self._handle_unregister_write
        return client

    def _renew_and_connect(self, pooled: PooledClient) -> None:
        if pooled._held_down or pooled.connected:
            return
        self._renew(pooled)
        self._schedule_connect(pooled, 0.0)

    def _renew(self, pooled: PooledClient) -> None:
        del self._by_paho[id(pooled.paho)]
        pooled.paho = self._new_paho(pooled.client_id, pooled._will, pooled._max_inflight)
        pooled._will_used = False
        self._by_paho[id(pooled.paho)] = pooled

    @property
    def clients(self) -> list[PooledClient]:
        return self._clients

    # --- running -----------------------------------------------------------------------

    def call_soon(self, function: Callable[[], None]) -> None:
        """Run ``function`` on the pool's thread (safe from any thread)."""
        self._calls.append(function)
        self._wake()

    def start(self, tick: Callable[[], float | None] | None = None) -> None:
        self._thread = threading.Thread(
            target=self.run, args=(tick,), name="mqtt-pool", daemon=True
        )
        self._thread.start()

    def stop(self, timeout_s: float = 10.0) -> None:
        self._stop.set()
        self._wake()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout_s)

    def run(self, tick: Callable[[], float | None] | None = None) -> None:
        """Serve sockets until ``stop``; ``tick`` runs between rounds and returns how long
        (seconds) it may sleep before it wants to run again."""
        next_misc = time.monotonic()
        try:
            while not self._stop.is_set():
                self._connect_some()
                wait_s = 0.2
                if tick is not None:
                    wanted = tick()
                    if wanted is not None:
                        wait_s = min(wait_s, max(0.0, wanted))
                self._run_calls()
                self._flush_writes()
                now = time.monotonic()
                if self._delayed:
                    wait_s = min(wait_s, max(0.0, self._delayed[0][0] - now))
                if self._connect_queue or self._write_pending:
                    wait_s = 0.0
                for key, events in self._selector.select(wait_s):
                    pooled = key.data
                    if pooled is None:
                        self._drain_wakeup()
                        continue
                    if events & selectors.EVENT_READ:
                        pooled.paho.loop_read()
                        self._read_tls_buffer(pooled)
                    if events & selectors.EVENT_WRITE and pooled.paho.socket() is not None:
                        pooled.paho.loop_write()
                self._release_delayed(time.monotonic())
                if time.monotonic() >= next_misc:
                    next_misc = time.monotonic() + MISC_INTERVAL_S
                    for pooled in self._clients:
                        if pooled.paho.socket() is not None:
                            pooled.paho.loop_misc()
        finally:
            self._shutdown_sockets()

    def _shutdown_sockets(self) -> None:
        for pooled in self._clients:
            sock = pooled.paho.socket()
            if sock is not None:
                with contextlib.suppress(KeyError, ValueError):
                    self._selector.unregister(sock)
                sock.close()
        self._selector.close()
        self._wakeup_r.close()
        self._wakeup_w.close()

    def _wake(self) -> None:
        with contextlib.suppress(BlockingIOError, OSError):
            self._wakeup_w.send(b"\0")

    def _drain_wakeup(self) -> None:
        try:
            while self._wakeup_r.recv(4096):
                pass
        except (BlockingIOError, OSError):
            pass

    def _run_calls(self) -> None:
        while self._calls:
            function = self._calls.popleft()
            try:
                function()
            except Exception:
                self.stats.callback_errors_total += 1
                log.exception("pool call failed")

    def _flush_writes(self) -> None:
        # publish() only marks a client as having data; writing here batches every message a
        # tick produced into one send per socket, and the selector is only involved when the
        # socket buffer is full.
        pending = self._write_pending
        self._write_pending = set()
        for pooled in pending:
            if pooled.paho.socket() is None:
                continue
            pooled.paho.loop_write()
            if pooled.paho.want_write():
                self._watch_writable(pooled, True)
        # Sockets with a full buffer are now the selector's business.
        self._write_pending -= self._write_registered

    def _watch_writable(self, pooled: PooledClient, writable: bool) -> None:
        sock = pooled.paho.socket()
        if sock is None:
            self._write_registered.discard(pooled)
            return
        if writable == (pooled in self._write_registered):
            return
        events = selectors.EVENT_READ | (selectors.EVENT_WRITE if writable else 0)
        try:
            self._selector.modify(sock, events, pooled)
        except (KeyError, ValueError):
            return
        if writable:
            self._write_registered.add(pooled)
        else:
            self._write_registered.discard(pooled)

    def _connect_some(self) -> None:
        for _ in range(min(self._connects_per_tick, len(self._connect_queue))):
            pooled = self._connect_queue.popleft()
            if pooled._held_down or pooled.connected or pooled.paho.socket() is not None:
                continue
            self._connect(pooled)

    def _connect(self, pooled: PooledClient) -> None:
        if pooled._will_used:
            # Every way back (paho's reconnect after a lost connection too, not only resume)
            # carries a fresh will: the collector drops a repeated message id, so a will sent
            # again would report the device offline once in its life. The same paho client
            # keeps what it still has in flight.
            _set_will(pooled.paho, pooled._will)
            pooled._will_used = False
        properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        try:
            rc = pooled.paho.connect(
                self.broker.host,
                self.broker.port,
                keepalive=self.keepalive_s,
                clean_start=True,
                properties=properties,
            )
        except (OSError, ssl.CertificateError) as exc:
            self._connect_failed(pooled, f"unreachable ({describe_connect_failure(exc)})")
            return
        if rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            self._connect_failed(pooled, f"unreachable ({rc})")

    def _read_tls_buffer(self, pooled: PooledClient) -> None:
        # TLS decrypts whole records: bytes already in the SSL object's buffer never wake
        # the selector, so read them now (paho's own loop does the same with ``pending``).
        sock = pooled.paho.socket()
        while isinstance(sock, ssl.SSLSocket) and sock.pending():
            pooled.paho.loop_read()
            sock = pooled.paho.socket()

    def _connect_failed(self, pooled: PooledClient, state: str) -> None:
        self.stats.connect_failures_total += 1
        self._failing.add(pooled)
        self._state.failing(state)
        self._schedule_connect(pooled, pooled._backoff_s)
        pooled._backoff_s = min(self.reconnect_max_s, pooled._backoff_s * 2)

    def _schedule_connect(self, pooled: PooledClient, delay_s: float) -> None:
        if delay_s <= 0:
            self._connect_queue.append(pooled)
            self._wake()
            return
        heapq.heappush(self._delayed, (time.monotonic() + delay_s, next(self._sequence), pooled))

    def _release_delayed(self, now: float) -> None:
        while self._delayed and self._delayed[0][0] <= now:
            _, _, pooled = heapq.heappop(self._delayed)
            self._connect_queue.append(pooled)

    # --- paho callbacks (pool thread) --------------------------------------------------

    def _pooled(self, client: paho.Client) -> PooledClient:
        return self._by_paho[id(client)]

    def _handle_socket_open(self, client: paho.Client, userdata: Any, sock: Any) -> None:
        pooled = self._pooled(client)
        pooled._will_used = True  # the CONNECT with the will follows on this socket
        self._selector.register(sock, selectors.EVENT_READ, pooled)

    def _handle_socket_close(self, client: paho.Client, userdata: Any, sock: Any) -> None:
        pooled = self._pooled(client)
        self._write_registered.discard(pooled)
        self._write_pending.discard(pooled)
        with contextlib.suppress(KeyError, ValueError):
            self._selector.unregister(sock)

    def _handle_register_write(self, client: paho.Client, userdata: Any, sock: Any) -> None:
        self._write_pending.add(self._pooled(client))

    def _handle_unregister_write(self, client: paho.Client, userdata: Any, sock: Any) -> None:
        self._watch_writable(self._pooled(client), False)

    def _handle_connect(
        self,
        client: paho.Client,
        userdata: Any,
        flags: paho.ConnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        pooled = self._pooled(client)
        if reason_code.is_failure:
            self.stats.connect_failures_total += 1
            self._failing.add(pooled)
            self._state.failing(f"refused the connection ({reason_code})")
            return
        self._failing.discard(pooled)
        if not self._failing:
            self._state.connected(pooled.client_id, every_time=False)
        pooled.connected = True
        pooled._backoff_s = self.reconnect_min_s
        self.stats.connected += 1
        self.stats.connects_total += 1
        for topic_filter, qos in pooled._subscriptions:
            client.subscribe(topic_filter, qos)
        if pooled.on_connect is not None:
            self._guard(pooled.on_connect, pooled)

    def _handle_disconnect(
        self,
        client: paho.Client,
        userdata: Any,
        flags: paho.DisconnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        pooled = self._pooled(client)
        if pooled.connected:
            self.stats.connected -= 1
            self.stats.disconnects_total += 1
            if not pooled._held_down and not self._stop.is_set():
                self._state.lost(str(reason_code))
        pooled.connected = False
        if pooled._renew_pending:
            # Resumed while its goodbye was still going out (a quick reboot): start clean
            # once paho has finished with the old socket.
            pooled._renew_pending = False
            self.call_soon(lambda: self._renew_and_connect(pooled))
        elif not pooled._held_down:
            self._schedule_connect(pooled, pooled._backoff_s)
            pooled._backoff_s = min(self.reconnect_max_s, pooled._backoff_s * 2)
        if pooled.on_disconnect is not None:
            self._guard(pooled.on_disconnect, pooled, str(reason_code))

    def _handle_message(
        self, client: paho.Client, userdata: Any, message: paho.MQTTMessage
    ) -> None:
        pooled = self._pooled(client)
        self.stats.received_total += 1
        if pooled.on_message is None:
            return
        received = ReceivedMessage(
            message.topic, bytes(message.payload), message.qos, bool(message.retain), message.mid
        )
        self._guard(pooled.on_message, pooled, received)

    def _handle_publish(
        self,
        client: paho.Client,
        userdata: Any,
        mid: int,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        self.stats.acked_total += 1

    def _guard(self, function: Callable[..., None], *args: Any) -> None:
        try:
            function(*args)
        except Exception:  # a simulator bug must not stop every other connection
            self.stats.callback_errors_total += 1
            log.exception("MQTT pool callback failed")


def _tls_context(tls: TlsOptions) -> ssl.SSLContext:
    """The same checks ``MqttConnection`` makes: the system's CAs unless one is given, the
    broker's name checked unless ``insecure``."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=tls.ca_file)
    if tls.cert_file:
        context.load_cert_chain(tls.cert_file, tls.key_file)
    if tls.insecure:
        context.check_hostname = False
    return context


def _set_will(client: paho.Client, will: WillSource | None) -> None:
    """Set on every new paho client, and again before each attempt after one that sent it."""
    resolved = resolve_will(will)
    if resolved is not None:
        client.will_set(resolved.topic, resolved.payload, qos=resolved.qos, retain=resolved.retain)
