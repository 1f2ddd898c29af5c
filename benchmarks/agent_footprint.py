"""Agent footprint: RSS and CPU share at default intervals, beside prometheus-node-exporter.

Runs for a few minutes (``--duration``), both processes started by this script on loopback:
a private Mosquitto for the agent to publish to, the agent with its default probe intervals
(connectivity targets pointed at a local HTTP server, as this machine has no Internet), and
Debian's prometheus-node-exporter scraped every 15 s as a Prometheus server would.
Targets (issue 3): agent RSS <= 35 MB and <= 0.1 % of one core.

    .venv/bin/python benchmarks/agent_footprint.py --duration 180
"""

from __future__ import annotations

import argparse
import http.server
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import psutil

from campuswatch.localports import free_port, wait_for_port


class Sampler:
    def __init__(self, pid: int) -> None:
        self.process = psutil.Process(pid)
        self.rss: list[int] = []
        times = self.process.cpu_times()
        self.cpu_start = times.user + times.system
        self.wall_start = time.monotonic()

    def sample(self) -> None:
        self.rss.append(self.process.memory_info().rss)

    def cpu_share_pct(self) -> float:
        times = self.process.cpu_times()
        used = times.user + times.system - self.cpu_start
        return 100.0 * used / (time.monotonic() - self.wall_start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=180.0, help="seconds to measure")
    parser.add_argument("--warmup", type=float, default=20.0, help="seconds before measuring")
    args = parser.parse_args()

    mosquitto = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    exporter = shutil.which("prometheus-node-exporter")
    work = Path(tempfile.mkdtemp(prefix="cw-footprint-"))
    processes: list[subprocess.Popen[bytes]] = []
    try:
        broker_port = free_port()
        (work / "mosquitto.conf").write_text(
            f"listener {broker_port} 127.0.0.1\nallow_anonymous true\n", encoding="utf-8"
        )
        processes.append(
            subprocess.Popen(
                [mosquitto, "-c", str(work / "mosquitto.conf")],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )
        wait_for_port(broker_port)

        class NoContent(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(204)
                self.end_headers()

            def log_message(self, *_: object) -> None:
                pass

        web = http.server.ThreadingHTTPServer(("127.0.0.1", 0), NoContent)
        threading.Thread(target=web.serve_forever, daemon=True).start()
        target = f"http://127.0.0.1:{web.server_address[1]}/generate_204"
        config = work / "agent.toml"
        config.write_text(
            f'site = "bench"\nstate_dir = "{work / "state"}"\n'
            f'[net]\ndns_names = ["localhost"]\nhttp_targets = ["{target}"]\n',
            encoding="utf-8",
        )
        agent = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "campuswatch",
                "agent",
                "run",
                "--broker",
                f"mqtt://127.0.0.1:{broker_port}",
                "--config",
                str(config),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        processes.append(agent)
        node_exporter = None
        exporter_port = free_port()
        if exporter:
            node_exporter = subprocess.Popen(
                [exporter, f"--web.listen-address=127.0.0.1:{exporter_port}"],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            processes.append(node_exporter)
            wait_for_port(exporter_port)
        print(
            f"warming up {args.warmup:.0f} s (agent collects every probe at start) ...",
            file=sys.stderr,
        )
        time.sleep(args.warmup)
        samplers = {"campuswatch agent": Sampler(agent.pid)}
        if node_exporter:
            samplers["prometheus-node-exporter"] = Sampler(node_exporter.pid)
        deadline = time.monotonic() + args.duration
        next_scrape = time.monotonic()
        while time.monotonic() < deadline:
            for sampler in samplers.values():
                sampler.sample()
            if node_exporter and time.monotonic() >= next_scrape:
                urllib.request.urlopen(f"http://127.0.0.1:{exporter_port}/metrics").read()
                next_scrape += 15
            time.sleep(1)
            if agent.poll() is not None:
                raise SystemExit("the agent exited during the run")
        print(
            f"\nagent footprint over {args.duration:.0f} s at default intervals "
            f"(cpus: {os.cpu_count()})"
        )
        print(f"{'process':28} {'RSS mean MB':>12} {'RSS max MB':>11} {'CPU % of a core':>16}")
        results = {}
        for name, sampler in samplers.items():
            mean = statistics.fmean(sampler.rss) / 1e6
            peak = max(sampler.rss) / 1e6
            cpu = sampler.cpu_share_pct()
            results[name] = (mean, cpu)
            print(f"{name:28} {mean:12.1f} {peak:11.1f} {cpu:16.3f}")
        if len(results) == 2:
            (agent_rss, agent_cpu), (peer_rss, peer_cpu) = results.values()
            print(
                f"ratio agent / node-exporter: RSS {agent_rss / peer_rss:.2f}x, "
                f"CPU {agent_cpu / peer_cpu if peer_cpu else float('inf'):.2f}x"
            )
        else:
            print("prometheus-node-exporter not installed: no peer measured")
        print("targets: RSS <= 35 MB, CPU <= 0.1 % of one core")
    finally:
        for process in reversed(processes):
            process.terminate()
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
