"""How many simulated devices one process holds: connected devices, msg/s, RSS and CPU.

Starts a private Mosquitto on a free port (``max_connections -1``, open-file limit raised),
runs ``campuswatch sim run`` as a child process for each size and mode, and prints what the
child reports (messages the broker acknowledged) and what the OS says about the child.

    .venv/bin/python benchmarks/sim_scale.py                  # 1k, 5k, 10k; both modes
    .venv/bin/python benchmarks/sim_scale.py --sizes 1000 --seconds 30

The load is one report per device per simulated minute (``--interval 60``), accelerated by
``--speed`` so a short run carries a meaningful rate; lab PCs add an av/net pair every fifth
report. By default the speed is 10 (ten reports per device per real minute) up to 19,800
devices, and above that whatever makes the fleet's reports ``--target-rate`` msg/s (3,300:
a district of 100,000 devices reporting twice a minute): one Python process publishes a few
thousand QoS 1 messages a second, so 100,000 devices at speed 10 (16,700 msg/s) would only
measure a process that cannot keep up. Every device first sends its births (hello, state,
inventory: 300,000 messages for 100,000 devices) before its reports, so large fleets need
``--seconds`` of a few minutes.

    .venv/bin/python benchmarks/sim_scale.py --sizes 100000 --modes gateway --seconds 240
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def raise_file_limit(wanted: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, wanted), max(hard, wanted)))
    except (ValueError, OSError):  # not root: as high as the hard limit allows
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def start_broker(workdir: Path) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    config = workdir / "mosquitto.conf"
    config.write_text(
        f"listener {port} 127.0.0.1\nallow_anonymous true\nmax_connections -1\n"
        "user root\npersistence false\nmax_queued_messages 100000\n",
        encoding="utf-8",
    )
    log = (workdir / "mosquitto.log").open("ab")
    broker = subprocess.Popen([MOSQUITTO, "-c", str(config)], stdout=log, stderr=log)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return broker, port
        time.sleep(0.05)
    broker.kill()
    raise SystemExit("mosquitto did not start; see " + str(workdir / "mosquitto.log"))


def run_once(
    port: int, devices: int, mode: str, args: argparse.Namespace, workdir: Path
) -> dict[str, object]:
    summary_path = workdir / f"summary-{mode}-{devices}.json"
    schools = max(1, devices // 300)
    command = [
        sys.executable,
        "-m",
        "campuswatch.firmware_sim",
        "run",
        "--broker",
        f"mqtt://127.0.0.1:{port}",
        "--devices",
        str(devices),
        "--schools",
        str(schools),
        "--seed",
        "1",
        "--speed",
        str(speed_for(devices, args)),
        "--interval",
        "60",
        "--mode",
        mode,
        "--duration",
        str(args.seconds),
        "--summary-json",
        str(summary_path),
        "--progress-every",
        "10",
        "--start",
        "2025-03-04T09:00:00+07:00",
    ]
    child = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
    process = psutil.Process(child.pid)
    peak_rss = 0
    while child.poll() is None:
        try:
            peak_rss = max(peak_rss, process.memory_info().rss)
        except psutil.NoSuchProcess:
            break
        time.sleep(0.5)
    stderr = child.stderr.read() if child.stderr else ""
    if child.returncode != 0 or not summary_path.exists():
        raise SystemExit(f"simulator failed ({child.returncode}):\n{stderr[-3000:]}")
    summary = json.loads(summary_path.read_text(encoding="utf-8"))
    summary["peak_rss_mb"] = round(peak_rss / 2**20, 1)
    summary["cpu_pct"] = round(100 * summary["cpu_seconds"] / summary["wall_seconds"], 1)
    summary["last_progress"] = [line for line in stderr.splitlines() if line.startswith("sim ")][
        -1:
    ]
    return summary


def speed_for(devices: int, args: argparse.Namespace) -> float:
    if args.speed is not None:
        return float(args.speed)
    return round(min(10.0, args.target_rate * 60.0 / devices), 3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 5000, 10000])
    parser.add_argument("--modes", nargs="+", default=["per-device", "gateway"])
    parser.add_argument("--seconds", type=float, default=60.0, help="real seconds per run")
    parser.add_argument("--speed", type=float, help="fixed speed (default: see above)")
    parser.add_argument(
        "--target-rate", type=float, default=3300.0, help="report msg/s the speed aims at"
    )
    args = parser.parse_args()
    raise_file_limit(max(args.sizes) * 2 + 1024)
    with tempfile.TemporaryDirectory(prefix="cw-sim-bench-") as temp:
        workdir = Path(temp)
        broker, port = start_broker(workdir)
        try:
            print(
                f"{'mode':<11}{'devices':>8}{'conns':>7}{'connected':>10}{'msg/s':>9}"
                f"{'acked':>9}{'errors':>7}{'peak RSS MB':>12}{'CPU %':>7}{'speed':>7}"
            )
            for devices in args.sizes:
                for mode in args.modes:
                    s = run_once(port, devices, mode, args, workdir)
                    print(
                        f"{mode:<11}{s['devices']:>8}{s['connections']:>7}{s['connected_before_stop']:>10}"
                        f"{s['msg_per_s']:>9}{s['acked_total']:>9}{s['errors']:>7}{s['peak_rss_mb']:>12}{s['cpu_pct']:>7}"
                        f"{speed_for(devices, args):>7}",
                        flush=True,
                    )
        finally:
            broker.terminate()
            broker.wait(10)


if __name__ == "__main__":
    main()
