"""The agent runner: schedules probes, queues their messages on disk, and sends them.

Probes only gather. The runner owns everything hard (Telegraf's split):
- per-probe intervals with jitter, so 500 lab PCs booted at 08:00 do not report in lockstep;
- every message goes through the on-disk store-and-forward queue and leaves it only when the
  broker's PUBACK arrives, so a broker or network outage loses nothing (QoS 1: a message may
  arrive twice after a reconnect, never zero times; the collector is idempotent by id);
- a leaky bucket drains a backlog at a bounded rate so a school's reconnect cannot flood;
- retained ``hello`` and ``state online`` on every connect, Last Will ``state offline``;
- commands on ``cmd``: refresh inventory, run probes now.
"""

from __future__ import annotations

import logging
import os
import platform
import random
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import msgspec

from campuswatch import __version__
from campuswatch.agent.identity import Identity
from campuswatch.agent.memory import return_free_memory
from campuswatch.agent.probes import Probe, ProbeContext
from campuswatch.agent.settings import AgentSettings
from campuswatch.agent.store_forward import StoreAndForwardQueue
from campuswatch.wire.codec import WireRejection, decode_message, encode_message
from campuswatch.wire.messages import (
    CommandMessage,
    EventMessage,
    HelloMessage,
    InventoryMessage,
    Message,
    StateMessage,
    kind_of,
)
from campuswatch.wire.mqtt import (
    LastWill,
    MqttConnection,
    ReceivedMessage,
    TlsOptions,
    parse_broker_url,
)
from campuswatch.wire.topics import build_topic

log = logging.getLogger(__name__)
QUEUE_FILE = "outbox.sqlite"
ACK_TIMEOUT_S = 30.0
PROBES_AT_ONCE = 2
"""Probes collected at the same time, at most (each on a thread that ends with its run)."""


class _Schedule(msgspec.Struct):
    probe: Probe
    interval_s: float
    next_due: float
    running: threading.Thread | None = None
    """The thread collecting this probe right now, if any."""


class _Inflight(msgspec.Struct):
    seq: int
    sent_at: float


class RunnerStats(msgspec.Struct):
    produced_total: int = 0
    sent_total: int = 0
    acked_total: int = 0
    probe_failures_total: int = 0
    commands_total: int = 0
    last_probe_run: dict[str, float] = msgspec.field(default_factory=dict)


class AgentRunner:
    def __init__(
        self,
        settings: AgentSettings,
        identity: Identity,
        site: str,
        probes: Sequence[Probe],
        *,
        state_dir: Path,
        device_type: str = "pc",
    ) -> None:
        self.settings = settings
        self.identity = identity
        self.device_id = identity.device_id
        self.site = site
        self.device_type = device_type
        self.stats = RunnerStats()
        self.queue = StoreAndForwardQueue(state_dir / QUEUE_FILE, settings.queue.max_bytes)
        # What the queue holds for another device or site (a cloned disk's golden image, a
        # re-identification, an enrolment into another site) must never go out as that one.
        own_prefix = build_topic(site, self.device_id, "state").rsplit("/", 1)[0] + "/"
        foreign = self.queue.drop_not_under(own_prefix)
        if foreign:
            log.warning(
                "dropped %d queued message(s) addressed to another device or site "
                "(identity %s, previously %s); counted in queue_dropped_total",
                foreign,
                identity.info.origin,
                identity.info.previous_device_id or "unknown",
            )
        self.context = ProbeContext(
            device_id=self.device_id,
            site=site,
            settings=settings,
            queue_stats=lambda: (self.queue.depth, self.queue.dropped_total),
        )
        self._schedules = [_Schedule(probe, self._interval_for(probe), 0.0) for probe in probes]
        self._stop = threading.Event()
        self._wake_sender = threading.Event()
        self._wake_scheduler = threading.Event()
        self._inflight: dict[int, _Inflight] = {}
        self._inflight_lock = threading.Lock()
        self._last_sent_seq = 0
        self._inventory_digest: str | None = None
        self._inventory_seq: int | None = None
        """Queue seq of the last inventory until the broker acknowledges it."""
        self._force_inventory = True
        self._tokens = 0.0
        self._tokens_at = time.monotonic()

        broker = parse_broker_url(settings.mqtt.broker)
        mqtt = settings.mqtt
        self.state_topic = build_topic(site, self.device_id, "state")

        def will() -> LastWill:
            # A fresh message id per connection: the collector drops repeated ids.
            offline = StateMessage(
                device_id=self.device_id, site=site, status="offline", reason="will"
            )
            return LastWill(self.state_topic, encode_message(offline))

        self.connection = MqttConnection(
            client_id=f"cw-agent-{self.device_id}",
            broker=broker,
            username=mqtt.username,
            password=mqtt.password,
            tls=TlsOptions(mqtt.ca_file, mqtt.cert_file, mqtt.key_file, mqtt.tls_insecure),
            keepalive_s=mqtt.keepalive_s,
            will=will,
            reconnect_min_s=mqtt.reconnect_min_s,
            reconnect_max_s=mqtt.reconnect_max_s,
            max_inflight=settings.queue.max_inflight,
            on_connect=self._on_connect,
            on_message=self._on_command,
            on_published=self._on_published,
        )
        self.connection.subscribe(build_topic(site, self.device_id, "cmd"), qos=1)
        self._threads: list[threading.Thread] = []

    def _interval_for(self, probe: Probe) -> float:
        intervals = self.settings.intervals
        if probe.name == "inventory":
            return float(intervals.inventory_check)
        value: object = getattr(intervals, probe.name, None)
        return float(value) if isinstance(value, int | float) else 300.0

    # --- lifecycle ---------------------------------------------------------------------

    def start(self) -> None:
        log.info(
            "agent %s (site %s, identity %s) starting; broker %s; %d message(s) waiting on disk",
            self.device_id,
            self.site,
            self.identity.info.origin,
            self.connection.broker,
            self.queue.depth,
        )
        now = time.monotonic()
        for schedule in self._schedules:
            # A small random start offset spreads a lab that boots at once.
            spread = min(5.0, schedule.interval_s * self.settings.intervals.jitter_fraction)
            schedule.next_due = now + random.uniform(0, spread)
        self.connection.start()
        for target, name in ((self._schedule_loop, "scheduler"), (self._send_loop, "sender")):
            thread = threading.Thread(target=target, name=f"agent-{name}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop cleanly: give the queue a moment to drain, then say ``offline`` (shutdown)."""
        deadline = time.monotonic() + timeout_s
        while self.queue.depth and self.connection.connected and time.monotonic() < deadline:
            time.sleep(0.05)
        self._stop.set()
        self._wake_sender.set()
        self._wake_scheduler.set()
        for thread in self._threads:
            thread.join(timeout=timeout_s)
        # A probe still collecting finds the stop flag set and queues nothing; waiting for it
        # (bounded) keeps it from touching the queue after it is closed.
        # Read once per schedule: a probe finishing now sets its ``running`` back to None.
        for thread in [t for s in self._schedules if (t := s.running) is not None]:
            thread.join(timeout=max(0.0, deadline + timeout_s - time.monotonic()))
        goodbye = StateMessage(
            device_id=self.device_id, site=self.site, status="offline", reason="shutdown"
        )
        self.connection.stop(publish_before=(self.state_topic, encode_message(goodbye)))
        self.queue.close()
        log.info("agent stopped; %d message(s) kept on disk for next start", self.queue.depth)

    def wait(self) -> None:
        self._stop.wait()

    def request_stop(self) -> None:
        self._stop.set()

    # --- birth -------------------------------------------------------------------------

    def hello(self) -> HelloMessage:
        dmi = _read_dmi() if os.name != "nt" else {}
        return HelloMessage(
            device_id=self.device_id,
            site=self.site,
            device_type=self.device_type,  # type: ignore[arg-type]
            software="campuswatch-agent",
            software_version=__version__,
            vendor=dmi.get("sys_vendor"),
            model=dmi.get("product_name"),
            serial=dmi.get("product_serial"),
            platform=platform.platform()[:256],
            capabilities=[s.probe.name for s in self._schedules]
            + ["cmd:refresh_inventory", "cmd:run_probes"],
            intervals_s={s.probe.name: s.interval_s for s in self._schedules},
            identity=self.identity.info,
        )

    def _on_connect(self, session_present: bool) -> None:
        # Retained birth and availability: a collector that starts later still learns both.
        online = StateMessage(
            device_id=self.device_id, site=self.site, status="online", reason="connected"
        )
        self.connection.publish(
            build_topic(self.site, self.device_id, "hello"),
            encode_message(self.hello()),
            retain=True,
        )
        self.connection.publish(self.state_topic, encode_message(online), retain=True)
        self._wake_sender.set()

    # --- commands ----------------------------------------------------------------------

    def _on_command(self, received: ReceivedMessage) -> None:
        try:
            decoded = decode_message(received.topic, received.payload)
        except WireRejection as exc:
            log.warning("ignoring malformed command on %s: %s", received.topic[:200], exc)
            return
        command = decoded.message
        if not isinstance(command, CommandMessage):
            return
        self.stats.commands_total += 1
        log.info("command %s from %s", command.command, command.issued_by or "unknown")
        if command.command == "refresh_inventory":
            self._force_inventory = True
            self._run_now("inventory")
        elif command.command == "run_probes":
            self._force_inventory = True
            self._run_now(None)
        else:
            log.info("command %s is not supported by the PC agent", command.command)

    def _run_now(self, probe_name: str | None) -> None:
        for schedule in self._schedules:
            if probe_name is None or schedule.probe.name == probe_name:
                schedule.next_due = 0.0
        self._wake_scheduler.set()

    # --- probes ------------------------------------------------------------------------

    def _schedule_loop(self) -> None:
        while not self._stop.is_set():
            now = time.monotonic()
            running = sum(1 for s in self._schedules if s.running is not None)
            for schedule in self._schedules:
                if schedule.running is not None or now < schedule.next_due:
                    continue
                if running >= PROBES_AT_ONCE:
                    break  # a finishing probe wakes this loop
                # A thread per run, not a pool: collections come minutes apart, and a pool's
                # idle workers would hold their stacks (and concurrent.futures) for good.
                schedule.running = threading.Thread(
                    target=self._run_probe,
                    args=(schedule,),
                    name=f"probe-{schedule.probe.name}",
                    daemon=True,
                )
                running += 1
                schedule.running.start()
            upcoming = [s.next_due for s in self._schedules if s.running is None]
            # Sleep until the next probe is due: a finished probe, a command and stop() all
            # wake this loop, so polling would only cost CPU on every PC.
            delay = None
            if upcoming and running < PROBES_AT_ONCE:
                delay = max(0.05, min(upcoming) - time.monotonic())
            self._wake_scheduler.wait(delay)
            self._wake_scheduler.clear()

    def _run_probe(self, schedule: _Schedule) -> None:
        try:
            message = self._collect(schedule.probe)
            self._collected(schedule, message)
        finally:
            # Only now: stop() waits for a running probe so none queues after the close.
            schedule.running = None
            self._wake_scheduler.set()

    def _collect(self, probe: Probe) -> Message:
        try:
            return probe.collect(self.context)
        except Exception as exc:  # a probe bug must not stop the agent
            log.exception("probe %s failed unexpectedly", probe.name)
            self.stats.probe_failures_total += 1
            return EventMessage(
                device_id=self.device_id,
                site=self.site,
                event_type="probe_failed",
                severity="low",
                message=f"probe {probe.name} failed: {type(exc).__name__}: {exc}"[:4096],
                attributes={"probe": probe.name},
            )

    def _collected(self, schedule: _Schedule, message: Message) -> None:
        jitter = self.settings.intervals.jitter_fraction
        schedule.next_due = time.monotonic() + schedule.interval_s * (
            1 + random.uniform(-jitter, jitter)
        )
        self.stats.last_probe_run[schedule.probe.name] = time.time()
        return_free_memory()  # a probe's burst (package lists, PowerShell output) is over
        if self._stop.is_set():
            return  # stopping: the next start collects again
        if isinstance(message, InventoryMessage):
            if message.digest == self._inventory_digest and not self._force_inventory:
                return
            self._inventory_digest = message.digest
            self._force_inventory = False
            self._inventory_seq = self.enqueue(message)
        else:
            self.enqueue(message)

    def enqueue(self, message: Message) -> int | None:
        """Queue a message for sending; its queue ``seq``, or None if the queue refused it."""
        topic = build_topic(self.site, self.device_id, kind_of(message))
        seq, dropped = self.queue.append(topic, encode_message(message))
        self.stats.produced_total += 1
        if dropped:
            log.warning(
                "store-and-forward queue full (%d bytes): dropped %d oldest message(s), %d in all",
                self.queue.max_bytes,
                dropped,
                self.queue.dropped_total,
            )
            inventory_seq = self._inventory_seq
            if inventory_seq is not None and not self.queue.contains(inventory_seq):
                # Dropped unsent (an acknowledged one clears _inventory_seq first). It is only
                # sent when it changes, so forget its digest: the next check queues it again.
                self._inventory_seq = None
                self._inventory_digest = None
                log.warning("the inventory was dropped unsent; it is queued again at next check")
        self._wake_sender.set()
        return seq

    # --- sending -----------------------------------------------------------------------

    def _take_token(self) -> bool:
        rate = self.settings.queue.rate_per_s
        now = time.monotonic()
        self._tokens = min(max(rate, 10.0), self._tokens + (now - self._tokens_at) * rate)
        self._tokens_at = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False

    def _send_loop(self) -> None:
        while not self._stop.is_set():
            # New messages, acknowledgements, a connect and stop() wake this loop; the timeout
            # is only for resending what waits too long for its acknowledgement.
            with self._inflight_lock:
                waiting_for_acks = bool(self._inflight)
            self._wake_sender.wait(ACK_TIMEOUT_S / 3 if waiting_for_acks else None)
            self._wake_sender.clear()
            if not self.connection.connected:
                continue
            self._resend_unacknowledged()
            while not self._stop.is_set() and self.connection.connected:
                with self._inflight_lock:
                    room = self.settings.queue.max_inflight - len(self._inflight)
                if room <= 0:
                    break
                batch = self.queue.peek(self._last_sent_seq, room)
                if not batch:
                    break
                for queued in batch:
                    while not self._take_token():
                        if self._stop.wait(1.0 / self.settings.queue.rate_per_s):
                            return
                    mid = self.connection.publish(
                        queued.topic, queued.payload, qos=1, retain=queued.retain
                    )
                    if mid is None:
                        break  # disconnected meanwhile; the message stays queued
                    with self._inflight_lock:
                        self._inflight[mid] = _Inflight(queued.seq, time.monotonic())
                    self._last_sent_seq = queued.seq
                    self.stats.sent_total += 1

    def _resend_unacknowledged(self) -> None:
        """Publish again what waited too long for its PUBACK (e.g. lost over a reconnect)."""
        now = time.monotonic()
        with self._inflight_lock:
            stale = [
                mid for mid, entry in self._inflight.items() if now - entry.sent_at > ACK_TIMEOUT_S
            ]
            if not stale:
                return
            oldest = min(self._inflight[mid].seq for mid in stale)
            for mid in stale:
                del self._inflight[mid]
        # Rewind so the sender walks the queue again from the oldest unacknowledged message;
        # messages acknowledged meanwhile are no longer in the queue and are skipped.
        self._last_sent_seq = min(self._last_sent_seq, oldest - 1)

    def _on_published(self, mid: int) -> None:
        with self._inflight_lock:
            entry = self._inflight.pop(mid, None)
        if entry is None:
            return  # hello/state (not queued) or a late ack after a resend
        if entry.seq == self._inventory_seq:
            self._inventory_seq = None  # delivered: no longer at risk of being dropped
        self.queue.remove(entry.seq)
        self.stats.acked_total += 1
        self._wake_sender.set()


def _read_dmi() -> dict[str, str]:
    values: dict[str, str] = {}
    for name in ("sys_vendor", "product_name", "product_serial"):
        try:
            text = Path(f"/sys/class/dmi/id/{name}").read_text(encoding="ascii", errors="ignore")
        except OSError:
            continue
        text = text.strip()
        if text and text.lower() not in ("to be filled by o.e.m.", "default string", "none"):
            values[name] = text[:256]
    return values
