"""Agent footprint: RSS and CPU share at default intervals, beside prometheus-node-exporter.

Runs for a few minutes (``--duration``), both processes started by this script on loopback:
a private Mosquitto for the agent to publish to, the agent with its default probe intervals
(connectivity targets pointed at a local HTTP server, as this machine has no Internet), and
Debian's prometheus-node-exporter scraped every 15 s as a Prometheus server would, and the
floor: an idle Python that imported paho-mqtt and psutil, which no Python agent can go below.
The agent runs with ``-X importtime``; the heaviest imports are printed after the figures.
Targets (issue 18): agent RSS <= 25 MB and <= 0.05 % of one core.

By default the agent and the floor run in a throwaway venv that holds only what
``pip install campuswatch`` puts on a lab PC (msgspec, paho-mqtt and psutil linked from the
current environment; this source tree copied and byte-compiled, as pip does): a development
venv also has typing_extensions, which msgspec then imports (with inspect, ~0.5 MB) although
no lab PC has it.
``--environment current`` measures in the running interpreter's environment instead.

    .venv/bin/python benchmarks/agent_footprint.py --seconds 180
"""

from __future__ import annotations

import argparse
import http.server
import importlib.metadata
import importlib.util
import os
import re
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

TARGET_RSS_MB = 25.0
TARGET_CPU_PCT = 0.05
FLOOR_PROGRAM = (
    "import sys, paho.mqtt.client, psutil\n"
    "print('ready', flush=True)\n"
    "sys.stdin.read()\n"  # idle until the benchmark closes the pipe
)


def heaviest_imports(import_log: Path, count: int) -> list[str]:
    """Top-level imports (no indentation in -X importtime's tree) by cumulative time."""
    rows: list[tuple[int, str]] = []
    for line in import_log.read_text(encoding="utf-8", errors="replace").splitlines():
        if not line.startswith("import time:") or "|" not in line:
            continue
        _, cumulative, name = line.split("|", 2)
        if cumulative.strip().isdigit() and not name.startswith("  "):
            rows.append((int(cumulative), name.strip()))
    modules = sum(
        1
        for line in import_log.read_text(errors="replace").splitlines()
        if line.startswith("import time:") and "self [us]" not in line
    )
    top = [f"{us:>9} {name}" for us, name in sorted(rows, reverse=True)[:count]]
    return [f"{modules} modules imported", *top]


def _distribution_closure(name: str) -> set[str]:
    """``name`` and what it requires, without extras (what pip installs for it)."""
    seen: set[str] = set()
    pending = [name]
    while pending:
        current = pending.pop()
        key = current.lower().replace("_", "-")
        if key in seen:
            continue
        seen.add(key)
        for requirement in importlib.metadata.requires(current) or []:
            if "extra ==" not in requirement:
                pending.append(re.split(r"[<>=!~ ;\[(]", requirement, maxsplit=1)[0])
    return seen


def agent_only_python(work: Path) -> str:
    """A venv with only the agent's install (no extras), its packages linked from this one."""
    venv = work / "agent-venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    site_packages = next(venv.glob("lib/python3*/site-packages"))
    wanted = _distribution_closure("campuswatch") - {"campuswatch"}
    for module, distributions in importlib.metadata.packages_distributions().items():
        if not {d.lower().replace("_", "-") for d in distributions} & wanted:
            continue
        spec = importlib.util.find_spec(module)
        if spec is None or (spec.origin is None and not spec.submodule_search_locations):
            continue
        locations = list(spec.submodule_search_locations or [])
        source = Path(locations[0]) if locations else Path(str(spec.origin))
        (site_packages / source.name).symlink_to(source)
    campuswatch = importlib.util.find_spec("campuswatch")
    assert campuswatch is not None and campuswatch.submodule_search_locations
    source_tree = next(iter(campuswatch.submodule_search_locations))
    # Copied and byte-compiled, as pip installs it: a linked tree without __pycache__ (this
    # environment sets PYTHONDONTWRITEBYTECODE) is compiled at every start, which a lab PC
    # never does (0 to 0.5 MB of the compiler's garbage in the runs measured).
    installed = site_packages / "campuswatch"
    shutil.copytree(source_tree, installed, ignore=shutil.ignore_patterns("__pycache__"))
    python = str(venv / "bin" / "python")
    subprocess.run([python, "-m", "compileall", "-q", str(installed)], check=True)
    return python


class Sampler:
    def __init__(self, pid: int) -> None:
        self.process = psutil.Process(pid)
        self.rss: list[int] = []
        self.threads: list[int] = []
        times = self.process.cpu_times()
        self.cpu_start = times.user + times.system
        self.wall_start = time.monotonic()

    def sample(self) -> None:
        self.rss.append(self.process.memory_info().rss)
        self.threads.append(self.process.num_threads())

    def cpu_share_pct(self) -> float:
        times = self.process.cpu_times()
        used = times.user + times.system - self.cpu_start
        return 100.0 * used / (time.monotonic() - self.wall_start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--seconds",
        "--duration",
        dest="duration",
        type=float,
        default=180.0,
        help="seconds to measure",
    )
    parser.add_argument("--warmup", type=float, default=20.0, help="seconds before measuring")
    parser.add_argument(
        "--environment",
        choices=("agent-only", "current"),
        default="agent-only",
        help="agent-only: a venv with only the agent's dependencies, as on a lab PC (default); "
        "current: this interpreter's environment",
    )
    args = parser.parse_args()

    mosquitto = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    exporter = shutil.which("prometheus-node-exporter")
    work = Path(tempfile.mkdtemp(prefix="cw-footprint-"))
    processes: list[subprocess.Popen[bytes]] = []
    try:
        python = sys.executable if args.environment == "current" else agent_only_python(work)
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
        import_log = (work / "agent-imports.txt").open("wb")
        agent = subprocess.Popen(
            [
                python,
                "-X",
                "importtime",
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
            stderr=import_log,
        )
        processes.append(agent)
        floor = subprocess.Popen(
            [python, "-c", FLOOR_PROGRAM], stdin=subprocess.PIPE, stdout=subprocess.PIPE
        )
        processes.append(floor)
        assert floor.stdout is not None
        floor.stdout.readline()  # imports done
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
        samplers["floor: python+paho+psutil"] = Sampler(floor.pid)
        load_before = os.getloadavg()[0]
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
            f"(cpus: {os.cpu_count()}, load average {load_before:.2f} -> {os.getloadavg()[0]:.2f})"
        )
        compiled = " campuswatch copied, byte-compiled" if args.environment == "agent-only" else ""
        print(f"environment: {args.environment} ({python}){compiled}")
        print(f"{'process':28} {'RSS mean MB':>12} {'RSS max MB':>11} {'CPU % of a core':>16}")
        results = {}
        for name, sampler in samplers.items():
            mean = statistics.fmean(sampler.rss) / 1e6
            peak = max(sampler.rss) / 1e6
            cpu = sampler.cpu_share_pct()
            results[name] = (mean, peak, cpu)
            print(f"{name:28} {mean:12.1f} {peak:11.1f} {cpu:16.3f}")
        agent_rss, agent_peak, agent_cpu = results["campuswatch agent"]
        agent_threads = samplers["campuswatch agent"].threads
        # Each thread costs a stack; probe threads exist only while a probe collects.
        print(
            f"agent threads: {statistics.median(agent_threads):.0f} most of the time, "
            f"{max(agent_threads)} at most"
        )
        floor_rss = results["floor: python+paho+psutil"][0]
        print(f"agent above the floor: {agent_rss - floor_rss:.1f} MB")
        peer = results.get("prometheus-node-exporter")
        if peer is not None:
            print(
                f"ratio agent / node-exporter: RSS {agent_rss / peer[0]:.2f}x, "
                f"CPU {agent_cpu / peer[2] if peer[2] else float('inf'):.2f}x"
            )
        else:
            print("prometheus-node-exporter not installed: no peer measured")
        for what, value, limit, unit in (
            ("RSS (max)", agent_peak, TARGET_RSS_MB, "MB"),
            ("CPU", agent_cpu, TARGET_CPU_PCT, "% of a core"),
        ):
            verdict = "met" if value <= limit else "NOT met"
            print(f"target {what} <= {limit:g} {unit}: {verdict} ({value:.3f})")
        print(
            "CPU shares this small are noisy: other processes on the machine (see the load "
            "average) and 10 ms accounting ticks move them; compare runs, not single figures."
        )
        import_log.close()
        print("\nheaviest imports of the agent (-X importtime, cumulative microseconds):")
        for line in heaviest_imports(work / "agent-imports.txt", 12):
            print(f"  {line}")
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
