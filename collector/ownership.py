"""Per-device ownership across collectors: each partition of schools is run by one collector.

A shared subscription (``$share/…``) hands each message to any collector of the group, so a
device's consecutive messages land on different collectors and a rule that counts or times
several of them (five failed logins in ten minutes, CPU above 90 % for five minutes) sees
only part of them on each and may never fire. Here the group's sites are cut into named
partitions (``[ownership]`` in the collector's config, identical on every collector), and
each partition has:

- a **PostgreSQL session-level advisory lock** (``pg_try_advisory_lock(group, partition)``,
  keys from a stable hash) on a connection of its own: the collector holding it runs the
  partition. A collector that dies loses its database session and with it the lock; a
  standby polling ``pg_try_advisory_lock`` every ``poll_interval_s`` takes it.
- a **persistent MQTT session** with a fixed client id (``cw-own-GROUP-PARTITION``,
  ``clean_start`` false, QoS 1) subscribed to the partition's sites only. While no collector
  runs the partition the broker queues its messages in that session; the next owner resumes
  the session and gets them, and what the dead owner had received but not acknowledged
  (not stored) is sent again. Mosquitto gives a client id to the newest connection and
  disconnects the older one: a collector whose partition connection drops checks its lock
  connection at once, and stops every partition if that is gone (a former owner cut off
  from PostgreSQL), while the lock's holder reconnects and takes its session back.

Taking a partition warms the rules engine for its sites from the register first (open
alerts come back as firing, so a condition that still holds is not alerted twice; ``for:``
timers restart from the stored latest messages), then resumes the session. Letting one go
(its preferred collector is back) disconnects the session
cleanly, waits until the messages already received from it are stored and evaluated, then
drops the engine's state of its sites and unlocks. Nothing here is a message bus: the
broker's sessions carry the messages and PostgreSQL decides who owns what.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass
from typing import Any, Final

from prometheus_client.core import GaugeMetricFamily, Metric
from sqlalchemy import Connection, create_engine, text
from sqlalchemy.pool import NullPool

from campuswatch.collector.settings import OwnershipSettings, PartitionSettings
from campuswatch.wire.mqtt import BrokerAddress, MqttConnection, ReceivedMessage
from campuswatch.wire.topics import subscription

log = logging.getLogger(__name__)

RELEASE_WAIT_S: Final = 30.0
"""Longest wait, when letting a partition go, for its received messages to be stored."""
# A dead host (not just a dead process) leaves a half-open database session whose lock
# would stay held until TCP noticed: keep-alives on both ends bound that to ~15 s.
_KEEPALIVES: Final = {
    "keepalives": 1,
    "keepalives_idle": 5,
    "keepalives_interval": 2,
    "keepalives_count": 3,
    "connect_timeout": 5,
    "tcp_user_timeout": 10_000,  # ms: a query on a dead peer fails instead of hanging
}
_SERVER_KEEPALIVES: Final = (
    "SET tcp_keepalives_idle = 5",
    "SET tcp_keepalives_interval = 2",
    "SET tcp_keepalives_count = 3",
    "SET tcp_user_timeout = 10000",
)


def _key31(text_value: str) -> int:
    """A stable 31-bit key (``hash()`` changes per process; PostgreSQL's oid is unsigned)."""
    digest = hashlib.blake2b(text_value.encode(), digest_size=4).digest()
    return int.from_bytes(digest, "big") & 0x7FFF_FFFF


def lock_key(group: str, name: str) -> tuple[int, int]:
    """``(group key, partition key)`` for ``pg_try_advisory_lock(int, int)``: a space apart
    from the alert manager's one-bigint transaction locks."""
    return _key31(f"campuswatch-ownership:{group}"), _key31(name)


def member_key(group: str, collector_id: str) -> tuple[int, int]:
    """The lock a running collector holds to say it is alive (for handing partitions back)."""
    return lock_key(group, f"member:{collector_id}")


def client_id_of(group: str, partition: str) -> str:
    return f"cw-own-{group}-{partition}"


def topic_filters(partition: PartitionSettings) -> list[str]:
    return [subscription(site=site) for site in partition.sites]


class PartitionLocks:
    """Advisory locks on one dedicated PostgreSQL connection (session-level: they last as
    long as the connection, whatever the collector's pooled connections do)."""

    def __init__(self, url: str, group: str) -> None:
        self.group = group
        self._engine = create_engine(url, poolclass=NullPool, connect_args=dict(_KEEPALIVES))
        self._connection: Connection | None = None
        self.last_error: str | None = None

    @property
    def connected(self) -> bool:
        return self._connection is not None

    def ensure(self) -> bool:
        """True when the lock connection works (connecting if needed). False means every
        lock this collector held may be gone: the caller must stop running partitions."""
        if self._connection is not None:
            try:
                self._connection.execute(text("SELECT 1"))
                return True
            except Exception as exc:
                self._lost(exc)
                return False
        try:
            connection = self._engine.connect().execution_options(isolation_level="AUTOCOMMIT")
            for statement in _SERVER_KEEPALIVES:
                connection.execute(text(statement))
        except Exception as exc:
            self._say(f"cannot reach the register for partition locks: {_first_line(exc)}")
            return False
        self._connection = connection
        self.last_error = None
        log.info("ownership: lock connection to the register open")
        return True

    def try_lock(self, key: tuple[int, int]) -> bool:
        return bool(self._scalar("SELECT pg_try_advisory_lock(:a, :b)", key))

    def unlock(self, key: tuple[int, int]) -> None:
        self._scalar("SELECT pg_advisory_unlock(:a, :b)", key)

    def held_by_another(self, key: tuple[int, int]) -> bool:
        """Someone else's session holds ``key`` (a two-int advisory lock in this database)."""
        return bool(
            self._scalar(
                "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' "
                "AND granted AND objsubid = 2 AND classid = :a AND objid = :b "
                "AND pid <> pg_backend_pid() AND database = "
                "(SELECT oid FROM pg_database WHERE datname = current_database()))",
                key,
            )
        )

    def close(self) -> None:
        if self._connection is not None:
            try:
                self._connection.close()  # ends the session: every lock is released
            except Exception:
                log.debug("closing the lock connection failed", exc_info=True)
            self._connection = None
        self._engine.dispose()

    def _scalar(self, sql: str, key: tuple[int, int]) -> Any:
        if self._connection is None:
            return None
        try:
            return self._connection.execute(text(sql), {"a": key[0], "b": key[1]}).scalar()
        except Exception as exc:
            self._lost(exc)
            return None

    def _lost(self, exc: BaseException) -> None:
        self._say(f"lock connection lost: {_first_line(exc)}")
        try:
            assert self._connection is not None
            self._connection.invalidate()
        except Exception:
            log.debug("invalidating the lock connection failed", exc_info=True)
        self._connection = None

    def _say(self, error: str) -> None:
        if error != self.last_error:
            log.error("ownership: %s", error)
        self.last_error = error


ConnectionFactory = Callable[
    [str, Callable[[ReceivedMessage], None], Callable[[str], None]], MqttConnection
]
"""(client id, on_message, on_disconnect) → a persistent-session MQTT connection."""


@dataclass(slots=True)
class _Turn:
    """One stretch of running a partition."""

    partition: PartitionSettings
    key: tuple[int, int]
    number: int
    connection: MqttConnection
    outstanding: int = 0
    """Messages received through this turn and not yet acknowledged (stored)."""


class OwnedConnections(MqttConnection):
    """Ingest's connection when ``[ownership]`` is set.

    Itself a plain connection (``cw-COLLECTOR``, clean session, no subscriptions) for what
    the collector publishes (commands to devices); messages come in through one persistent
    session per partition this collector holds the lock of. Ingest acknowledges through
    here, and each acknowledgement goes back to the session the message came from."""

    def __init__(
        self,
        ownership: OwnershipSettings,
        *,
        collector_id: str,
        register_url: str,
        broker: BrokerAddress,
        partition_connection: ConnectionFactory,
        on_message: Callable[[ReceivedMessage], None],
        on_acquire: Callable[[Collection[str]], None],
        on_release: Callable[[Collection[str]], None],
        **command_connection: Any,
    ) -> None:
        super().__init__(f"cw-{collector_id}", broker, clean_start=True, **command_connection)
        self.ownership = ownership
        self.collector_id = collector_id
        self.locks = PartitionLocks(register_url, ownership.group)
        self._partition_connection = partition_connection
        self._deliver = on_message
        self._on_acquire = on_acquire
        self._on_release = on_release
        self._turns: dict[str, _Turn] = {}
        # id(message) → (partition, turn) it came through, until ingest acknowledges it: the
        # acknowledgement goes back to that session and never to a later one.
        self._origin: dict[int, tuple[str, int]] = {}
        self._turn_numbers = 0
        self._guard = threading.Lock()
        self._wake = threading.Event()
        self._halt = threading.Event()
        self._member = member_key(ownership.group, collector_id)
        self._member_locked = False
        self._started_at = time.monotonic()
        self._preferred_seen: dict[str, float] = {}
        self.takeovers_total = 0
        self.releases_total = 0
        self._thread = threading.Thread(target=self._run, name="ownership", daemon=True)

    # --- MqttConnection, as ingest uses it --------------------------------------------------

    def subscribe(self, topic_filter: str, qos: int = 1) -> None:
        """Ingest's catch-all filter is not subscribed: partitions bring the messages."""

    def start(self) -> None:
        super().start()
        self._started_at = time.monotonic()
        self._thread.start()

    def stop(
        self, *, publish_before: tuple[str, bytes] | None = None, timeout_s: float = 5
    ) -> None:
        self._halt.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout_s + RELEASE_WAIT_S)
        for name in list(self._turns):
            # Sessions stay with the broker (they expire after a week): the next owner, or
            # this collector after a restart, resumes them. Engine state needs no cleanup.
            self._end_turn(name, wait=False, forget=False)
        self.locks.close()
        super().stop(publish_before=publish_before, timeout_s=timeout_s)

    def ack(self, message: ReceivedMessage) -> None:
        with self._guard:
            origin = self._origin.pop(id(message), None)
            if origin is None:
                return
            turn = self._turns.get(origin[0])
            if turn is None or turn.number != origin[1]:
                return  # that session was let go; the broker sends it to the next owner
            turn.outstanding -= 1
        turn.connection.ack(message)

    @property
    def owned(self) -> list[str]:
        return sorted(self._turns)

    # --- the ownership loop -----------------------------------------------------------------

    def _run(self) -> None:
        while not self._halt.is_set():
            try:
                self.poll()
            except Exception:
                log.exception("ownership pass failed; trying again")
            self._wake.wait(self.ownership.poll_interval_s)
            self._wake.clear()

    def poll(self) -> None:
        """One pass: check the locks held, let go what must go, take what is free."""
        if not self.locks.ensure():
            if self._turns:
                log.error(
                    "ownership: lock connection lost; stopping partitions %s (another "
                    "collector may own them now)",
                    ", ".join(self.owned),
                )
            self._member_locked = False
            for name in list(self._turns):
                self._end_turn(name, wait=False, forget=True, unlock=False)
            return
        if not self._member_locked:
            self._member_locked = self.locks.try_lock(self._member)
        for partition in self.ownership.partitions:
            if self._halt.is_set():
                return
            if partition.name in self._turns:
                if self._preferred_is_back(partition):
                    log.info(
                        "ownership: handing partition %s back to %s",
                        partition.name,
                        partition.prefer,
                    )
                    self._end_turn(partition.name, wait=True, forget=True)
                continue
            if not self._may_take(partition):
                continue
            key = lock_key(self.ownership.group, partition.name)
            if self.locks.try_lock(key):
                try:
                    self._begin_turn(partition, key)
                except Exception:
                    # Never sit on a lock with nobody reading the session: let another try.
                    log.exception("ownership: could not start partition %s", partition.name)
                    with self._guard:
                        turn = self._turns.pop(partition.name, None)
                    if turn is not None:
                        turn.connection.stop()
                    self.locks.unlock(key)

    def _may_take(self, partition: PartitionSettings) -> bool:
        prefer = partition.prefer
        if prefer is None or prefer == self.collector_id:
            return True
        # Another collector's partition: only while that collector is away, and not in the
        # first moments after our own start (it may be starting too).
        if time.monotonic() - self._started_at < self.ownership.handback_grace_s:
            return False
        return not self.locks.held_by_another(member_key(self.ownership.group, prefer))

    def _preferred_is_back(self, partition: PartitionSettings) -> bool:
        prefer = partition.prefer
        if prefer is None or prefer == self.collector_id:
            return False
        if not self.locks.held_by_another(member_key(self.ownership.group, prefer)):
            self._preferred_seen.pop(prefer, None)
            return False
        since = self._preferred_seen.setdefault(prefer, time.monotonic())
        return time.monotonic() - since >= self.ownership.handback_grace_s

    def _begin_turn(self, partition: PartitionSettings, key: tuple[int, int]) -> None:
        started = time.monotonic()
        # Warm first: the session's queued messages must meet the restored state.
        self._on_acquire(partition.sites)
        self._turn_numbers += 1
        number = self._turn_numbers
        name = partition.name

        def received(message: ReceivedMessage) -> None:
            with self._guard:
                turn = self._turns.get(name)
                if turn is None or turn.number != number:
                    return  # a late message of a session let go: not acked, sent again
                turn.outstanding += 1
                self._origin[id(message)] = (name, number)
            self._deliver(message)

        def disconnected(reason: str) -> None:
            # Perhaps another connection took the client id (a collector that believes it
            # holds the lock): check our lock now. Held, paho's reconnect takes the session
            # back; lost, the pass stops every partition.
            self._wake.set()

        connection = self._partition_connection(
            client_id_of(self.ownership.group, name), received, disconnected
        )
        for topic_filter in topic_filters(partition):
            connection.subscribe(topic_filter, qos=1)
        with self._guard:
            self._turns[name] = _Turn(partition, key, number, connection)
        connection.start()
        self.takeovers_total += 1
        log.warning(
            "ownership: collector %s runs partition %s (%d sites) now; warmed in %.2f s",
            self.collector_id,
            name,
            len(partition.sites),
            time.monotonic() - started,
        )

    def _end_turn(self, name: str, *, wait: bool, forget: bool, unlock: bool = True) -> None:
        turn = self._turns.get(name)
        if turn is None:
            return
        turn.connection.stop()
        if wait:
            # Received but not yet stored: let ingest finish them (and the rules see them)
            # before the state of these sites is dropped and another collector starts.
            deadline = time.monotonic() + RELEASE_WAIT_S
            while turn.outstanding > 0 and time.monotonic() < deadline:
                time.sleep(0.05)
        with self._guard:
            self._turns.pop(name, None)
            for message_id in [k for k, (of, _) in self._origin.items() if of == name]:
                del self._origin[message_id]
        if forget:
            self._on_release(turn.partition.sites)
        if unlock:
            self.locks.unlock(turn.key)
        self.releases_total += 1
        log.warning("ownership: collector %s let partition %s go", self.collector_id, name)

    # --- observability ----------------------------------------------------------------------

    def metrics(self) -> Iterator[Metric]:
        owned = GaugeMetricFamily(
            "campuswatch_ownership_partitions",
            "Partitions of the ownership group this collector runs (1) or not (0)",
            labels=["partition"],
        )
        for partition in self.ownership.partitions:
            owned.add_metric([partition.name], 1.0 if partition.name in self._turns else 0.0)
        yield owned
        taken = GaugeMetricFamily(
            "campuswatch_ownership_takeovers", "Partitions this collector started running"
        )
        taken.add_metric([], self.takeovers_total)
        yield taken


def _first_line(exc: BaseException) -> str:
    cause = getattr(exc, "orig", None) or exc
    lines = str(cause).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0] if lines else ''}"[:300]
