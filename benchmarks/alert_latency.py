"""Alert latency: MQTT publish of an AV report → CEF line at a real syslog receiver.

A private Mosquitto, a collector process (shipped rules, SQLite defaults, a TCP syslog
destination, ``group_wait`` 0 so the SOC is told at once instead of after the default 30 s
grouping pause), a syslog receiver in this process, and a background publisher process
sending health reports from ``--background-devices`` PCs at ``--background`` msg/s. Once
the load runs, ``--alerts`` known PCs (each at its own school, so each alert opens its own
group and its "opened" line names that PC) report "no antivirus" one every ``--interval``
seconds; for each, the time from publish to the CEF line naming it is measured.
Target (issue 5): p99 < 500 ms.

    .venv/bin/python benchmarks/alert_latency.py --alerts 200 --background 2000
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import re
import shutil
import socketserver
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from multiprocessing.sharedctypes import Synchronized
from multiprocessing.synchronize import Event as ProcessEvent
from pathlib import Path

from campuswatch.localports import free_port, wait_for_port
from campuswatch.wire import AvMessage, HealthMessage, encode_message
from campuswatch.wire.mqtt import BrokerAddress, MqttConnection

arrivals: dict[str, float] = {}
arrived = threading.Condition()


class OctetCountingHandler(socketserver.StreamRequestHandler):
    """RFC 6587 octet counting (``LEN SP MSG``); notes when a CEF line names a device."""

    def handle(self) -> None:
        while True:
            length = b""
            while (char := self.rfile.read(1)) not in (b" ", b""):
                length += char
            if not length:
                return
            frame = self.rfile.read(int(length)).decode("utf-8", errors="replace")
            now = time.perf_counter()
            marker = "deviceExternalId="
            if marker in frame:
                device = frame.split(marker, 1)[1].split(" ", 1)[0]
                with arrived:
                    arrivals.setdefault(device, now)
                    arrived.notify_all()


def background_load(
    port: int, rate: float, devices: int, stop: ProcessEvent, sent: Synchronized[int]
) -> None:
    """In its own process, so its CPU use does not delay this one's receiver."""
    broker = BrokerAddress("127.0.0.1", port, False)
    window = threading.BoundedSemaphore(1000)
    connection = MqttConnection(
        f"latency-load-{os.getpid()}",
        broker,
        max_inflight=1000,
        on_published=lambda _mid: window.release(),
    )
    connection.start()
    connection.wait_connected(10)
    started = time.perf_counter()
    n = 0
    while not stop.is_set():
        due = int((time.perf_counter() - started) * rate)
        while n < due and not stop.is_set():
            device = f"bg-{n % devices:05d}"
            site = f"bench-{(n % devices) // 50:03d}"
            payload = encode_message(HealthMessage(device_id=device, site=site, cpu_pct=1.0))
            window.acquire()
            while connection.publish(f"cw/v1/{site}/{device}/health", payload, qos=1) is None:
                time.sleep(0.01)  # reconnecting
            n += 1
            sent.value = n
        time.sleep(0.002)
    connection.stop()


def scrape(port: int, family: str) -> float:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read()
    pattern = rb"^" + re.escape(family.encode()) + rb"(?:\{[^}]*\})? ([0-9.e+-]+)$"
    return sum(float(v) for v in re.findall(pattern, text, flags=re.MULTILINE))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--alerts", type=int, default=200)
    parser.add_argument("--interval", type=float, default=0.1, help="s between alerts")
    parser.add_argument("--background", type=float, default=2000.0, help="msg/s of load")
    parser.add_argument("--background-devices", type=int, default=1000)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="cw-latency-"))
    port = free_port()
    (work / "mosquitto.conf").write_text(
        f"listener {port} 127.0.0.1\nallow_anonymous true\nmax_queued_messages 0\n"
        "max_inflight_messages 0\nmax_queued_bytes 0\n",
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
    http_port = free_port()
    collector_log = (work / "collector.log").open("ab")
    command = [
        sys.executable, "-m", "campuswatch", "collector", "run",
        "--broker", f"mqtt://127.0.0.1:{port}", "--data-dir", str(work / "collector"),
        "--listen", f"127.0.0.1:{http_port}", "--log-level", "WARNING",
    ]  # fmt: skip
    collector = subprocess.Popen(
        command,
        env={
            **os.environ,
            "CW_COLLECTOR_FORWARDING_CONFIG": str(work / "fwd.yaml"),
            "CW_COLLECTOR_ALERT_GROUP_WAIT_S": "0",
        },
        stdout=collector_log,
        stderr=collector_log,
    )
    spawn = multiprocessing.get_context("spawn")  # no fork of a process with threads
    stop = spawn.Event()
    sent = spawn.Value("q", 0)
    load = spawn.Process(
        target=background_load,
        args=(port, args.background, args.background_devices, stop, sent),
        daemon=True,
    )
    published: dict[str, float] = {}
    print(
        f"{time.strftime('%Y-%m-%d %H:%M:%S')}, cpus {os.cpu_count()}, load "
        + " ".join(f"{value:.2f}" for value in os.getloadavg())
    )
    try:
        wait_for_port(port)
        wait_for_port(http_port, timeout_s=60)
        publisher = MqttConnection("latency-alerts", BrokerAddress("127.0.0.1", port, False))
        publisher.start()
        publisher.wait_connected(10)
        devices = [f"lab-{n:04d}" for n in range(args.alerts)]
        for device in devices:  # known PCs: first contact is not what is measured
            payload = encode_message(HealthMessage(device_id=device, site=f"s-{device}"))
            publisher.publish(f"cw/v1/s-{device}/{device}/health", payload, qos=1)
        load.start()
        # Every background PC known too, and the collector caught up, before the first alert.
        settle_until = time.monotonic() + 300
        while True:
            target = sent.value + args.alerts
            time.sleep(1.0)
            stored = scrape(http_port, "campuswatch_ingest_messages_stored_total")
            if sent.value >= args.background_devices and stored >= target:
                break
            if time.monotonic() > settle_until:
                raise SystemExit(
                    f"the collector does not keep up with {args.background:.0f} msg/s: "
                    f"{sent.value - stored:.0f} messages behind after 5 minutes"
                )
        stored_before = scrape(http_port, "campuswatch_ingest_messages_stored_total")
        busy_before = scrape(http_port, "campuswatch_ingest_batch_seconds_total")
        sent_before, started = sent.value, time.perf_counter()
        for device in devices:
            report = AvMessage(device_id=device, site=f"s-{device}", status="no_av")
            payload = encode_message(report)
            published[device] = time.perf_counter()
            while publisher.publish(f"cw/v1/s-{device}/{device}/av", payload, qos=1) is None:
                time.sleep(0.01)  # reconnecting; counts against the alert's latency
            time.sleep(args.interval)
        elapsed = time.perf_counter() - started
        sent_rate = (sent.value - sent_before) / elapsed
        stored_rate = (
            scrape(http_port, "campuswatch_ingest_messages_stored_total") - stored_before
        ) / elapsed
        stored_after = scrape(http_port, "campuswatch_ingest_messages_stored_total")
        # Share of the time the ingest thread spent storing batches (alert evaluation is
        # part of a batch): the closer to 1, the longer a new message waits its turn.
        busy = (scrape(http_port, "campuswatch_ingest_batch_seconds_total") - busy_before) / elapsed
        backlog = sent.value + 2 * args.alerts - stored_after  # + the PCs' health and AV
        deadline = time.monotonic() + 60
        with arrived:
            while len(arrivals) < args.alerts and time.monotonic() < deadline:
                arrived.wait(1)
        publisher.stop()
    finally:
        stop.set()
        if load.pid is not None:
            load.join(10)
        for _ in range(30):  # SIGTERM again while waiting: one has been seen to sit one out
            collector.terminate()
            try:
                collector.wait(2)
                break
            except subprocess.TimeoutExpired:
                continue
        else:
            print("collector ignored SIGTERM for 60 s; killed")
            collector.kill()
            collector.wait(10)
        collector_log.close()
        lines = (work / "collector.log").read_text(errors="replace").splitlines()
        errors = [line for line in lines if " ERROR " in line]
        if errors:
            # The exception line of each traceback: the first unindented line after it.
            causes = sorted(
                {
                    next((rest for rest in lines[n + 1 :] if not rest.startswith(" ")), "")[:200]
                    for n, line in enumerate(lines)
                    if line.startswith("Traceback")
                }
            )
            print(f"collector log: {len(errors)} errors: {errors[0][:200]}; causes: {causes}")
        syslog.shutdown()
        broker_process.terminate()
        broker_process.wait(10)
        shutil.rmtree(work, ignore_errors=True)
    latencies = sorted(
        (arrivals[device] - sent_at) * 1000
        for device, sent_at in published.items()
        if device in arrivals
    )
    if not latencies:
        raise SystemExit("no alert reached the syslog receiver")
    p99 = latencies[min(len(latencies) - 1, round(len(latencies) * 0.99) - 1)]
    print(
        f"background: {sent_rate:.0f} msg/s published, {stored_rate:.0f} msg/s stored by the "
        f"collector during the alerts, {backlog:.0f} published but not yet stored at the end; "
        f"ingest thread busy storing {busy:.0%} of the time"
    )
    print(
        f"{len(latencies)}/{args.alerts} alerts delivered: p50 {statistics.median(latencies):.0f}"
        f" ms, p99 {p99:.0f} ms, max {latencies[-1]:.0f} ms (target p99 < 500 ms); load "
        + " ".join(f"{value:.2f}" for value in os.getloadavg())
    )


if __name__ == "__main__":
    main()
