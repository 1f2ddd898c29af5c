"""Collector ingest rate beside a bare paho subscriber, on one private Mosquitto.

Method (same for every consumer, so the ratio is fair): the consumer first connects once
with a persistent session and disconnects; N QoS 1 messages from D simulated devices are
then published while it is away, so the broker queues them; the consumer reconnects and
the time to take in all N is measured. For the collector "taken in" means stored: register
transaction committed and time-series points written, read from its own /metrics.

Runs: bare paho subscriber; one collector (SQLite register + SQLite series, the defaults);
with --postgres, one and then two collectors sharing a subscription (MQTT v5 $share) on one
PostgreSQL register. Prints msg/s, ratios and the collector's RSS before/after.
Targets (issue 4): collector >= 50 % of the bare subscriber; two collectors >= 1.6x one.

    .venv/bin/python benchmarks/ingest.py --messages 20000 --devices 500 [--postgres]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import psutil

from campuswatch.localports import free_port, wait_for_port
from campuswatch.wire import HealthMessage, encode_message
from campuswatch.wire.mqtt import BrokerAddress, MqttConnection, ReceivedMessage


def wait_for(predicate: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(0.05)


def publish_backlog(broker: BrokerAddress, messages: int, devices: int) -> None:
    """QoS 1 publish of ``messages`` health reports spread over ``devices`` devices."""
    acked = threading.Semaphore(0)
    done = [0]

    def on_published(_mid: int) -> None:
        done[0] += 1
        acked.release()

    connection = MqttConnection(
        f"bench-pub-{os.getpid()}", broker, max_inflight=1000, on_published=on_published
    )
    connection.start()
    connection.wait_connected(10)
    window = threading.Semaphore(1000)
    for n in range(messages):
        device = f"pc-{n % devices:05d}"
        site = f"bench-s{(n % devices) // 50:02d}"
        payload = encode_message(
            HealthMessage(device_id=device, site=site, cpu_pct=float(n % 100), uptime_s=float(n))
        )
        window.acquire()
        while connection.publish(f"cw/v1/{site}/{device}/health", payload, qos=1) is None:
            time.sleep(0.01)
        if acked.acquire(blocking=False):
            window.release()
    while done[0] < messages:
        if acked.acquire(timeout=1):
            window.release()
    connection.stop()


def bare_subscriber_rate(broker: BrokerAddress, messages: int, devices: int) -> float:
    received = [0]
    finished = threading.Event()

    def on_message(_message: ReceivedMessage) -> None:
        received[0] += 1
        if received[0] >= messages:
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
    started = time.perf_counter()
    second.start()
    finished.wait(600)
    elapsed = time.perf_counter() - started
    second.stop()
    return messages / elapsed


def stored_total(port: int) -> int:
    try:
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read()
    except OSError:
        return -1
    values = re.findall(
        rb'campuswatch_ingest_messages_stored_total\{kind="[a-z]+"\} ([0-9.e+]+)', text
    )
    return int(sum(float(v) for v in values))


class Collector:
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

    def start(self) -> None:
        self.process = subprocess.Popen(
            self.command, env=self.env, stdout=self.log, stderr=self.log
        )
        wait_for_port(self.port)

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(60)
            self.process = None

    def rss_mb(self) -> float:
        assert self.process is not None
        return psutil.Process(self.process.pid).memory_info().rss / 1e6


def collector_rate(
    work: Path,
    broker: BrokerAddress,
    args: argparse.Namespace,
    count: int,
    db: str | None,
    tag: str,
) -> tuple[float, list[tuple[float, float]]]:
    share = "bench" if count > 1 else None
    collectors = [Collector(work, f"{tag}-{n}", str(broker), db, share) for n in range(count)]
    for collector in collectors:
        collector.start()
    wait_for(lambda: all(stored_total(c.port) >= 0 for c in collectors), 60, "collectors")
    time.sleep(1.0)
    for collector in collectors:
        collector.stop()
    publish_backlog(broker, args.messages, args.devices)
    for collector in collectors:
        collector.start()
    memory = [(c.rss_mb(), 0.0) for c in collectors]
    wait_for(
        lambda: sum(max(stored_total(c.port), 0) for c in collectors) > 0, 120, "first message"
    )
    started = time.perf_counter()
    wait_for(
        lambda: sum(max(stored_total(c.port), 0) for c in collectors) >= args.messages,
        1800,
        "all messages stored",
    )
    elapsed = time.perf_counter() - started
    memory = [(before, c.rss_mb()) for (before, _), c in zip(memory, collectors, strict=True)]
    for collector in collectors:
        collector.stop()
    return args.messages / elapsed, memory


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=20000)
    parser.add_argument("--devices", type=int, default=500)
    parser.add_argument(
        "--postgres", action="store_true", help="also 1 and 2 collectors on PostgreSQL"
    )
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
    try:
        wait_for_port(port)
        print(f"{args.messages} QoS 1 messages from {args.devices} devices, cpus: {os.cpu_count()}")
        bare = bare_subscriber_rate(broker, args.messages, args.devices)
        print(f"bare paho subscriber            {bare:9.0f} msg/s")
        rate, memory = collector_rate(work, broker, args, 1, None, "sqlite")
        print(
            f"collector (SQLite defaults)     {rate:9.0f} msg/s  = {rate / bare:5.1%} of bare "
            f"(target >= 50 %); RSS {memory[0][0]:.0f} -> {memory[0][1]:.0f} MB"
        )
        if args.postgres:
            sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
            from tests.support.postgres import temporary_postgres_database

            with temporary_postgres_database("cw_bench") as db:
                one, _ = collector_rate(work, broker, args, 1, db, "pg1")
            with temporary_postgres_database("cw_bench") as db:
                two, _ = collector_rate(work, broker, args, 2, db, "pg2")
            print(f"1 collector, PostgreSQL         {one:9.0f} msg/s")
            print(
                f"2 collectors, $share, PostgreSQL {two:8.0f} msg/s  = {two / one:.2f}x one "
                "(target >= 1.6x)"
            )
    finally:
        broker_process.terminate()
        broker_process.wait(10)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
