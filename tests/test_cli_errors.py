"""Every ``campuswatch`` command meets a new district IT person's mistakes with one line.

Issue 15 item 4: permission denied on a data dir, a path under a file, a database that is not
there, an unwritable output file, a bad option value printed 20–500-line tracebacks. Each case
here printed one before; now it is one line saying what is wrong and what to do, and a
non-zero exit. Permission cases run without root's override of permission bits (setpriv drops
CAP_DAC_OVERRIDE), since root would simply be allowed.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import required
from tests.support.ports import free_port

CAMPUSWATCH = [sys.executable, "-m", "campuswatch"]
CLOSED_POSTGRES = "postgresql+psycopg://cw:secret@127.0.0.1:{port}/cw"


def _as_a_plain_user() -> list[str]:
    """A prefix that makes permission bits count, even when the tests run as root."""
    if os.geteuid() != 0:
        return []
    setpriv = required.program("setpriv", "util-linux")
    return [setpriv, "--bounding-set=-dac_override,-dac_read_search", "--"]


def _run(
    *args: str, cwd: Path, plain_user: bool = False, stdin: str = ""
) -> subprocess.CompletedProcess[str]:
    prefix = _as_a_plain_user() if plain_user else []
    env = {k: v for k, v in os.environ.items() if not k.startswith("CW_")}
    env["CW_COLLECTOR_REPORT_SCHEDULE_INTERVAL_S"] = "0"
    return subprocess.run(
        [*prefix, *CAMPUSWATCH, *args],
        cwd=cwd,
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=300,
    )


def _one_line(result: subprocess.CompletedProcess[str], *expected: str) -> str:
    """The run failed with exactly one ``error:`` line (log lines aside) holding every
    ``expected``, and no traceback."""
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    assert result.returncode != 0, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, result.stderr[-3000:]
    for text in expected:
        assert text in lines[0], lines[0]
    return lines[0]


@pytest.fixture
def place(tmp_path: Path) -> Iterator[Path]:
    """A working folder with a regular file (``a-file``) and a folder nobody may enter
    (``locked``)."""
    (tmp_path / "a-file").write_text("not a folder\n", encoding="utf-8")
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0)
    yield tmp_path
    locked.chmod(0o700)


# --- collector run ----------------------------------------------------------------------


def test_collector_run_with_a_data_dir_under_a_file(place: Path) -> None:
    result = _run(
        "collector", "run", "--data-dir", str(place / "a-file" / "data"),
        "--listen", f"127.0.0.1:{free_port()}", cwd=place,
    )  # fmt: skip
    _one_line(result, "error:", str(place / "a-file"))


def test_collector_run_with_a_data_dir_it_may_not_create(place: Path) -> None:
    result = _run(
        "collector", "run", "--data-dir", str(place / "locked" / "data"),
        "--listen", f"127.0.0.1:{free_port()}", cwd=place, plain_user=True,
    )  # fmt: skip
    _one_line(result, "permission denied", str(place / "locked" / "data"))


def test_collector_run_with_an_unreachable_database(place: Path) -> None:
    result = _run(
        "collector", "run", "--data-dir", str(place / "data"),
        "--db", CLOSED_POSTGRES.format(port=free_port()),
        "--listen", f"127.0.0.1:{free_port()}", cwd=place,
    )  # fmt: skip
    line = _one_line(result, "error:", "database", "Connection refused")
    assert "secret" not in line


def test_collector_run_with_a_missing_rules_dir(place: Path) -> None:
    result = _run(
        "collector", "run", "--data-dir", str(place / "data"),
        "--rules-dir", str(place / "no-rules"), "--listen", f"127.0.0.1:{free_port()}", cwd=place,
    )  # fmt: skip
    _one_line(result, "error:", str(place / "no-rules"))


def test_collector_run_with_a_missing_forwarding_config(place: Path) -> None:
    result = _run(
        "collector", "run", "--data-dir", str(place / "data"),
        "--forwarding-config", str(place / "soc.yaml"),
        "--listen", f"127.0.0.1:{free_port()}", cwd=place,
    )  # fmt: skip
    _one_line(result, "error:", str(place / "soc.yaml"))


# --- reports ------------------------------------------------------------------------------


def _register(place: Path) -> Path:
    """A real, migrated register (what the collector creates at its first start)."""
    from campuswatch.collector.db.engine import make_engine, upgrade

    data = place / "data"
    data.mkdir(exist_ok=True)
    engine = make_engine(f"sqlite:///{data / 'register.db'}")
    upgrade(engine)
    engine.dispose()
    return data / "register.db"


def test_report_to_a_file_it_may_not_write(place: Path) -> None:
    register = _register(place)
    result = _run(
        "report", "--db", f"sqlite:///{register}", "--format", "html",
        "--out", str(place / "locked" / "r.html"), cwd=place, plain_user=True,
    )  # fmt: skip
    _one_line(result, "permission denied", str(place / "locked" / "r.html"))


@pytest.mark.parametrize("command", ["schedule", "generate-due"])
def test_report_with_a_day_that_is_not_a_date(place: Path, command: str) -> None:
    register = _register(place)
    extra = [] if command == "schedule" else ["--db", f"sqlite:///{register}"]
    result = _run("report", command, "--today", "31/12/2025", *extra, cwd=place)
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    assert result.returncode == 2 and "YYYY-MM-DD" in result.stderr, result.stderr


def test_report_outside_a_data_dir_creates_nothing(place: Path) -> None:
    result = _run("report", "--format", "html", cwd=place)
    _one_line(result, "no register")
    assert not (place / "campuswatch-data").exists()


# --- backup -------------------------------------------------------------------------------


def test_backup_of_a_register_it_may_not_read(place: Path) -> None:
    register = _register(place)
    register.chmod(0)
    result = _run(
        "backup", "--data-dir", str(register.parent), "--to", str(place / "b.tar.gz"),
        cwd=place, plain_user=True,
    )  # fmt: skip
    _one_line(result, "permission denied", str(register))


def test_backup_of_an_unreachable_database(place: Path) -> None:
    result = _run(
        "backup", "--db", CLOSED_POSTGRES.format(port=free_port()),
        "--to", str(place / "b.tar.gz"), cwd=place,
    )  # fmt: skip
    line = _one_line(result, "error:", "Connection refused")
    assert "secret" not in line


def test_backup_keep_must_keep_at_least_one(place: Path) -> None:
    register = _register(place)
    result = _run(
        "backup", "--data-dir", str(register.parent), "--to-dir", str(place / "b"),
        "--keep", "0", cwd=place,
    )  # fmt: skip
    assert result.returncode == 2 and "--keep" in result.stderr, result.stderr
    assert not (place / "b").exists()


# --- simulator ----------------------------------------------------------------------------


def test_sim_run_with_a_ca_file_that_is_not_a_certificate(place: Path) -> None:
    result = _run(
        "sim", "run", "--broker", f"mqtts://127.0.0.1:{free_port()}",
        "--ca-file", str(place / "a-file"), "--duration", "1", cwd=place,
    )  # fmt: skip
    _one_line(result, "error:", str(place / "a-file"))


def test_sim_run_with_a_missing_ca_file(place: Path) -> None:
    result = _run(
        "sim", "run", "--broker", f"mqtts://127.0.0.1:{free_port()}",
        "--ca-file", str(place / "ca.pem"), "--duration", "1", cwd=place,
    )  # fmt: skip
    assert "Traceback" not in result.stderr and result.returncode == 2, result.stderr
    assert "ca.pem" in result.stderr


def test_sim_run_refuses_a_summary_it_could_not_write_before_running(place: Path) -> None:
    result = _run(
        "sim", "run", "--broker", f"mqtt://127.0.0.1:{free_port()}",
        "--summary-json", str(place / "a-file" / "s.json"), "--duration", "30", cwd=place,
    )  # fmt: skip
    assert "Traceback" not in result.stderr and result.returncode == 2, result.stderr
    assert "--summary-json" in result.stderr
    assert "unreachable" not in result.stderr  # refused before it ran


# --- files written by other commands ------------------------------------------------------


def test_schema_export_into_a_folder_it_may_not_create(place: Path) -> None:
    result = _run("schema", "export", str(place / "locked" / "s"), cwd=place, plain_user=True)
    _one_line(result, "permission denied", str(place / "locked" / "s"))


def test_dashboards_build_under_a_file(place: Path) -> None:
    result = _run("dashboards", "build", "--output", str(place / "a-file" / "d"), cwd=place)
    _one_line(result, "error:", str(place / "a-file"))


def test_demo_with_a_data_dir_under_a_file(place: Path) -> None:
    result = _run(
        "demo", "--data-dir", str(place / "a-file" / "demo"),
        "--listen", f"127.0.0.1:{free_port()}", "--duration", "5", cwd=place,
    )  # fmt: skip
    _one_line(result, "error:", str(place / "a-file"))


@pytest.mark.parametrize("command", ["list", "add-device"])
def test_broker_commands_on_a_folder_that_is_not_there(place: Path, command: str) -> None:
    extra = ["--site", "school-a", "--device-id", "pc-1"] if command == "add-device" else []
    result = _run("broker", command, "--dir", str(place / "brokr"), *extra, cwd=place)
    assert "Traceback" not in result.stderr and result.returncode == 2, result.stderr
    assert "brokr" in result.stderr and not (place / "brokr").exists()


def test_broker_add_device_on_a_folder_broker_config_did_not_write(place: Path) -> None:
    # A login written where no broker looks (a typo'd but existing folder) would be printed
    # as if it worked, and the device then refused by the broker.
    folder = place / "not-the-broker"
    folder.mkdir()
    result = _run(
        "broker", "add-device", "--dir", str(folder), "--site", "school-a",
        "--device-id", "pc-1", cwd=place,
    )  # fmt: skip
    assert "Traceback" not in result.stderr and result.returncode == 2, result.stderr
    assert "mosquitto.conf" in result.stderr and "pc-1" not in result.stdout
    assert list(folder.iterdir()) == []


def test_agent_with_a_state_dir_it_may_not_reach(place: Path) -> None:
    config = place / "agent.toml"
    config.write_text(
        f'site = "school-a"\nstate_dir = "{place / "locked" / "state"}"\n'
        "[net]\ndns_names = []\nhttp_targets = []\nping_count = 1\ntimeout_s = 1\n",
        encoding="utf-8",
    )
    result = _run("agent", "once", "--config", str(config), cwd=place, plain_user=True)
    _one_line(result, "error:", str(place / "locked" / "state"))


def test_collector_check_names_a_data_dir_it_may_not_reach_and_checks_the_rest(
    place: Path,
) -> None:
    config = place / "collector.toml"
    config.write_text(
        f'data_dir = "{place / "locked" / "data"}"\nbroker = "mqtt://127.0.0.1:{free_port()}"\n',
        encoding="utf-8",
    )
    result = _run(
        "collector", "check", "--config", str(config), "--timeout", "1", cwd=place,
        plain_user=True,
    )  # fmt: skip
    assert "Traceback" not in result.stderr and result.returncode == 1, result.stderr
    assert f"problem: data dir: {place / 'locked' / 'data'}" in result.stdout + result.stderr
    assert "permission denied" in result.stdout + result.stderr
    assert "rules:" in result.stdout  # the other checks still ran


def test_collector_check_says_an_unreachable_broker_once(place: Path) -> None:
    """The connection's own state line (meant for the running collector's log) is not
    printed beside the check's problem line."""
    port = free_port()
    config = place / "collector.toml"
    config.write_text(
        f'data_dir = "{place / "data"}"\nbroker = "mqtt://127.0.0.1:{port}"\n', encoding="utf-8"
    )
    result = _run("collector", "check", "--config", str(config), "--timeout", "1", cwd=place)
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    about = [line for line in result.stderr.splitlines() if f"127.0.0.1:{port}" in line]
    assert len(about) == 1 and about[0].startswith("problem: broker:"), result.stderr
