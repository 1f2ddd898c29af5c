"""Running a simulation against a real broker, with a live progress line."""

from __future__ import annotations

import json
import logging
import signal
import sys
import threading
import time
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Literal, TextIO

import psutil

from campuswatch import __version__
from campuswatch.firmware_sim.engine import Simulator
from campuswatch.firmware_sim.fleet import build_fleet
from campuswatch.firmware_sim.scenario import Scenario
from campuswatch.firmware_sim.schoolday import SCHOOL_TIMEZONE, SimClock
from campuswatch.firmware_sim.transport import GatewayTransport, PerDeviceTransport, Transport
from campuswatch.wire.ids import utc_now
from campuswatch.wire.mqtt import TlsOptions, parse_broker_url
from campuswatch.wire.mqtt_pool import MqttPool, raise_open_file_limit

log = logging.getLogger(__name__)
Mode = Literal["per-device", "gateway"]
# Per pooled connection: its socket, plus headroom for the broker's own and Python's files.
FILES_PER_CLIENT = 1
FILE_HEADROOM = 256
GOODBYE_S = 5.0


@dataclass(frozen=True, slots=True)
class RunSettings:
    broker: str
    schools: int = 1
    devices: int = 100
    seed: int = 1
    speed: float = 1.0
    interval_s: float = 60.0
    mode: Mode = "per-device"
    duration_s: float | None = None
    site_prefix: str = "sim-d1"
    start: datetime | None = None
    progress_every_s: float = 5.0
    ca_file: str | None = None
    """CA certificate of an mqtts:// broker; None for the system's CAs."""


@dataclass(frozen=True, slots=True)
class RunSummary:
    mode: str
    devices: int
    connections: int
    connected_before_stop: int
    """Connections up when the stop came (all of them close cleanly after that)."""
    wall_seconds: float
    sent_total: int
    acked_total: int
    msg_per_s: float
    errors: int
    rss_bytes: int
    cpu_seconds: float


def run_simulation(
    settings: RunSettings,
    scenario: Scenario | None = None,
    *,
    stream: TextIO = sys.stderr,
    stop: threading.Event | None = None,
) -> RunSummary:
    broker = parse_broker_url(settings.broker)
    fleet = build_fleet(
        seed=settings.seed,
        schools=settings.schools,
        devices=settings.devices,
        site_prefix=settings.site_prefix,
    )
    raise_open_file_limit(settings.devices + settings.schools + FILE_HEADROOM)
    pool = MqttPool(broker, tls=TlsOptions(ca_file=settings.ca_file))
    transport: Transport = (
        GatewayTransport(pool, __version__)
        if settings.mode == "gateway"
        else PerDeviceTransport(pool)
    )
    start = settings.start or (scenario.start if scenario and scenario.start else None) or utc_now()
    clock = SimClock(start, settings.speed)
    simulator = Simulator(
        fleet,
        transport,
        clock,
        seed=settings.seed,
        interval_s=settings.interval_s,
        scenario=scenario,
    )
    stop = stop or threading.Event()
    process = psutil.Process()
    started = time.monotonic()
    last_line = [started, 0]

    def progress(final: bool = False) -> None:
        now = time.monotonic()
        stats = pool.stats
        rate = (simulator.stats.sent_total - last_line[1]) / max(1e-6, now - last_line[0])
        last_line[:] = [now, simulator.stats.sent_total]
        errors = (
            stats.connect_failures_total
            + stats.callback_errors_total
            + simulator.stats.refused_total
        )
        stream.write(
            f"{'done' if final else 'sim'} "
            f"{clock.now().astimezone(SCHOOL_TIMEZONE):%a %Y-%m-%d %H:%M} "
            f"x{settings.speed:g} | connected {stats.connected}/{len(pool.clients)} "
            f"| sent {simulator.stats.sent_total} ({rate:.0f}/s) acked {stats.acked_total} "
            f"| errors {errors} | scenario steps {simulator.stats.steps_done}"
            f"/{len(scenario.steps) if scenario else 0} "
            f"| rss {process.memory_info().rss / 2**20:.0f} MB\n"
        )
        stream.flush()

    next_progress = [started + settings.progress_every_s]

    goodbye_started: list[float] = []
    connected_before_stop = [0]

    def tick() -> float:
        if settings.duration_s is not None and time.monotonic() - started >= settings.duration_s:
            stop.set()
        if stop.is_set():
            # Say goodbye like a switched-off device (retained "offline, shutdown", then
            # DISCONNECT so no will fires), give the sockets a moment to drain, then stop.
            if not goodbye_started:
                goodbye_started.append(time.monotonic())
                connected_before_stop[0] = pool.stats.connected
                simulator.shutdown()
            elif pool.stats.connected == 0 or time.monotonic() - goodbye_started[0] > GOODBYE_S:
                pool.stop(timeout_s=0)
            return 0.05
        wait = simulator.step()
        if time.monotonic() >= next_progress[0]:
            next_progress[0] += settings.progress_every_s
            progress()
        return wait

    def request_stop(signum: int, frame: object) -> None:
        stop.set()

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, request_stop)
        signal.signal(signal.SIGTERM, request_stop)
    simulator.start()
    pool.run(tick)
    progress(final=True)
    cpu = process.cpu_times()
    wall = time.monotonic() - started
    stats = pool.stats
    return RunSummary(
        mode=settings.mode,
        devices=len(fleet.devices) + len(fleet.scanners),
        connections=len(pool.clients),
        connected_before_stop=connected_before_stop[0],
        wall_seconds=round(wall, 2),
        sent_total=simulator.stats.sent_total,
        acked_total=stats.acked_total,
        msg_per_s=round(simulator.stats.sent_total / max(wall, 1e-6), 1),
        errors=stats.connect_failures_total
        + stats.callback_errors_total
        + simulator.stats.refused_total,
        rss_bytes=process.memory_info().rss,
        cpu_seconds=round(cpu.user + cpu.system, 2),
    )


def write_summary(summary: RunSummary, path: Path) -> None:
    path.write_text(json.dumps(asdict(summary), indent=2) + "\n", encoding="utf-8")
