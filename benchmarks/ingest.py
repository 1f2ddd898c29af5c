"""Collector ingest rate beside a bare paho subscriber, on one private Mosquitto.

Rate method (same for every consumer, so the ratio is fair): the consumer first connects
once with a persistent session and disconnects; N QoS 1 health reports from D simulated
devices are then published while it is away, so the broker queues them; the consumer
reconnects and its drain rate is measured from the first message it takes in to the last.
For the collector "taken in" means stored: time-series points written and the register
transaction committed, read from its own /metrics; the bare subscriber only counts.

Runs: bare paho subscriber; one collector (SQLite register + SQLite series, the defaults);
with --postgres, one and then two collectors sharing a subscription (MQTT v5 $share) on a
fresh PostgreSQL database each (created for the run, dropped after). Prints msg/s, ratios
and the collector's RSS before/after.

Soak (--soak-seconds): one collector with the defaults while the devices publish steadily
at --rate msg/s; the collector's RSS is sampled every --sample-seconds and printed with the
first-minute and last-minute means and the least-squares slope, then the run checks that
every acknowledged publish was stored (messages and time-series points).

Targets (issue 4): collector >= 50 % of the bare subscriber; memory flat over 10 minutes;
two collectors >= 1.6x one.

    .venv/bin/python benchmarks/ingest.py --messages 20000 --devices 1000 [--postgres]
    .venv/bin/python benchmarks/ingest.py --soak-seconds 600 --rate 1000 --devices 2000
"""

from __future__ import annotations

import argparse
import os
import re
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, ClassVar

import psutil
from sqlalchemy.orm import Session, sessionmaker

from campuswatch.collector.alerting import Alerting
from campuswatch.collector.ingest import Ingestor
from campuswatch.collector.liveness import LivenessTracker
from campuswatch.collector.settings import LivenessSettings
from campuswatch.collector.sinks import RegisterSink
from campuswatch.collector.tsdb.buffer import BufferedWriter
from campuswatch.collector.tsdb.points import points_from_message
from campuswatch.collector.tsdb.urls import writer_from_url
from campuswatch.localports import free_port, wait_for_port
from campuswatch.wire import HealthMessage, decode_message, encode_message
from campuswatch.wire.ids import utc_now
from campuswatch.wire.mqtt import BrokerAddress, MqttConnection, ReceivedMessage

POLL_S = 0.05
SCRAPE_S = 1.0  # polling the collector's /metrics costs it CPU: not too often


def wait_for(
    predicate: Callable[[], bool], timeout_s: float, what: str, every_s: float = POLL_S
) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(every_s)


def health_report(n: int, devices: int) -> tuple[str, bytes]:
    """Topic and payload of the ``n``-th health report, round-robin over ``devices``."""
    device = f"pc-{n % devices:05d}"
    site = f"bench-s{(n % devices) // 50:03d}"
    payload = encode_message(
        HealthMessage(device_id=device, site=site, cpu_pct=float(n % 100), uptime_s=float(n))
    )
    return f"cw/v1/{site}/{device}/health", payload


class Publisher:
    """One QoS 1 publishing connection with at most ``window`` messages awaiting PUBACK."""

    def __init__(self, broker: BrokerAddress, devices: int, window: int = 1000) -> None:
        self.devices = devices
        self.sent = 0
        self.acked = 0
        self._window = threading.BoundedSemaphore(window)
        self._connection = MqttConnection(
            f"bench-pub-{os.getpid()}-{secrets.token_hex(3)}",
            broker,
            max_inflight=window,
            on_published=self._on_published,
        )
        self._connection.start()
        if not self._connection.wait_connected(10):
            raise SystemExit("publisher could not connect to the broker")

    def _on_published(self, _mid: int) -> None:  # paho's thread
        self.acked += 1
        self._window.release()

    def publish_next(self) -> None:
        self._window.acquire()
        topic, payload = health_report(self.sent, self.devices)
        while self._connection.publish(topic, payload, qos=1) is None:
            time.sleep(0.01)
        self.sent += 1

    def wait_acked(self, timeout_s: float = 600) -> None:
        wait_for(lambda: self.acked >= self.sent, timeout_s, "PUBACKs")

    def stop(self) -> None:
        self._connection.stop()


def publish_backlog(broker: BrokerAddress, messages: int, devices: int) -> None:
    publisher = Publisher(broker, devices)
    for _ in range(messages):
        publisher.publish_next()
    publisher.wait_acked()
    publisher.stop()


@dataclass(frozen=True, slots=True)
class Drain:
    rate: float
    """Messages per second, first message taken in to the last."""
    cpu_ms: float
    """Consumer CPU time (user + system, all its processes) per message over the same span:
    unlike the rate, barely moved by what else the machine is running."""
    rss_mb: list[tuple[float, float]] = field(default_factory=list)
    """Per collector: RSS when started and when the backlog was stored."""
    machine_busy: float | None = None
    """Share of the whole machine's CPU (all cores) busy during the drain: near 1.0 the
    cores, not the consumer, are the limit."""


def bare_subscriber_rate(broker: BrokerAddress, messages: int, devices: int) -> Drain:
    times: list[float] = []
    cpu: list[float] = []
    finished = threading.Event()

    def on_message(_message: ReceivedMessage) -> None:
        times.append(time.perf_counter())
        if len(times) == 1 or len(times) >= messages:
            cpu.append(time.process_time())
        if len(times) >= messages:
            finished.set()

    def connect() -> MqttConnection:
        connection = MqttConnection(
            "bench-bare",
            broker,
            clean_start=False,
            session_expiry_s=3600,
            max_inflight=1000,
            on_message=on_message,
        )
        connection.subscribe("cw/v1/#", qos=1)
        return connection

    first = connect()
    first.start()
    first.wait_connected(10)
    time.sleep(0.5)
    first.stop()
    publish_backlog(broker, messages, devices)
    second = connect()
    second.start()
    if not finished.wait(600):
        raise SystemExit(f"bare subscriber got {len(times)} of {messages}")
    second.stop()
    return Drain((messages - 1) / (times[-1] - times[0]), (cpu[-1] - cpu[0]) * 1000 / messages)


STORED = "campuswatch_ingest_messages_stored_total"
LAST_BATCH = "campuswatch_ingest_last_batch_timestamp_seconds"


def scrape_all(port: int, *families: str) -> dict[str, float] | None:
    """Sum of every sample of each family on the collector's /metrics, read in one scrape
    (absent families are left out); None if unreachable."""
    try:
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read()
    except OSError:
        return None
    found: dict[str, float] = {}
    for family in families:
        pattern = rb"^" + re.escape(family.encode()) + rb"(?:\{[^}]*\})? ([0-9.e+-]+)$"
        values = re.findall(pattern, text, flags=re.MULTILINE)
        if values:
            found[family] = sum(float(v) for v in values)
    return found


def scrape(port: int, family: str) -> float | None:
    values = scrape_all(port, family)
    return None if values is None else values.get(family, 0.0)


def stored_total(port: int) -> int:
    value = scrape(port, STORED)
    return -1 if value is None else int(value)


@dataclass(frozen=True, slots=True)
class StoredSoFar:
    """What the collectors had stored at one poll, and when their last batch was stored."""

    stored: int
    first_batch_at: float
    last_batch_at: float

    @staticmethod
    def read(ports: list[int]) -> StoredSoFar | None:
        """None until every collector has stored a batch."""
        stored, times = 0, []
        for port in ports:
            values = scrape_all(port, STORED, LAST_BATCH)
            if values is None or LAST_BATCH not in values:
                return None
            stored += int(values.get(STORED, 0))
            times.append(values[LAST_BATCH])
        return StoredSoFar(stored, min(times), max(times))


OWNED = "campuswatch_ownership_partitions"


def round_robin(sites: list[str], count: int) -> list[list[str]]:
    """``sites`` dealt into ``count`` partitions: the k-th takes every count-th, from k."""
    return [sites[k::count] for k in range(count)]


def ownership_toml(
    group: str, partitions: dict[str, list[str]], prefer: dict[str, str] | None = None
) -> str:
    """A collector config with an ``[ownership]`` table (docs/scale.md#ownership):
    ``partitions`` maps each partition's name to its sites, ``prefer`` to the collector_id
    that runs it when alive (none: whoever locks it first). Free partitions are tried every
    second and a preferred collector counts as back after 5 s, so a run waits little."""
    lines = [
        "[ownership]",
        f'group = "{group}"',
        "poll_interval_s = 1.0",
        "handback_grace_s = 5.0",
    ]
    for name, sites in partitions.items():
        quoted = ", ".join(f'"{site}"' for site in sites)
        lines += ["[[ownership.partitions]]", f'name = "{name}"', f"sites = [{quoted}]"]
        if prefer and name in prefer:
            lines.append(f'prefer = "{prefer[name]}"')
    return "\n".join(lines) + "\n"


def owned_partitions(port: int) -> float:
    """Partitions the collector on ``port`` runs now; -1 if its /metrics does not answer."""
    values = scrape_all(port, OWNED)
    return -1.0 if values is None else values.get(OWNED, 0.0)


def wait_for_owners(collectors: list[Collector], partitions: int, timeout_s: float = 120) -> None:
    """Until all ``partitions`` have an owner and every collector runs one at least: each
    partition's persistent session then exists, so the broker keeps what is published to
    its sites from now on (a site in no running partition is heard by nobody)."""

    def owned() -> bool:
        counts = [owned_partitions(c.port) for c in collectors]
        return sum(max(n, 0) for n in counts) >= partitions and all(n >= 1 for n in counts)

    wait_for(owned, timeout_s, "partitions owned", SCRAPE_S)


class Collector:
    running: ClassVar[set[Collector]] = set()  # stopped in main's finally, whatever failed

    def __init__(self, work: Path, name: str, broker: str, db: str | None, share: str | None):
        self.port = free_port()
        self.command = [
            sys.executable, "-m", "campuswatch", "collector", "run",
            "--broker", broker, "--data-dir", str(work / name),
            "--listen", f"127.0.0.1:{self.port}", "--log-level", "WARNING",
        ]  # fmt: skip
        if db:
            self.command += ["--db", db]
        if share:
            self.command += ["--share", share]
        self.env = {**os.environ, "CW_COLLECTOR_COLLECTOR_ID": f"bench-{name}"}
        self.log = (work / f"{name}.log").open("ab")
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, wait: bool = True) -> None:
        self.process = subprocess.Popen(
            self.command, env=self.env, stdout=self.log, stderr=self.log
        )
        Collector.running.add(self)
        if wait:
            self.wait_ready()

    def wait_ready(self) -> None:
        wait_for_port(self.port, timeout_s=60)

    def stop(self) -> None:
        if self.process is None:
            return
        # SIGTERM again while waiting: a collector has been seen to sit out a single one.
        for _ in range(30):
            self.process.terminate()
            try:
                self.process.wait(2)
                break
            except subprocess.TimeoutExpired:
                continue
        else:
            print(f"collector {self.process.pid} ignored SIGTERM for 60 s; killed")
            self.process.kill()
            self.process.wait(10)
        self.process = None
        Collector.running.discard(self)

    def rss_mb(self) -> float:
        assert self.process is not None
        return psutil.Process(self.process.pid).memory_info().rss / 1e6

    def cpu_s(self) -> float:
        assert self.process is not None
        times = psutil.Process(self.process.pid).cpu_times()
        return times.user + times.system


def collector_rate(
    work: Path,
    broker: BrokerAddress,
    args: argparse.Namespace,
    count: int,
    db: str | None,
    tag: str,
) -> Drain:
    share = "bench" if count > 1 else None
    collectors = [Collector(work, f"{tag}-{n}", str(broker), db, share) for n in range(count)]
    for collector in collectors:
        collector.start()
    wait_for(lambda: all(stored_total(c.port) >= 0 for c in collectors), 60, "collectors")
    # Warm-up, one report per device: the sessions exist and every device is in the
    # register, as in steady state (first contact takes the slower path that creates the
    # device and its asset; a district's devices are known after their first minute).
    publish_backlog(broker, args.devices, args.devices)
    wait_for(
        lambda: sum(max(stored_total(c.port), 0) for c in collectors) >= args.devices,
        600,
        "the warm-up reports",
    )
    for collector in collectors:
        collector.stop()
    publish_backlog(broker, args.messages, args.devices)
    for collector in collectors:  # together: one starting late would drain alone for a while
        collector.start(wait=False)
    for collector in collectors:
        collector.wait_ready()
    memory = [(c.rss_mb(), 0.0) for c in collectors]

    ports = [c.port for c in collectors]
    polls: list[StoredSoFar] = []

    def poll() -> StoredSoFar | None:
        seen = StoredSoFar.read(ports)
        if seen is not None:
            polls.append(seen)
        return seen

    # From the first poll at which every collector has stored a batch to the one that
    # sees them all. The span is measured by the collectors' own clocks (the time each
    # stored its last batch), so it does not depend on how often this polls; messages
    # stored before the first poll are left out, as the bare subscriber's first message is.
    wait_for(lambda: poll() is not None, 120, "first batches", SCRAPE_S)
    cpu_started = sum(c.cpu_s() for c in collectors)
    machine_started = psutil.cpu_times()
    wait_for(
        lambda: (seen := poll()) is not None and seen.stored >= args.messages,
        1800,
        "all messages stored",
        SCRAPE_S,
    )
    cpu = sum(c.cpu_s() for c in collectors) - cpu_started
    busy = machine_busy(machine_started, psutil.cpu_times())
    memory = [(before, c.rss_mb()) for (before, _), c in zip(memory, collectors, strict=True)]
    for collector in collectors:
        collector.stop()
    report_failures(work, tag)
    first, last = polls[0], polls[-1]
    taken = last.stored - first.stored
    elapsed = last.last_batch_at - first.first_batch_at
    return Drain(taken / elapsed, cpu * 1000 / taken, memory, busy)


def machine_busy(before: Any, after: Any) -> float:
    """Busy share of all cores between two ``psutil.cpu_times()`` readings."""
    idle = (after.idle + getattr(after, "iowait", 0.0)) - (
        before.idle + getattr(before, "iowait", 0.0)
    )
    total = sum(after) - sum(before)
    return 1.0 - idle / total if total > 0 else 0.0


def report_failures(work: Path, tag: str) -> None:
    """Say if a collector failed to store a batch (a deadlock, say): it retries, so the
    run still completes, but the rate then includes the back-off."""
    for log_file in sorted(work.glob(f"{tag}-*.log")):
        failures = [
            line for line in log_file.read_text(errors="replace").splitlines() if "failed" in line
        ]
        if failures:
            first = failures[0][:200]
            print(f"  {log_file.stem}: {len(failures)} log lines saying 'failed', first: {first}")


def driven_ingestor(
    sessions: sessionmaker[Session],
    work: Path,
    alerting: Alerting,
    clock: Callable[[], datetime] = utc_now,
) -> Ingestor:
    """The collector's ingest with its sinks (register, then rules and alerts) and the
    embedded time-series store in ``work``, never connected: the caller drives
    ``Ingestor.process`` with batches of its own (no broker, no threads of ingest's own)."""
    tsdb = BufferedWriter(writer_from_url(None, work), spool_path=None)
    unused = BrokerAddress("127.0.0.1", 1, False)
    return Ingestor(
        lambda on_message: MqttConnection("driven", unused, on_message=on_message),
        sessions,
        tsdb,
        [RegisterSink(LivenessTracker(LivenessSettings())), alerting],
        topic_filter="cw/v1/#",
        clock=clock,
    )


@contextmanager
def postgres_database(url: str) -> Iterator[str]:
    """A fresh database on the server ``url`` names (trust auth), dropped afterwards."""
    import psycopg

    name = f"cw_bench_{secrets.token_hex(6)}"
    with psycopg.connect(url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql+psycopg://{url.split('://', 1)[1].rsplit('/', 1)[0]}/{name}"
    finally:
        with psycopg.connect(url, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def soak(work: Path, broker: BrokerAddress, args: argparse.Namespace) -> None:
    """Steady publishing at ``args.rate`` for ``args.soak_seconds``; RSS sampled throughout."""
    collector = Collector(work, "soak", str(broker), None, None)
    collector.start()
    wait_for(lambda: stored_total(collector.port) >= 0, 60, "collector")
    publisher = Publisher(broker, args.devices)
    stop = threading.Event()

    def paced() -> None:
        started = time.perf_counter()
        while not stop.is_set():
            due = int((time.perf_counter() - started) * args.rate)
            while publisher.sent < due and not stop.is_set():
                publisher.publish_next()
            time.sleep(0.005)

    thread = threading.Thread(target=paced, daemon=True)
    print(f"soak: {args.rate:.0f} msg/s from {args.devices} devices for {args.soak_seconds} s")
    print("     t s   RSS MB   published      stored   backlog")
    samples: list[tuple[float, float]] = []
    started = time.monotonic()
    thread.start()
    worst_backlog = 0
    while True:
        elapsed = time.monotonic() - started
        stored = stored_total(collector.port)
        rss = collector.rss_mb()
        backlog = publisher.sent - stored
        worst_backlog = max(worst_backlog, backlog)
        samples.append((elapsed, rss))
        print(
            f"  {elapsed:6.0f} {rss:8.1f} {publisher.sent:11d} {stored:11d} {backlog:9d}",
            flush=True,
        )
        if elapsed >= args.soak_seconds:
            break
        time.sleep(max(0.0, min(args.sample_seconds, args.soak_seconds - elapsed)))
    stop.set()
    thread.join(10)
    publisher.wait_acked()
    published = publisher.sent
    publisher.stop()
    settled = time.monotonic()
    wait_for(lambda: stored_total(collector.port) >= published, 600, "the soak backlog")
    drain_s = time.monotonic() - settled
    stored = stored_total(collector.port)
    points = int(scrape(collector.port, "campuswatch_tsdb_points_written_total") or 0)
    duplicates = int(scrape(collector.port, "campuswatch_ingest_duplicates_total") or 0)
    rejected = int(scrape(collector.port, "campuswatch_ingest_rejected_total") or 0)
    dropped = int(scrape(collector.port, "campuswatch_tsdb_points_dropped_total") or 0)
    final_rss = collector.rss_mb()
    collector.stop()

    topic, payload = health_report(0, args.devices)
    decoded = decode_message(topic, payload)
    per_message = len(points_from_message(decoded.message, decoded.received_at))
    first_minute = [rss for t, rss in samples if t <= 60]
    last_minute = [rss for t, rss in samples if t >= samples[-1][0] - 60]
    after_warmup = [(t, rss) for t, rss in samples if t >= 60]
    print(
        f"RSS first minute {statistics.fmean(first_minute):.1f} MB, last minute "
        f"{statistics.fmean(last_minute):.1f} MB, after drain {final_rss:.1f} MB; slope "
        f"{slope_per_10_min(samples):+.1f} MB/10 min "
        f"({slope_per_10_min(after_warmup):+.1f} MB/10 min after the first minute)"
    )
    print(
        f"published {published}, stored {stored}, duplicates {duplicates}, rejected {rejected}; "
        f"time-series points {points} of {published * per_message} expected, {dropped} dropped; "
        f"largest backlog {worst_backlog}, drained {drain_s:.1f} s after publishing stopped"
    )
    complete = stored == published and points == published * per_message and not dropped
    print("every message stored" if complete else "NOT every message stored")


def slope_per_10_min(samples: list[tuple[float, float]]) -> float:
    if len(samples) < 2:
        return float("nan")
    times = [t for t, _ in samples]
    values = [v for _, v in samples]
    return statistics.linear_regression(times, values).slope * 600


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=20000)
    parser.add_argument(
        "--devices",
        type=int,
        default=1000,
        help="at least 2 x the batch size (500), so every batch holds distinct devices as real "
        "traffic does (a PC reports once a minute), for one collector and for each of two",
    )
    parser.add_argument(
        "--postgres", action="store_true", help="also 1 and 2 collectors on PostgreSQL"
    )
    parser.add_argument(
        "--postgres-url",
        default="postgresql://postgres@127.0.0.1:5432/postgres",
        help="server to create the throw-away databases on",
    )
    parser.add_argument("--soak-seconds", type=float, help="run the memory soak instead")
    parser.add_argument("--rate", type=float, default=1000.0, help="soak publish rate, msg/s")
    parser.add_argument("--sample-seconds", type=float, default=20.0, help="soak RSS interval")
    args = parser.parse_args()
    mosquitto = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    work = Path(tempfile.mkdtemp(prefix="cw-ingest-bench-"))
    port = free_port()
    (work / "mosquitto.conf").write_text(
        f"listener {port} 127.0.0.1\nallow_anonymous true\nmax_queued_messages 0\n"
        "max_inflight_messages 0\nmax_queued_bytes 0\n",
        encoding="utf-8",
    )
    broker_process = subprocess.Popen(
        [mosquitto, "-c", str(work / "mosquitto.conf")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    broker = BrokerAddress("127.0.0.1", port, False)
    print(f"{time.strftime('%Y-%m-%d %H:%M:%S')}, cpus {os.cpu_count()}, load {load()}")
    try:
        wait_for_port(port)
        if args.soak_seconds:
            soak(work, broker, args)
            return
        print(f"{args.messages} QoS 1 messages from {args.devices} devices")
        bare = bare_subscriber_rate(broker, args.messages, args.devices)
        print(
            f"bare paho subscriber             {bare.rate:6.0f} msg/s, {bare.cpu_ms:.3f} ms CPU/msg"
        )
        sqlite = collector_rate(work, broker, args, 1, None, "sqlite")
        print(
            f"collector (SQLite defaults)      {sqlite.rate:6.0f} msg/s, {sqlite.cpu_ms:.3f} ms "
            f"CPU/msg; rate {sqlite.rate / bare.rate:.1%} of bare (target >= 50 %), CPU "
            f"{sqlite.cpu_ms / bare.cpu_ms:.1f}x bare's; RSS {sqlite.rss_mb[0][0]:.0f} -> "
            f"{sqlite.rss_mb[0][1]:.0f} MB"
        )
        if args.postgres:
            with postgres_database(args.postgres_url) as db:
                one = collector_rate(work, broker, args, 1, db, "pg1")
            print(
                f"1 collector, PostgreSQL          {one.rate:6.0f} msg/s, {one.cpu_ms:.3f} ms "
                f"CPU/msg (collector only; the server's CPU not counted)"
            )
            with postgres_database(args.postgres_url) as db:
                two = collector_rate(work, broker, args, 2, db, "pg2")
            print(
                f"2 collectors, $share, PostgreSQL {two.rate:6.0f} msg/s, {two.cpu_ms:.3f} ms "
                f"CPU/msg; {two.rate / one.rate:.2f}x one (target >= 1.6x); machine CPU busy "
                f"{one.machine_busy:.0%} with one, {two.machine_busy:.0%} with two"
            )
    finally:
        for collector in list(Collector.running):
            collector.stop()
        print(f"load at the end {load()}")
        broker_process.terminate()
        broker_process.wait(10)
        shutil.rmtree(work, ignore_errors=True)


def load() -> str:
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


if __name__ == "__main__":
    main()
