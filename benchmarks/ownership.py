"""CPU per stored message: one collector, against two collectors sharing partitions.

Issue 16 item 2: two collectors that each run their own partitions of schools
(``[ownership]``, docs/scale.md#ownership) must spend no more than 1.1x the CPU per stored
message one collector spends: no coordination on the message path (the partition locks are
polled every ``poll_interval_s``, not per message).

Method (benchmarks/ingest.py's drain, whose helpers this reuses): each set-up gets a fresh
PostgreSQL database; its collectors start, take their partitions, and store one warm-up
report per device (so every device is in the register, as in steady state); they stop (the
persistent sessions stay with the broker) and N QoS 1 health reports from D devices over
D/50 schools are published while they are away; they start again together and drain the
backlog. CPU is user + system of every collector process from the first poll at which each
has stored a batch to the one that sees all N stored, divided by the messages stored in that
span. Set-ups, in one run, on one Mosquitto:

- one collector, no ``[ownership]`` (today's single collector);
- one collector running both partitions (ownership's own cost);
- two collectors, each preferring one partition of half the schools;
- two collectors sharing a subscription (``$share``): the same two processes on the same
  cores without ownership, to tell the machine's cost of a second process from ownership's.

``--rounds N`` alternates the set-ups N times and prints the medians: the machine is shared,
and one drain moves with what else runs.

    .venv/bin/python benchmarks/ownership.py --messages 40000 --devices 2000 --rounds 3
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))

from ingest import (
    SCRAPE_S,
    Collector,
    StoredSoFar,
    load,
    machine_busy,
    ownership_toml,
    postgres_database,
    publish_backlog,
    round_robin,
    stored_total,
    wait_for,
    wait_for_owners,
)

from campuswatch.collector.ownership import client_id_of
from campuswatch.localports import free_port, wait_for_port
from campuswatch.wire.mqtt import BrokerAddress, MqttConnection

SETUPS: dict[str, tuple[int, bool, str | None, str]] = {
    # name: (collectors, [ownership], share group, label)
    "one": (1, False, None, "1 collector, no ownership"),
    "two-owned": (2, True, None, "2 collectors, one partition each"),
    "two-share": (2, False, "bench", "2 collectors, $share (reference)"),
    "one-owned": (1, True, None, "1 collector, both partitions"),
}


def sites_of(devices: int) -> list[str]:
    """The schools benchmarks/ingest.py's reports come from (50 devices each)."""
    return [f"bench-s{n:03d}" for n in range((devices - 1) // 50 + 1)]


def halves_toml(devices: int, group: str, prefer: bool) -> str:
    """The schools in two partitions, north and south, preferring collectors c0 and c1."""
    halves = dict(zip(("north", "south"), round_robin(sites_of(devices), 2), strict=True))
    ids = dict(zip(halves, (f"{group}-c0", f"{group}-c1"), strict=True))
    return ownership_toml(group, halves, ids if prefer else None)


def forget_sessions(broker: BrokerAddress, client_ids: list[str]) -> None:
    """End the persistent sessions a set-up left with the broker (clean start, no expiry)."""
    for client_id in client_ids:
        connection = MqttConnection(client_id, broker, clean_start=True, session_expiry_s=0)
        connection.start()
        if connection.wait_connected(10):
            connection.stop()


def drain(
    work: Path,
    broker: BrokerAddress,
    args: argparse.Namespace,
    db: str,
    tag: str,
    count: int,
    ownership: bool,
    share: str | None = None,
) -> tuple[float, float, float, float]:
    """(CPU ms per stored message, msg/s, machine busy share, messages measured)."""
    config = work / f"{tag}.toml"
    # One collector takes both partitions at once (no preferred collector to wait for).
    config.write_text(halves_toml(args.devices, tag, prefer=count > 1) if ownership else "")
    collectors = []
    for n in range(count):
        # Ids of this set-up only: a persistent session left by an earlier one would queue
        # this one's messages (and is removed once this set-up is done).
        collector = Collector(work, f"{tag}-{n}", str(broker), db, share)
        collector.command += ["--config", str(config)]
        collector.env["CW_COLLECTOR_COLLECTOR_ID"] = f"{tag}-c{n}"
        collectors.append(collector)
    for collector in collectors:
        collector.start()
    wait_for(lambda: all(stored_total(c.port) >= 0 for c in collectors), 60, "collectors")
    if ownership:
        # Every partition has an owner, so its session exists before anything is published.
        wait_for_owners(collectors, 2)
    publish_backlog(broker, args.devices, args.devices)
    wait_for(
        lambda: sum(max(stored_total(c.port), 0) for c in collectors) >= args.devices,
        600,
        "the warm-up reports",
    )
    for collector in collectors:
        collector.stop()
    publish_backlog(broker, args.messages, args.devices)
    for collector in collectors:
        collector.start(wait=False)
    for collector in collectors:
        collector.wait_ready()
    ports = [c.port for c in collectors]
    polls: list[StoredSoFar] = []

    def poll() -> StoredSoFar | None:
        seen = StoredSoFar.read(ports)
        if seen is not None:
            polls.append(seen)
        return seen

    wait_for(lambda: poll() is not None, 180, "first batches", SCRAPE_S)
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
    for collector in collectors:
        collector.stop()
    sessions = [f"cw-{tag}-c{n}" for n in range(count)]
    if ownership:
        sessions += [client_id_of(tag, name) for name in ("north", "south")]
    forget_sessions(broker, sessions)
    first, last = polls[0], polls[-1]
    taken = last.stored - first.stored
    if taken <= 0:
        raise SystemExit("drained before it could be measured: publish more --messages")
    elapsed = max(last.last_batch_at - first.first_batch_at, 1e-9)
    return cpu * 1000 / taken, taken / elapsed, busy, taken


def claimed_messages(db: str) -> int:
    """Distinct messages in the register: each published one, stored once."""
    from sqlalchemy import create_engine, text

    engine = create_engine(db)
    try:
        with engine.connect() as connection:
            count = connection.execute(text("SELECT COUNT(*) FROM processed_messages"))
            return int(count.scalar_one())
    finally:
        engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=20000)
    parser.add_argument("--devices", type=int, default=1000)
    parser.add_argument(
        "--postgres-url",
        default="postgresql://postgres@127.0.0.1:5432/postgres",
        help="server to create the throw-away databases on",
    )
    parser.add_argument("--rounds", type=int, default=1, help="set-ups alternated this often")
    parser.add_argument(
        "--setups", nargs="+", choices=list(SETUPS), default=list(SETUPS), help="what to run"
    )
    args = parser.parse_args()
    mosquitto = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    work = Path(tempfile.mkdtemp(prefix="cw-ownership-bench-"))
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
    print(f"{args.messages} QoS 1 messages from {args.devices} devices, PostgreSQL register")
    try:
        wait_for_port(port)
        results: dict[str, list[float]] = {name: [] for name in args.setups}
        for round_number in range(1, args.rounds + 1):
            for name in args.setups:
                count, ownership, share, label = SETUPS[name]
                with postgres_database(args.postgres_url) as db:
                    cpu_ms, rate, busy, taken = drain(
                        work, broker, args, db, f"{name}-{round_number}", count, ownership, share
                    )
                    claimed = claimed_messages(db)
                expected = args.devices + args.messages
                if claimed != expected:
                    print(f"  stored {claimed} distinct messages, not {expected}")
                results[name].append(cpu_ms)
                print(
                    f"round {round_number} {label:34} {cpu_ms:.3f} ms CPU/stored msg, "
                    f"{rate:5.0f} msg/s, {taken:.0f} msgs measured, machine busy {busy:.0%}, "
                    f"load {load()}",
                    flush=True,
                )
        medians = {name: statistics.median(values) for name, values in results.items()}
        for name, value in medians.items():
            print(f"median {SETUPS[name][3]:34} {value:.3f} ms CPU/stored msg")
        if "one" in medians and "two-owned" in medians:
            print(
                f"two collectors with partitions / one collector: "
                f"{medians['two-owned'] / medians['one']:.3f} (target <= 1.1)"
            )
        if "two-share" in medians and "two-owned" in medians:
            print(
                f"two with partitions / two with $share (same processes, no ownership): "
                f"{medians['two-owned'] / medians['two-share']:.3f}"
            )
        if "one" in medians and "one-owned" in medians:
            print(
                f"one collector running both partitions / one without ownership: "
                f"{medians['one-owned'] / medians['one']:.3f}"
            )
    finally:
        for collector in list(Collector.running):
            collector.stop()
        print(f"load at the end {load()}")
        broker_process.terminate()
        broker_process.wait(10)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
