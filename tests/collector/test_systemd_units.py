"""The shipped systemd units: verified by systemd itself, locked down, and their commands run."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
from typer.testing import CliRunner

from campuswatch.collector import cli
from campuswatch.collector.db.engine import upgrade
from campuswatch.collector.settings import CollectorSettings
from campuswatch.commands import app
from tests.support import required

ROOT = Path(__file__).resolve().parents[2]
PACKAGING = ROOT / "collector" / "packaging"
UNITS = sorted(PACKAGING.glob("campuswatch-*"))
AGENT_UNIT = ROOT / "agent" / "packaging" / "campuswatch-agent.service"
INSTALLED_BINARY = "/opt/campuswatch/venv/bin/campuswatch"
SYSTEMD_ANALYZE = shutil.which("systemd-analyze")
needs_systemd_analyze = pytest.mark.usefixtures("systemd_analyze")


@pytest.fixture
def systemd_analyze() -> str:
    return required.program("systemd-analyze", "systemd")


def installed_copies(folder: Path, units: list[Path]) -> list[Path]:
    """The units as they would be installed, except that ExecStart's binary is this venv's:
    verify checks that the command exists and is executable."""
    binary = Path(sys.executable).parent / "campuswatch"
    copies = []
    for unit in units:
        copy = folder / unit.name
        copy.write_text(unit.read_text(encoding="utf-8").replace(INSTALLED_BINARY, str(binary)))
        copies.append(copy)
    return copies


def directives(unit: Path) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for line in unit.read_text(encoding="utf-8").splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            found.setdefault(key.strip(), []).append(value.strip())
    return found


def exec_start_arguments(unit: Path, moved: dict[str, Path]) -> list[str]:
    """ExecStart's arguments after the binary, each installed path in ``moved`` replaced."""
    [command] = directives(unit)["ExecStart"]
    words = shlex.split(command)
    assert words[0] == INSTALLED_BINARY
    return [str(moved[word]) if word in moved else word for word in words[1:]]


def test_the_three_units_are_shipped() -> None:
    assert [unit.name for unit in UNITS] == [
        "campuswatch-backup.service",
        "campuswatch-backup.timer",
        "campuswatch-collector.service",
    ]


@needs_systemd_analyze
def test_systemd_analyze_verify_finds_nothing(tmp_path: Path) -> None:
    assert SYSTEMD_ANALYZE is not None
    copies = installed_copies(tmp_path, [*UNITS, AGENT_UNIT])
    result = subprocess.run(
        [SYSTEMD_ANALYZE, "verify", *map(str, copies)],
        capture_output=True,
        text=True,
        check=False,
    )
    # verify exits 0 on unknown keys and only says so: silence is the pass mark.
    assert (result.returncode, result.stdout + result.stderr) == (0, "")


@needs_systemd_analyze
def test_verify_would_catch_a_misspelt_directive(tmp_path: Path) -> None:
    """The pass mark above is not vacuous: a typo in a hardening line is reported."""
    assert SYSTEMD_ANALYZE is not None
    [copy] = installed_copies(tmp_path, [PACKAGING / "campuswatch-collector.service"])
    copy.write_text(copy.read_text().replace("ProtectSystem=", "ProtectSytem="))
    result = subprocess.run(
        [SYSTEMD_ANALYZE, "verify", str(copy)], capture_output=True, text=True, check=False
    )
    assert "Unknown key" in result.stderr and "ProtectSytem" in result.stderr


@needs_systemd_analyze
def test_the_collector_service_is_locked_down(tmp_path: Path) -> None:
    assert SYSTEMD_ANALYZE is not None
    unit = PACKAGING / "campuswatch-collector.service"
    found = directives(unit)
    for key, value in {
        "User": "campuswatch",
        "NoNewPrivileges": "true",
        "ProtectSystem": "strict",
        "ReadWritePaths": "/var/lib/campuswatch",
        "StateDirectory": "campuswatch",
        "PrivateTmp": "true",
        "ProtectHome": "true",
        "Restart": "on-failure",
    }.items():
        assert found.get(key) == [value], key
    [copy] = installed_copies(tmp_path, [unit])
    result = subprocess.run(
        [SYSTEMD_ANALYZE, "security", "--offline=true", "--no-pager", str(copy)],
        capture_output=True,
        text=True,
        check=False,
    )
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", result.stdout)
    # Debian 12's systemd (252) has the offline check; an older one fails here, saying so.
    assert match is not None, result.stdout + result.stderr
    # systemd calls below 5 "OK"; a root service with no sandbox scores 9.6.
    assert float(match.group(1)) < 5.0, result.stdout


def test_the_backup_timer_starts_the_backup_service_daily() -> None:
    timer = directives(PACKAGING / "campuswatch-backup.timer")
    assert timer["OnCalendar"] == ["*-*-* 02:30:00"]
    assert timer["Persistent"] == ["true"]
    assert "Unit" not in timer  # so it starts the service of its own name
    assert (PACKAGING / "campuswatch-backup.service").is_file()
    assert directives(PACKAGING / "campuswatch-backup.service")["User"] == ["campuswatch"]


def test_the_collector_units_command_starts_from_the_config_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "collector.toml"
    config.write_text(f'listen = "127.0.0.1:8181"\ndata_dir = "{tmp_path}"\n', encoding="utf-8")
    arguments = exec_start_arguments(
        PACKAGING / "campuswatch-collector.service", {"/etc/campuswatch/collector.toml": config}
    )
    assert arguments == ["collector", "run", "--config", str(config)]
    seen: list[object] = []
    monkeypatch.setattr(cli, "serve", seen.append)
    result = CliRunner().invoke(app, arguments)
    assert result.exit_code == 0, result.output
    [settings] = seen
    assert isinstance(settings, CollectorSettings)
    assert (settings.listen, settings.data_dir) == ("127.0.0.1:8181", tmp_path)


def test_the_backup_units_command_backs_up_what_the_config_file_names(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    upgrade(f"sqlite:///{data_dir / 'register.db'}")
    config = tmp_path / "collector.toml"
    config.write_text(f'data_dir = "{data_dir}"\n', encoding="utf-8")
    backups = tmp_path / "backups"
    arguments = exec_start_arguments(
        PACKAGING / "campuswatch-backup.service",
        {"/etc/campuswatch/collector.toml": config, "/var/backups/campuswatch": backups},
    )
    assert arguments[0] == "backup" and "--keep" in arguments
    result = CliRunner().invoke(app, arguments)
    assert result.exit_code == 0, result.output
    [archive] = backups.glob("campuswatch-*.tar.gz")
    with tarfile.open(archive) as tar:
        names = tar.getnames()
    assert any(name.endswith("collector.toml") for name in names), names
    assert any("register" in name for name in names), names
