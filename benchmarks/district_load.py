"""A district on one collector: 3,300 msg/s from 100,000 simulated devices, sustained.

The load is the simulator's own output, recorded once and replayed by a lean publisher so
the load generator leaves the collector a core:

1. Record: ``--devices`` simulated devices (``firmware_sim``'s fleet and models, 300 per
   school, reporting every ``--interval`` simulated seconds) run on a manual clock into a
   memory transport: their births (hello, retained state, inventory) and ``--cycles``
   report intervals after them. ``--recording FILE`` keeps the recording for later runs.
2. Replay: a publisher process sends the recorded messages in order, QoS 1, looping over
   the report intervals, at ``--rate`` msg/s; each copy gets a fresh message id and the
   current time (the template's bytes around them are sent as recorded).
3. Peer: a bare paho subscriber (its own process, no collector connected) takes the same
   load for ``--peer-seconds`` and reports its CPU time per message.
4. Collector: one ``campuswatch collector run`` (SQLite defaults, or ``--postgres``) with
   a syslog destination (CEF, ``group_wait`` 0) in this process. ``--collectors N`` (with
   ``--postgres``) runs N instead, on the one broker and database, sharing the district by
   ownership (docs/scale.md#ownership): every site published to (the schools and the alert
   PCs' ``s-lab-…``), dealt round-robin into N partitions, each preferred by one collector
   (``collector-1`` … ``collector-N``); the load starts once each runs its partition, and
   the figures are summed over the N (RSS also printed for each). Before it starts, the
   register is given every simulated device (site tree, asset, device row, online) with a
   few bulk statements (``--warm-up seed``), as a district's register is in steady state;
   ``--warm-up births`` publishes the recorded births instead and waits for them to be
   stored (first contact takes the per-message path: 2–4 ms of CPU per message, so
   100,000 devices' births take tens of minutes on 2 cores). Then the load runs for
   ``--duration`` seconds. Every ``--alert-every``
   seconds a known PC at its own school reports "no antivirus"; the time from publish to
   the CEF line naming it is its alert latency (as ``alert_latency.py``).

Printed: messages sent/stored/lost, the backlog (published, not yet stored) over time and
its maximum, alert p50/p99, collector RSS at start/middle/end, and CPU milliseconds per
stored message for the collector beside the bare subscriber's per received message (the
figure the machine's load moves least). Targets (issue 16): nothing lost, backlog bounded,
alert p99 < 500 ms, RSS flat.

    .venv/bin/python benchmarks/district_load.py                       # 600 s, 100,000 devices
    .venv/bin/python benchmarks/district_load.py --duration 60 --recording /tmp/district.pickle
    .venv/bin/python benchmarks/district_load.py --duration 60 --profile /tmp/collector.svg
    .venv/bin/python benchmarks/district_load.py --postgres --collectors 2 --duration 60
"""

from __future__ import annotations

import argparse
import cProfile
import math
import multiprocessing
import os
import pickle
import secrets
import shutil
import socketserver
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from multiprocessing.sharedctypes import Synchronized
from multiprocessing.synchronize import Event as ProcessEvent
from pathlib import Path

import psutil
from alert_latency import OctetCountingHandler, arrivals, arrived
from ingest import (
    STORED,
    Collector,
    driven_ingestor,
    load,
    machine_busy,
    ownership_toml,
    postgres_database,
    round_robin,
    scrape_all,
    slope_per_10_min,
    wait_for,
    wait_for_owners,
)
from sqlalchemy import func, select

from campuswatch.collector.alerts.models import Alert
from campuswatch.firmware_sim.engine import Simulator
from campuswatch.firmware_sim.fleet import build_fleet
from campuswatch.firmware_sim.schoolday import SimClock
from campuswatch.firmware_sim.transport import MemoryTransport
from campuswatch.localports import free_port, wait_for_port
from campuswatch.wire import AvMessage, HealthMessage, encode_message
from campuswatch.wire.mqtt import BrokerAddress, MqttConnection, ReceivedMessage

DEVICES_PER_SCHOOL = 300
ENVELOPE = b',"v":1,"id":"'
"""Where a payload's envelope starts: msgspec writes the body first, then v, id, ts."""
AFTER_TS = b'","device_id":"'
DUPLICATES = "campuswatch_ingest_duplicates_total"
REJECTED = "campuswatch_ingest_rejected_total"
SAMPLE_S = 10.0  # each /metrics scrape costs the collector CPU: not too often

Template = tuple[str, bytes, bytes, bool]
"""Topic, payload up to the message id, payload from the end of ``ts``, retain."""


@dataclass(frozen=True, slots=True)
class Recording:
    devices: int
    interval_s: float
    births: list[Template]
    cycle: list[Template]
    kinds: dict[str, int]


def template(topic: str, payload: bytes, retain: bool) -> Template:
    start = payload.rindex(ENVELOPE) + len(ENVELOPE)
    end = payload.index(AFTER_TS, start)
    return topic, payload[:start], payload[end:], retain


def record(devices: int, interval_s: float, cycles: int, seed: int = 1) -> Recording:
    """The simulator's births and ``cycles`` report intervals for ``devices`` devices."""
    fleet = build_fleet(
        seed=seed,
        schools=max(1, devices // DEVICES_PER_SCHOOL),
        devices=devices,
        site_prefix="district",
    )
    transport = MemoryTransport()
    clock = SimClock(datetime(2025, 3, 4, 2, 0, tzinfo=UTC), manual=True)  # 09:00 local
    simulator = Simulator(fleet, transport, clock, seed=seed, interval_s=interval_s)
    simulator.start()
    births = [template(p.topic, p.payload, p.retain) for p in transport.published]
    # The first interval carries every device's first report (lab PCs send av and net
    # with it); the steady intervals after it are what is replayed.
    simulator.run_for(interval_s, step_s=1.0)
    steady_from = len(transport.published)
    simulator.run_for(interval_s * cycles, step_s=1.0)
    steady = transport.published[steady_from:]
    cycle = [template(p.topic, p.payload, p.retain) for p in steady]
    kinds = Counter(p.topic.rsplit("/", 1)[1] for p in steady)
    return Recording(devices, interval_s, births, cycle, dict(kinds))


def load_recording(args: argparse.Namespace, work: Path) -> Path:
    """Path of a pickled recording matching the arguments (made now if need be)."""
    wanted = (args.devices, args.interval, args.cycles)
    path: Path = args.recording or work / "recording.pickle"
    if path.exists():
        with path.open("rb") as file:
            recording: Recording = pickle.load(file)
        if (recording.devices, recording.interval_s, len(recording.cycle) > 0) == (
            args.devices,
            args.interval,
            True,
        ):
            print(f"recording: {path} ({len(recording.cycle)} messages a loop)")
            return path
    started = time.perf_counter()
    recording = record(*wanted)
    with path.open("wb") as file:
        pickle.dump(recording, file, protocol=pickle.HIGHEST_PROTOCOL)
    kinds = ", ".join(f"{kind} {n}" for kind, n in sorted(recording.kinds.items()))
    print(
        f"recorded {args.devices} devices in {time.perf_counter() - started:.0f} s: "
        f"{len(recording.births)} birth messages, {len(recording.cycle)} in "
        f"{args.cycles} x {args.interval:g} s of reports ({kinds})"
    )
    return path


def seed_register(url: str, recording_path: Path) -> int:
    """Sites, assets and devices for every sender in the recording, as first contact and
    earlier sweeps would have left them (online, seen now); returns how many devices.

    Each asset carries the MACs its device's hello and inventory gave: without them every
    host the schools' scans find, the district's own PCs included, reads as an unknown
    device (tens of thousands of alerts no district has). It also carries the name, vendor
    and model its hello and inventory gave, and a scan's hostname and vendor where those
    left blanks: without them the first sweep of the replay fills ~60,000 blanks with a
    history row each, work a district does once in its life, not every few minutes."""
    from sqlalchemy import insert

    from campuswatch.collector.db.engine import make_engine, session_factory, upgrade
    from campuswatch.collector.db.models import Asset, AssetMac, Device, Site
    from campuswatch.collector.register.assets import normalize_mac
    from campuswatch.wire import (
        DiscoveryMessage,
        HelloMessage,
        InventoryMessage,
        Message,
        decode_message,
    )

    with recording_path.open("rb") as file:
        recording: Recording = pickle.load(file)

    def decoded(template: Template) -> Message:
        topic, head, tail, _retain = template
        stamp = b'","ts":"2025-03-04T02:00:00Z'
        payload = head + b"00000000-0000-7000-8000-000000000000" + stamp + tail
        return decode_message(topic, payload).message

    devices: dict[str, HelloMessage] = {}
    interface_macs: dict[str, list[str]] = {}
    facts: dict[str, dict[str, str | None]] = {}  # device id → name, vendor, model
    for template in recording.births:
        if template[0].endswith(("/hello", "/inventory")):
            message = decoded(template)
            if isinstance(message, HelloMessage):
                devices[message.device_id] = message
                facts.setdefault(message.device_id, {}).update(
                    vendor=message.vendor, model=message.model
                )
            elif isinstance(message, InventoryMessage):
                # A PC's hello has no MAC: its agent's inventory lists the interfaces.
                interface_macs[message.device_id] = [
                    mac
                    for mac in (normalize_mac(i.mac) for i in message.interfaces if i.mac)
                    if mac is not None
                ]
                hardware = message.hardware
                facts.setdefault(message.device_id, {}).update(
                    name=message.hostname,
                    vendor=hardware.vendor if hardware is not None else None,
                    model=hardware.model if hardware is not None else None,
                )
    scanned: dict[str, tuple[str | None, str | None]] = {}  # MAC → hostname, vendor
    for template in recording.cycle:
        if template[0].endswith("/discovery"):
            sweep = decoded(template)
            assert isinstance(sweep, DiscoveryMessage)
            for host in sweep.hosts:
                mac = normalize_mac(host.mac) if host.mac else None
                if mac is not None:
                    scanned.setdefault(mac, (host.hostname, host.vendor))
    schools = sorted({hello.site for hello in devices.values()})
    now = datetime.now(UTC)
    engine = make_engine(url)
    upgrade(engine)
    with session_factory(engine)() as session, session.begin():
        session.execute(
            insert(Site),
            [{"id": "district", "parent_id": None, "level": "district", "name": "District"}]
            + [
                {"id": site, "parent_id": "district", "level": "school", "name": site}
                for site in schools
            ],
        )
        rows = list(devices.values())
        macs: dict[str, int] = {}
        for n, hello in enumerate(rows):
            for mac in [hello.mac, *interface_macs.get(hello.device_id, ())]:
                normalized = normalize_mac(mac) if mac is not None else None
                if normalized is not None:
                    macs.setdefault(normalized, n + 1)
        scanned_by_asset: dict[int, tuple[str | None, str | None]] = {}
        for mac, asset_id in macs.items():
            if mac in scanned:
                scanned_by_asset.setdefault(asset_id, scanned[mac])
        asset_rows = []
        for n, hello in enumerate(rows):
            said = facts.get(hello.device_id, {})
            hostname, scanned_vendor = scanned_by_asset.get(n + 1, (None, None))
            asset_rows.append(
                {
                    "id": n + 1,
                    "kind": hello.device_type,
                    "device_id": hello.device_id,
                    "site_id": hello.site,
                    "source": "agent",
                    # What the device said first; a sweep only fills what it left blank.
                    "name": said.get("name") or hostname,
                    "vendor": said.get("vendor") or scanned_vendor,
                    "model": said.get("model"),
                    "first_seen": now,
                    "last_seen": now,
                }
            )
        session.execute(insert(Asset), asset_rows)
        if macs:
            session.execute(
                insert(AssetMac), [{"mac": mac, "asset_id": asset} for mac, asset in macs.items()]
            )
        session.execute(
            insert(Device),
            [
                {
                    "device_id": hello.device_id,
                    "site_id": hello.site,
                    "device_type": hello.device_type,
                    "asset_id": n + 1,
                    "online": True,
                    # Online since yesterday: a state change now would be read by every
                    # collector's liveness sync, which a steady register does not see.
                    "status_changed_at": now - timedelta(days=1),
                    "last_seen": now,
                }
                for n, hello in enumerate(rows)
            ],
        )
    engine.dispose()
    return len(devices)


def recorded_sites(recording_path: Path) -> set[str]:
    """Every site the recording publishes to (the ``cw/v1/SITE/…`` level)."""
    with recording_path.open("rb") as file:
        recording: Recording = pickle.load(file)
    return {topic.split("/", 3)[2] for topic, *_ in recording.births + recording.cycle}


def publish(
    port: int,
    recording_path: Path,
    which: str,
    rate: float,
    stop: ProcessEvent,
    sent: Synchronized[int],
    acked: Synchronized[int],
    cpu_s: Synchronized[float],
) -> None:
    """Publisher process: ``which`` ("births" once, unpaced, or "cycle" looped at ``rate``)
    with a fresh id and time in every copy, at most 1,000 messages awaiting PUBACK."""
    with recording_path.open("rb") as file:
        recording: Recording = pickle.load(file)
    templates = recording.births if which == "births" else recording.cycle
    window = threading.BoundedSemaphore(1000)

    def on_published(_mid: int) -> None:
        with acked.get_lock():
            acked.value += 1
        window.release()

    connection = MqttConnection(
        f"district-pub-{os.getpid()}",
        BrokerAddress("127.0.0.1", port, False),
        max_inflight=1000,
        on_published=on_published,
    )
    connection.start()
    if not connection.wait_connected(10):
        raise SystemExit("publisher could not connect")
    prefix = f"{secrets.randbits(32):08x}-{secrets.randbits(16):04x}-7000-8000-"
    started = time.perf_counter()
    n = 0
    total = len(templates)
    while not stop.is_set() and (which != "births" or n < total):
        due = int((time.perf_counter() - started) * rate) if rate > 0 else n + 1000
        stamp = b'","ts":"' + datetime.now(UTC).isoformat().replace("+00:00", "Z").encode()
        while n < due and not stop.is_set() and (which != "births" or n < total):
            topic, head, tail, retain = templates[n % total]
            payload = b"".join((head, f"{prefix}{n:012x}".encode(), stamp, tail))
            window.acquire()
            while connection.publish(topic, payload, qos=1, retain=retain) is None:
                time.sleep(0.01)  # reconnecting
            n += 1
            sent.value = n
        if rate > 0:
            time.sleep(0.002)
    deadline = time.monotonic() + 60
    while acked.value < n and time.monotonic() < deadline:
        time.sleep(0.05)
    connection.stop()
    times = psutil.Process().cpu_times()
    cpu_s.value = times.user + times.system


def bare_subscriber(
    port: int,
    ready: ProcessEvent,
    stop: ProcessEvent,
    received: Synchronized[int],
    cpu_s: Synchronized[float],
) -> None:
    """Peer process: counts what it receives (QoS 1, auto-ack); CPU from first to last."""
    first_cpu: list[float] = []
    count = 0
    last_cpu = [0.0]

    def on_message(_message: ReceivedMessage) -> None:
        nonlocal count
        if not first_cpu:
            first_cpu.append(time.process_time())
        count += 1
        received.value = count
        last_cpu[0] = time.process_time()

    connection = MqttConnection(
        "district-peer",
        BrokerAddress("127.0.0.1", port, False),
        max_inflight=1000,
        on_message=on_message,
    )
    connection.subscribe("cw/v1/#", qos=1)
    connection.start()
    connection.wait_connected(10)
    time.sleep(0.5)  # subscribed
    ready.set()
    stop.wait()
    connection.stop()
    cpu_s.value = last_cpu[0] - (first_cpu[0] if first_cpu else 0.0)


class PublisherProcess:
    def __init__(self, port: int, recording: Path, which: str, rate: float) -> None:
        spawn = multiprocessing.get_context("spawn")  # no fork of a process with threads
        self.stop = spawn.Event()
        self.sent = spawn.Value("q", 0)
        self.acked = spawn.Value("q", 0)
        self.cpu_s = spawn.Value("d", 0.0)
        self.process = spawn.Process(
            target=publish,
            args=(port, recording, which, rate, self.stop, self.sent, self.acked, self.cpu_s),
            daemon=True,
        )
        self.process.start()

    def finish(self, timeout_s: float = 120) -> None:
        self.stop.set()
        self.process.join(timeout_s)


def peer_run(port: int, recording: Path, args: argparse.Namespace) -> tuple[float, float, int]:
    """(CPU ms per message, msg/s received, messages) of a bare subscriber under the load."""
    spawn = multiprocessing.get_context("spawn")
    ready, stop = spawn.Event(), spawn.Event()
    received, cpu_s = spawn.Value("q", 0), spawn.Value("d", 0.0)
    peer = spawn.Process(
        target=bare_subscriber, args=(port, ready, stop, received, cpu_s), daemon=True
    )
    peer.start()
    if not ready.wait(30):
        raise SystemExit("bare subscriber did not start")
    publisher = PublisherProcess(port, recording, "cycle", args.rate)
    time.sleep(args.peer_seconds)
    publisher.finish()
    wait_for(lambda: received.value >= publisher.acked.value, 60, "the peer to catch up")
    stop.set()
    peer.join(30)
    taken = received.value
    return cpu_s.value * 1000 / max(taken, 1), taken / args.peer_seconds, taken


def in_process(
    work: Path, recording_path: Path, count: int, skip: int, profile: Path | None = None
) -> None:
    """CPU per message of ``Ingestor.process`` with the collector's sinks (register, rules,
    alerts; SQLite register and time series) on the recording's reports, in batches of 500,
    after ``skip`` unmeasured ones. Counts every thread of this process (the time-series
    writer too); no MQTT, no HTTP. ``profile``: cProfile the measured reports into this file
    (``python -m pstats FILE``); the CPU figure then includes cProfile's own overhead."""
    from campuswatch.collector.alerting import Alerting
    from campuswatch.collector.db.engine import default_url, make_engine, session_factory
    from campuswatch.collector.service import set_gc_young_threshold
    from campuswatch.collector.settings import CollectorSettings

    set_gc_young_threshold(CollectorSettings().gc_young_threshold)  # as a collector does
    url = default_url(work)
    seeded = seed_register(url, recording_path)
    with recording_path.open("rb") as file:
        recording: Recording = pickle.load(file)
    engine = make_engine(url)
    sessions = session_factory(engine)
    alerting = Alerting(sessions, rules_dir=None, forwarding_config=None, collector_id="bench")
    ingestor = driven_ingestor(sessions, work, alerting)
    alerting.restore_state()
    prefix = f"{secrets.randbits(32):08x}-{secrets.randbits(16):04x}-7000-8000-"

    def replay(start: int, n: int) -> float:
        """CPU seconds to store reports ``start`` … ``start + n`` (each with a fresh id)."""
        cpu = 0.0
        for offset in range(start, start + n, 500):
            stamp = b'","ts":"' + datetime.now(UTC).isoformat().replace("+00:00", "Z").encode()
            batch = []
            for index in range(offset, min(offset + 500, start + n)):
                topic, head, tail, _retain = recording.cycle[index % len(recording.cycle)]
                payload = b"".join((head, f"{prefix}{index:012x}".encode(), stamp, tail))
                batch.append((ReceivedMessage(topic, payload, 1, False, index), datetime.now(UTC)))
            before = time.process_time()
            ingestor.process(batch)
            cpu += time.process_time() - before
        before = time.process_time()
        alerting.tick(datetime.now(UTC))  # the folded repeats and timers of that stretch
        return cpu + time.process_time() - before

    started = time.monotonic()
    skipped_cpu = replay(0, skip)
    print(
        f"in-process: {seeded} devices seeded; {skip} reports stored first "
        f"({skipped_cpu * 1000 / max(skip, 1):.3f} ms CPU each, {time.monotonic() - started:.0f} s)"
    )
    profiler = cProfile.Profile() if profile else None
    if profiler:
        profiler.enable()
    cpu = replay(skip, count)
    if profiler and profile:
        profiler.disable()
        profiler.dump_stats(profile)
        print(f"in-process: profile of the measured reports in {profile} (with cProfile's cost)")
    with sessions() as session:
        alerts = session.scalar(select(func.count()).select_from(Alert))
    print(
        f"in-process: {count} reports after those: {cpu * 1000 / count:.3f} ms CPU per stored "
        f"message ({ingestor.stats.stored_total} stored, {alerts} alerts in the register); "
        f"{1000 / (cpu * 1000 / count):.0f} msg/s for one core at that rate"
    )
    ingestor.tsdb.close()
    engine.dispose()


def percentile(values: list[float], share: float) -> float:
    return values[min(len(values) - 1, max(0, math.ceil(len(values) * share) - 1))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=100_000)
    parser.add_argument("--rate", type=float, default=3300.0, help="msg/s published")
    parser.add_argument("--duration", type=float, default=600.0, help="seconds of load")
    parser.add_argument("--interval", type=float, default=30.0, help="simulated s per report")
    parser.add_argument("--cycles", type=int, default=5, help="report intervals recorded")
    parser.add_argument("--recording", type=Path, help="keep/reuse the recording here")
    parser.add_argument("--peer-seconds", type=float, default=60.0)
    parser.add_argument(
        "--drain-seconds", type=float, default=300.0, help="wait this long for the backlog"
    )
    parser.add_argument("--alert-every", type=float, default=2.0, help="s between alerts")
    parser.add_argument(
        "--warm-up",
        choices=("seed", "births"),
        default="seed",
        help="register every device in bulk (seed) or by publishing the recorded births",
    )
    parser.add_argument("--postgres", action="store_true", help="register on PostgreSQL")
    parser.add_argument(
        "--collectors",
        type=int,
        default=1,
        metavar="N",
        help="live run: N collectors sharing the district's sites by ownership (partitions "
        "preferred by collector-1 … collector-N; needs --postgres); figures summed over them",
    )
    parser.add_argument(
        "--victoriametrics",
        action="store_true",
        help="time series in a VictoriaMetrics started here (a district's store) instead of "
        "the embedded SQLite one",
    )
    parser.add_argument("--postgres-url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument(
        "--with-reports",
        action="store_true",
        help="keep the hourly report pass (its first run, 300 s after start, renders PDFs)",
    )
    parser.add_argument(
        "--profile",
        type=Path,
        help="py-spy record the collector during the load: a flame graph if the name ends .svg, "
        "else collapsed stacks; with --in-process, a cProfile of the measured reports",
    )
    parser.add_argument(
        "--in-process",
        type=int,
        metavar="MESSAGES",
        help="instead of the live run: replay MESSAGES recorded reports straight into "
        "Ingestor.process (no broker, one thread) after --skip others, and print its CPU per "
        "message: the collector's own work, which the machine's load does not move",
    )
    parser.add_argument(
        "--skip",
        type=int,
        default=120_000,
        help="--in-process: reports stored first, unmeasured (a whole report interval is "
        "~117,000: every device's first report in this collector opens its state)",
    )
    args = parser.parse_args()
    if args.collectors < 1:
        raise SystemExit("--collectors must be 1 or more")
    if args.collectors > 1 and args.in_process:
        raise SystemExit("--collectors is for the live run: --in-process has no collector")
    if args.collectors > 1 and not args.postgres:
        raise SystemExit(
            f"--collectors {args.collectors} needs --postgres: collectors share the district "
            "by PostgreSQL advisory locks (docs/scale.md#ownership), which SQLite has not"
        )
    if args.collectors > 1 and args.profile:
        raise SystemExit("--profile records one collector: use it with --collectors 1")
    work = Path(tempfile.mkdtemp(prefix="cw-district-"))
    if args.in_process:
        try:
            recording_path = load_recording(args, work)
            in_process(work, recording_path, args.in_process, args.skip, args.profile)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        return
    print(f"{time.strftime('%Y-%m-%d %H:%M:%S')}, cpus {os.cpu_count()}, load {load()}")
    recording = load_recording(args, work)
    port = free_port()
    (work / "mosquitto.conf").write_text(
        f"listener {port} 127.0.0.1\nallow_anonymous true\nmax_queued_messages 0\n"
        "max_inflight_messages 0\nmax_queued_bytes 0\npersistence false\n",
        encoding="utf-8",
    )
    broker_process = subprocess.Popen(
        [shutil.which("mosquitto") or "/usr/sbin/mosquitto", "-c", str(work / "mosquitto.conf")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    syslog = socketserver.ThreadingTCPServer(("127.0.0.1", 0), OctetCountingHandler)
    syslog.daemon_threads = True
    threading.Thread(target=syslog.serve_forever, daemon=True).start()
    (work / "fwd.yaml").write_text(
        "forwarding:\n  destinations:\n    - name: soc\n      type: syslog\n      options:\n"
        f"        host: 127.0.0.1\n        port: {syslog.server_address[1]}\n"
        "        transport: tcp\n        message_format: cef\n",
        encoding="utf-8",
    )
    stores: list[subprocess.Popen[bytes]] = []
    try:
        wait_for_port(port)
        peer_ms = math.nan
        if args.peer_seconds > 0:
            peer_ms, peer_rate, peer_n = peer_run(port, recording, args)
            print(
                f"bare paho subscriber: {peer_n} messages in {args.peer_seconds:.0f} s "
                f"({peer_rate:.0f} msg/s), {peer_ms:.3f} ms CPU/msg; load {load()}"
            )
        if args.victoriametrics:
            victoria, victoria_port = start_victoriametrics(work)
            stores.append(victoria)
            tsdb = f"victoriametrics://127.0.0.1:{victoria_port}"
        else:
            tsdb = None
        if args.postgres:
            with postgres_database(args.postgres_url) as db:
                collector_run(work, port, recording, args, db, tsdb, peer_ms)
        else:
            collector_run(work, port, recording, args, None, tsdb, peer_ms)
    finally:
        for collector in list(Collector.running):
            collector.stop()
        print(f"load at the end {load()}")
        syslog.shutdown()
        for store in stores:
            store.terminate()
            store.wait(30)
        broker_process.terminate()
        broker_process.wait(10)
        shutil.rmtree(work, ignore_errors=True)


def start_victoriametrics(work: Path) -> tuple[subprocess.Popen[bytes], int]:
    """VictoriaMetrics on a free port, its data in ``work``: the process and its port."""
    binary = shutil.which("victoria-metrics") or shutil.which("victoriametrics")
    if binary is None:
        raise SystemExit("--victoriametrics: install Debian's victoria-metrics (setup.sh does)")
    port = free_port()
    process = subprocess.Popen(
        [binary, f"-storageDataPath={work / 'victoria'}", f"-httpListenAddr=127.0.0.1:{port}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_for_port(port, timeout_s=30)
    return process, port


def store_cpu_s(db: str | None, work: Path) -> float:
    """CPU seconds so far of the stores outside the collector: the PostgreSQL backends
    serving ``db`` (their process titles name the database) and VictoriaMetrics."""
    total = 0.0
    marks = [str(work / "victoria")] + ([db.rsplit("/", 1)[1]] if db else [])
    candidates = [
        process
        for process in psutil.process_iter(["cmdline"])
        if any(mark in part for part in process.info["cmdline"] or [] for mark in marks)
    ]
    for process in candidates:
        try:
            times = process.cpu_times()
            total += times.user + times.system
        except psutil.Error:
            continue
    return total


def district_collectors(
    work: Path,
    port: int,
    recording: Path,
    args: argparse.Namespace,
    db: str | None,
    tsdb: str | None,
    alert_sites: list[str],
) -> list[Collector]:
    """The collectors of the live run, not started. More than one: an ``[ownership]``
    config shared by all, every site published to dealt round-robin into one partition per
    collector, the k-th preferred by ``collector-k``."""
    count = args.collectors
    names = ["district"] if count == 1 else [f"district-{k}" for k in range(1, count + 1)]
    collectors = []
    for name in names:
        collector = Collector(work, name, f"mqtt://127.0.0.1:{port}", db, None)
        if tsdb:
            collector.command += ["--tsdb", tsdb]
        collector.env |= {
            "CW_COLLECTOR_FORWARDING_CONFIG": str(work / "fwd.yaml"),
            "CW_COLLECTOR_ALERT_GROUP_WAIT_S": "0",
        }
        if not args.with_reports:
            collector.env["CW_COLLECTOR_REPORT_SCHEDULE_INTERVAL_S"] = "0"
        collectors.append(collector)
    if count > 1:
        schools = recorded_sites(recording)
        sites = sorted(schools | set(alert_sites))
        partitions = {f"p{k}": part for k, part in enumerate(round_robin(sites, count), 1)}
        prefer = {f"p{k}": f"collector-{k}" for k in range(1, count + 1)}
        config = work / "ownership.toml"
        config.write_text(ownership_toml("district", partitions, prefer), encoding="utf-8")
        for k, collector in enumerate(collectors, 1):
            collector.command += ["--config", str(config)]
            collector.env["CW_COLLECTOR_COLLECTOR_ID"] = f"collector-{k}"
        sizes = ", ".join(f"{name} {len(part)}" for name, part in partitions.items())
        print(
            f"ownership: {count} collectors; {len(sites)} sites ({len(schools)} schools, "
            f"{len(alert_sites)} alert PCs' sites) in {count} partitions ({sizes} sites)"
        )
    return collectors


def mb(values: list[float]) -> str:
    """A sum of RSS figures, and each when there are several."""
    if len(values) == 1:
        return f"{values[0]:.0f} MB"
    return f"{sum(values):.0f} MB ({' + '.join(f'{v:.0f}' for v in values)})"


def collector_run(
    work: Path,
    port: int,
    recording: Path,
    args: argparse.Namespace,
    db: str | None,
    tsdb: str | None,
    peer_ms: float,
) -> None:
    alert_devices = [f"lab-{n:04d}" for n in range(int(args.duration / args.alert_every) + 1)]
    collectors = district_collectors(
        work, port, recording, args, db, tsdb, [f"s-{device}" for device in alert_devices]
    )
    count = len(collectors)
    if args.warm_up == "seed":
        from campuswatch.collector.db.engine import default_url

        started = time.monotonic()
        (work / "district").mkdir(parents=True, exist_ok=True)
        seeded = seed_register(db or default_url(work / "district"), recording)
        print(f"warm-up: {seeded} devices registered in bulk in {time.monotonic() - started:.0f} s")
    for collector in collectors:  # together: each may wait for the others' partitions
        collector.start(wait=False)
    for collector in collectors:
        collector.wait_ready()

    def each() -> list[dict[str, float]]:
        """Per collector: its stored, duplicates and rejected counters ({} if no answer)."""
        return [scrape_all(c.port, STORED, DUPLICATES, REJECTED) or {} for c in collectors]

    def figures(per: list[dict[str, float]] | None = None) -> dict[str, float]:
        total: dict[str, float] = {}
        for values in each() if per is None else per:
            for family, value in values.items():
                total[family] = total.get(family, 0.0) + value
        return total

    def rss() -> list[float]:
        return [c.rss_mb() for c in collectors]

    wait_for(
        lambda: all(scrape_all(c.port, STORED) is not None for c in collectors),
        60,
        "the collector" if count == 1 else "the collectors",
    )
    if count > 1:
        started = time.monotonic()
        # Every partition's session exists before anything is published to its sites.
        wait_for_owners(collectors, count)
        print(
            f"ownership: each collector runs its partition {time.monotonic() - started:.0f} s "
            f"after answering; load {load()}"
        )
    alerts = MqttConnection("district-alerts", BrokerAddress("127.0.0.1", port, False))
    alerts.start()
    alerts.wait_connected(10)
    for device in alert_devices:  # known PCs: first contact is not what is measured
        payload = encode_message(HealthMessage(device_id=device, site=f"s-{device}"))
        alerts.publish(f"cw/v1/s-{device}/{device}/health", payload, qos=1)
    extra = len(alert_devices)

    started = time.monotonic()
    birth_count = 0
    if args.warm_up == "births":
        births = PublisherProcess(port, recording, "births", 0)
        births.process.join()
        birth_count = births.sent.value
    wait_for(
        lambda: sum(figures().get(f, 0) for f in (STORED, DUPLICATES)) >= birth_count + extra,
        7200,
        "the warm-up messages to be stored",
        2.0,
    )
    print(
        f"warm-up: {birth_count} birth messages and {extra} alert PCs' first reports stored "
        f"in {time.monotonic() - started:.0f} s; collector{'s' if count > 1 else ''} RSS "
        f"{mb(rss())}"
    )

    before_each = each()
    before = figures(before_each)
    cpu_before = [c.cpu_s() for c in collectors]
    store_cpu_before = store_cpu_s(db, work)
    machine_before = psutil.cpu_times()
    publisher = PublisherProcess(port, recording, "cycle", args.rate)
    profiler = None
    if args.profile:
        assert collectors[0].process is not None
        command = [
            str(Path(sys.executable).parent / "py-spy"), "record", "--pid",
            str(collectors[0].process.pid), "--duration", str(int(args.duration)),
            "--rate", "50", "--output", str(args.profile), "--nonblocking",
            "--format", "flamegraph" if args.profile.suffix == ".svg" else "raw",
        ]  # fmt: skip
        profiler = subprocess.Popen(
            command,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    load_started = time.monotonic()
    print(f"load: {args.rate:.0f} msg/s for {args.duration:.0f} s; load {load()}")
    each_header = "  RSS MB each" if count > 1 else ""
    print(f"     t s   RSS MB     sent    stored  backlog{each_header}")
    samples: list[tuple[float, float]] = []
    samples_each: list[list[tuple[float, float]]] = [[] for _ in collectors]
    backlogs: list[tuple[float, int]] = []
    published: dict[str, float] = {}
    published_after: dict[str, float] = {}  # seconds into the load
    next_alert = load_started + args.alert_every / 2
    next_sample = load_started
    alert_index = 0
    while (elapsed := time.monotonic() - load_started) < args.duration:
        now = time.monotonic()
        if now >= next_alert and alert_index < len(alert_devices):
            device = alert_devices[alert_index]
            alert_index += 1
            report = AvMessage(device_id=device, site=f"s-{device}", status="no_av")
            payload = encode_message(report)
            published[device] = time.perf_counter()
            published_after[device] = elapsed
            while alerts.publish(f"cw/v1/s-{device}/{device}/av", payload, qos=1) is None:
                time.sleep(0.01)
            next_alert += args.alert_every
        if now >= next_sample:
            seen = figures()
            stored = int(seen.get(STORED, 0) - before.get(STORED, 0))
            backlog = publisher.sent.value + alert_index - stored
            sizes = rss()
            samples.append((elapsed, sum(sizes)))
            for own, size in zip(samples_each, sizes, strict=True):
                own.append((elapsed, size))
            backlogs.append((elapsed, backlog))
            if len(samples) % 3 == 1:
                sizes_each = "  " + " ".join(f"{v:.0f}" for v in sizes) if count > 1 else ""
                print(
                    f"  {elapsed:6.0f} {sum(sizes):8.1f} {publisher.sent.value:8d} {stored:9d} "
                    f"{backlog:8d}{sizes_each}",
                    flush=True,
                )
            next_sample += SAMPLE_S
        time.sleep(max(0.0, min(next_alert, next_sample) - time.monotonic()))
    publisher.finish()
    sent = publisher.sent.value + alert_index
    acked = publisher.acked.value
    drain_started = time.monotonic()

    def handled() -> float:
        seen = figures()
        return sum(seen.get(f, 0) - before.get(f, 0) for f in (STORED, DUPLICATES, REJECTED))

    try:
        wait_for(lambda: handled() >= sent, args.drain_seconds, "the backlog to drain", 2.0)
    except SystemExit as exc:
        print(f"{exc}: counted as not stored below")
    drain_s = time.monotonic() - drain_started
    after_each = each()
    after = figures(after_each)
    cpu_each = [c.cpu_s() - b for c, b in zip(collectors, cpu_before, strict=True)]
    cpu = sum(cpu_each)
    store_cpu = store_cpu_s(db, work) - store_cpu_before
    busy = machine_busy(machine_before, psutil.cpu_times())
    final_each = rss()
    final_rss = sum(final_each)
    deadline = time.monotonic() + 30
    with arrived:
        while len(arrivals) < len(published) and time.monotonic() < deadline:
            arrived.wait(1)
    if profiler is not None:
        profiler.wait(120)
    alerts.stop()
    for collector in collectors:
        collector.stop()

    stored = int(after.get(STORED, 0) - before.get(STORED, 0))
    duplicates = int(after.get(DUPLICATES, 0) - before.get(DUPLICATES, 0))
    rejected = int(after.get(REJECTED, 0) - before.get(REJECTED, 0))
    lost = sent - stored - duplicates - rejected
    latencies = sorted(
        (arrivals[device] - at) * 1000 for device, at in published.items() if device in arrivals
    )
    middle = min(samples, key=lambda s: abs(s[0] - args.duration / 2))
    worst = max(backlogs, key=lambda b: b[1])
    print(
        f"sent {sent} ({publisher.sent.value / args.duration:.0f} msg/s, {acked} acked by the "
        f"broker), stored {stored}, duplicates {duplicates}, rejected {rejected}, not stored "
        f"{lost} (still queued in Mosquitto, or lost); "
        f"drained {drain_s:.1f} s after publishing stopped"
    )
    print(
        f"backlog: max {worst[1]} at {worst[0]:.0f} s, mean "
        f"{statistics.fmean(b for _, b in backlogs):.0f}, last sample {backlogs[-1][1]}"
    )
    if latencies:
        print(
            f"alerts: {len(latencies)}/{len(published)} forwarded, p50 "
            f"{statistics.median(latencies):.0f} ms, p99 {percentile(latencies, 0.99):.0f} ms, "
            f"max {latencies[-1]:.0f} ms (target p99 < 500 ms)"
        )
        # A collector started cold meets every device's first report (new series, rule
        # state, the first alerts of the PCs at risk) in the recording's first loop; the
        # last third says what a running one does.
        late_from = args.duration * 2 / 3
        late = sorted(
            (arrivals[device] - published[device]) * 1000
            for device, after in published_after.items()
            if after >= late_from and device in arrivals
        )
        late_rss = [size for at, size in samples if at >= late_from]
        if late and late_rss:
            print(
                f"last third (from {late_from:.0f} s): alerts p50 {statistics.median(late):.0f} "
                f"ms, p99 {percentile(late, 0.99):.0f} ms ({len(late)}); backlog max "
                f"{max(b for at, b in backlogs if at >= late_from)}; RSS {late_rss[0]:.1f} → "
                f"{late_rss[-1]:.1f} MB"
            )
    else:
        print(f"alerts: none of {len(published)} reached the syslog receiver")
    label = "collector RSS" if count == 1 else f"collectors RSS (sum of {count})"
    print(
        f"{label}: start {samples[0][1]:.1f} MB, middle {middle[1]:.1f} MB, end "
        f"{samples[-1][1]:.1f} MB, after drain {final_rss:.1f} MB; slope "
        f"{slope_per_10_min(samples):+.1f} MB/10 min"
    )
    if count > 1:
        for k, (own, end_rss, cpu_s) in enumerate(
            zip(samples_each, final_each, cpu_each, strict=True)
        ):
            mine = {
                f: after_each[k].get(f, 0) - before_each[k].get(f, 0)
                for f in (STORED, DUPLICATES, REJECTED)
            }
            print(
                f"  collector-{k + 1}: stored {mine[STORED]:.0f}, duplicates "
                f"{mine[DUPLICATES]:.0f}, rejected {mine[REJECTED]:.0f}; CPU {cpu_s:.1f} s "
                f"({cpu_s * 1000 / max(mine[STORED], 1):.3f} ms/stored msg); RSS start "
                f"{own[0][1]:.1f} MB, end {own[-1][1]:.1f} MB, after drain {end_rss:.1f} MB; "
                f"slope {slope_per_10_min(own):+.1f} MB/10 min"
            )
    collector_ms = cpu * 1000 / max(stored, 1)
    who = "collector" if count == 1 else f"collectors ({count} processes)"
    print(
        f"CPU per message: {who} {collector_ms:.3f} ms/stored msg, bare paho subscriber "
        f"{peer_ms:.3f} ms/msg ({collector_ms / peer_ms:.1f}x); publisher "
        f"{publisher.cpu_s.value * 1000 / max(publisher.sent.value, 1):.3f} ms/msg; machine "
        f"busy {busy:.0%}; load {load()}"
    )
    if db or tsdb:
        stores = " and ".join(
            name for name, used in (("PostgreSQL", db), ("VictoriaMetrics", tsdb)) if used
        )
        print(
            f"CPU per message in the stores ({stores}, other processes): "
            f"{store_cpu * 1000 / max(stored, 1):.3f} ms/stored msg"
        )


if __name__ == "__main__":
    main()
