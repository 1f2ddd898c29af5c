"""docs/deploy.md followed as written, as far as a container without systemd allows.

The guide's own shell blocks are run (steps 3, 6, 8, 11, 12), Mosquitto is started by the
command of the guide's systemd drop-in (as root: it drops to the ``mosquitto`` user), and
the collector and the agent by the ``ExecStart`` of their shipped units. What differs from
a real server: paths live under a temporary folder, ports are free ones, the register is a
fresh PostgreSQL database, ``runuser -u campuswatch --`` is dropped (no such user here) and
``systemctl`` lines and copies of units into /etc/systemd/system are left out (the test
plays systemd's part).
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shlex
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support import required
from tests.support.ports import free_port, wait_for_port
from tests.support.victoriametrics import VictoriaMetricsServer
from tests.support.waiting import wait_until

ROOT = Path(__file__).resolve().parents[2]
GUIDE = ROOT / "docs" / "deploy.md"
BIN = Path(sys.executable).parent
INSTALLED_BINARY = "/opt/campuswatch/venv/bin/campuswatch"
STEP = re.compile(r"<!-- step: ([a-z-]+) -->\n```sh\n(.*?)\n```", re.DOTALL)
SITE = "hn-bd-thcs-a"


def guide_steps() -> dict[str, str]:
    return dict(STEP.findall(GUIDE.read_text(encoding="utf-8")))


def unit_directives(unit: Path) -> dict[str, str]:
    lines = unit.read_text(encoding="utf-8").splitlines()
    return dict(line.split("=", 1) for line in lines if "=" in line and not line.startswith("#"))


class Machine:
    """The guide's paths and ports moved onto this test machine."""

    def __init__(self, root: Path, db_url: str, vm_port: int) -> None:
        self.root = root
        self.tls_port, self.plain_port, self.http_port = free_port(), free_port(), free_port()
        self.moves = {
            "/etc/campuswatch": f"{root}/etc/campuswatch",
            "/var/lib/campuswatch": f"{root}/var/lib/campuswatch",
            "/var/backups/campuswatch": f"{root}/var/backups/campuswatch",
            INSTALLED_BINARY: str(BIN / "campuswatch"),
            "--listen-port 8883": f"--listen-port {self.tls_port}",
            "localhost:8883": f"localhost:{self.tls_port}",
            "--plain-port 1883": f"--plain-port {self.plain_port}",
            "127.0.0.1:1883": f"127.0.0.1:{self.plain_port}",
            "127.0.0.1:8080": f"127.0.0.1:{self.http_port}",
            "127.0.0.1:8428": f"127.0.0.1:{vm_port}",
            "postgresql+psycopg:///campuswatch": db_url,
            "runuser -u campuswatch -- ": "",
            "chown root:campuswatch": "chown root:root",
        }
        self.env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}"}
        for name in [n for n in self.env if n.startswith(("CW_COLLECTOR_", "CW_AGENT_"))]:
            if name != "CW_COLLECTOR_REPORT_SCHEDULE_INTERVAL_S":  # no year of reports
                del self.env[name]

    def moved(self, text: str) -> str:
        for old, new in self.moves.items():
            text = text.replace(old, new)
        return text

    def script(self, step: str) -> str:
        """The step's block, moved, without the lines that manage services."""
        lines = [
            line
            for line in guide_steps()[step].splitlines()
            if not line.startswith("systemctl ")
            and not (line.startswith("cp ") and "/etc/systemd/system/" in line)
        ]
        return self.moved("\n".join(lines))

    def run(self, step: str, stdin: str | None = None) -> str:
        return self.bash(self.script(step), stdin)

    def bash(self, script: str, stdin: str | None = None) -> str:
        result = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", script],
            input=stdin,
            capture_output=True,
            text=True,
            env=self.env,
            cwd=ROOT,
            check=False,
            timeout=300,
        )
        assert result.returncode == 0, f"{script}\n{result.stdout}\n{result.stderr}"
        return result.stdout

    def start(
        self, command: list[str], log_name: str, env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        log = (self.root / log_name).open("ab")
        return subprocess.Popen(
            command, stdout=log, stderr=log, env={**self.env, **(env or {})}, cwd=self.root
        )

    def log(self, name: str) -> str:
        return (self.root / name).read_text(errors="replace")[-3000:]

    def start_from_unit(self, unit: Path, log_name: str) -> subprocess.Popen[bytes]:
        directives = unit_directives(unit)
        command = [self.moved(word) for word in shlex.split(directives["ExecStart"])]
        env = {}
        if "Environment" in directives:
            key, _, value = directives["Environment"].partition("=")
            env[key] = self.moved(value)
        return self.start(command, log_name, env)


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture
def machine_root() -> Iterator[Path]:
    """World-readable, as /etc is: Mosquitto drops root before reading its files."""
    directory = Path(tempfile.mkdtemp(prefix="cw-deploy-"))
    directory.chmod(0o755)
    try:
        yield directory
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def test_every_step_has_a_block_and_names_only_shipped_files() -> None:
    steps = guide_steps()
    assert list(steps) == [
        "install",
        "user",
        "broker-config",
        "broker-service",
        "postgres",
        "victoriametrics",
        "collector-config",
        "collector-check",
        "collector-service",
        "first-agent",
        "reverse-proxy",
        "grafana",
        "accounts",
        "wall-url",
        "backup-timer",
        "restore",
        "upgrade",
    ]
    copied = re.findall(
        r"(?:^|\s)((?:collector|agent|dashboards)/[\w./*-]+)", "\n".join(steps.values())
    )
    assert copied
    for pattern in copied:
        assert list(ROOT.glob(pattern)), f"docs/deploy.md copies {pattern}, which does not exist"


@pytest.mark.e2e
@pytest.mark.slow
def test_the_guide_runs_from_broker_to_restore(
    machine_root: Path, fresh_postgres_url: str, victoriametrics: VictoriaMetricsServer
) -> None:
    required.root("the guide is run as root (Mosquitto drops root)")
    for tool, package in (("mosquitto", "mosquitto"), ("openssl", "openssl"),
                          ("pg_dump", "postgresql-client")):  # fmt: skip
        required.program(tool, package)
    required.system_user("mosquitto", "mosquitto")
    machine = Machine(machine_root, fresh_postgres_url, victoriametrics.port)
    for folder in ("etc/campuswatch", "var/lib/campuswatch"):
        (machine_root / folder).mkdir(parents=True)
    processes: list[subprocess.Popen[bytes]] = []
    try:
        # 3. Broker files, then Mosquitto as the drop-in starts it: as root.
        machine.run("broker-config")
        [exec_start] = [
            line.removeprefix("ExecStart=")
            for line in guide_steps()["broker-service"].splitlines()
            if line.startswith("ExecStart=/")
        ]
        mosquitto = machine.start(shlex.split(machine.moved(exec_start)), "mosquitto.log")
        processes.append(mosquitto)
        wait_for_port(machine.plain_port)
        wait_for_port(machine.tls_port)

        # 6. The config file, checked as the guide says.
        machine.run("collector-config")
        config = machine_root / "etc/campuswatch/collector.toml"
        assert config.stat().st_mode & 0o777 == 0o640
        checked = machine.run("collector-check")
        assert "all checks passed" in checked, checked
        assert f"rules in {machine_root}/etc/campuswatch/rules" in checked, checked

        # 7. The collector as its unit starts it.
        collector_unit = ROOT / "collector/packaging/campuswatch-collector.service"
        collector = machine.start_from_unit(collector_unit, "collector.log")
        processes.append(collector)
        base = f"http://127.0.0.1:{machine.http_port}"

        def healthy() -> bool:
            assert collector.poll() is None, machine.log("collector.log")
            with contextlib.suppress(httpx.HTTPError):
                return httpx.get(f"{base}/healthz", timeout=5).status_code == 200
            return False

        wait_until(healthy, 120, message="the collector's /healthz")

        # 8. This server's agent, with its broker login, as its unit starts it.
        machine.run("first-agent")
        agent = machine.start_from_unit(
            ROOT / "agent/packaging/campuswatch-agent.service", "agent.log"
        )
        processes.append(agent)

        # 11. The wall display, by the address the guide prints, shows the PC online.
        [wall_url] = machine.run("wall-url").split()
        wall_url = wall_url.replace("https://campuswatch.district.vn", base)

        def wall_shows_the_pc() -> bool:
            assert agent.poll() is None, machine.log("agent.log")
            page = httpx.get(wall_url, timeout=10)
            assert page.status_code == 200, page.text[:500]
            # The page loads its figures from /ui/wall/data with the same token.
            data_url = wall_url.replace("/ui/wall?", "/ui/wall/data?")
            tiles = {tile["key"]: tile for tile in httpx.get(data_url, timeout=10).json()["tiles"]}
            online, _, _offline = tiles["devices"]["big"].partition(" / ")
            return int(online) >= 1

        wait_until(wall_shows_the_pc, 120, message="the wall display to show the agent online")

        # 11. Accounts by command; the facilities account logs into the UI.
        passwords = {}
        for line in machine.script("accounts").splitlines():
            user = shlex.split(line)[3]
            passwords[user] = secrets.token_urlsafe(16)
            machine.bash(f"{line} --password-stdin", stdin=passwords[user] + "\n")
        with httpx.Client(base_url=base, headers={"Origin": base}) as browser:
            login = browser.post(
                "/ui/login",
                data={"username": "ktv-thcs-a", "password": passwords["ktv-thcs-a"]},
            )
            assert login.status_code == 303, login.text[:500]
            overview = browser.get("/ui/")
            assert overview.status_code == 200
            assert SITE in overview.text

        # 12. A backup as the timer's service takes it, then the guide's restore.
        backup_unit = ROOT / "collector/packaging/campuswatch-backup.service"
        backup_command = machine.moved(unit_directives(backup_unit)["ExecStart"])
        written = machine.bash(backup_command)
        assert "wrote " in written, written
        listed = machine.run("backup-timer")
        assert ".tar.gz" in listed
        stop(agent)
        stop(collector)
        restored = machine.run("restore")
        assert "counts verified" in restored, restored
        collector = machine.start_from_unit(collector_unit, "collector-after-restore.log")
        processes.append(collector)
        wait_until(healthy, 120, message="the collector after the restore")
        with httpx.Client(base_url=base, headers={"Origin": base}) as browser:
            login = browser.post(
                "/ui/login",
                data={"username": "ktv-thcs-a", "password": passwords["ktv-thcs-a"]},
            )
            assert login.status_code == 303, "the restored register lost the account"
            assert SITE in browser.get("/ui/").text
    finally:
        for process in reversed(processes):
            stop(process)
