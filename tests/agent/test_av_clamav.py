"""ClamAV probe against recorded outputs: one folder per case under testcases/clamav/.

Each case folder holds what a lab PC produced (database headers as ``<file>.header``,
``sigtool --info`` output, ``clamscan --version``, freshclam/clamd logs), ``case.json`` with
the circumstances (clock, local zone, resident processes) and ``expected.json``.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import msgspec
import pytest

from campuswatch.agent.commands import CommandError, CommandResult
from campuswatch.agent.probes import ProbeContext
from campuswatch.agent.probes.av_clamav import (
    ClamavProcesses,
    CvdHeader,
    collect_clamav,
    count_recent_threats,
    last_update_from_freshclam_log,
    parse_build_time,
    parse_clamav_version,
    parse_cvd_header,
    parse_sigtool_info,
    running_clamav_processes,
)
from campuswatch.agent.settings import AgentSettings, AvSettings
from campuswatch.wire.messages import AvMessage
from tests.support.waiting import wait_until

CASES_DIR = Path(__file__).parent / "testcases" / "clamav"
CASES = sorted(path.name for path in CASES_DIR.iterdir() if path.is_dir())


def _cases_with(file_name: str) -> list[str]:
    return [case for case in CASES if (CASES_DIR / case / file_name).exists()]


HEADER_SUFFIX = ".header"


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _header_as_dict(header: CvdHeader) -> dict[str, Any]:
    return {
        "name": header.name,
        "version": header.version,
        "signatures": header.signatures,
        "functionality_level": header.functionality_level,
        "build_time": _iso(header.build_time),
        "builder": header.builder,
    }


def _load(case: str) -> tuple[Path, dict[str, Any], dict[str, Any]]:
    folder = CASES_DIR / case
    circumstances = json.loads((folder / "case.json").read_text(encoding="utf-8"))
    expected = json.loads((folder / "expected.json").read_text(encoding="utf-8"))
    return folder, circumstances, expected


class RecordedCommands:
    """Answers commands from the case folder, like the lab PC did; anything else is absent."""

    def __init__(self, folder: Path, sigtool_returncode: int) -> None:
        self.folder = folder
        self.sigtool_returncode = sigtool_returncode
        self.calls: list[tuple[str, ...]] = []

    def __call__(
        self, argv: Sequence[str], *, timeout_s: float, check: bool = True
    ) -> CommandResult:
        command = tuple(argv)
        self.calls.append(command)
        version = self.folder / "version.txt"
        if command == ("clamscan", "--version") and version.exists():
            return CommandResult(command, 0, version.read_text(encoding="utf-8"), "")
        if command[0] == "sigtool" and command[1].startswith("--info="):
            return self._sigtool_info(command)
        raise CommandError("not_found", f"{command[0]} is not installed")

    def _sigtool_info(self, command: tuple[str, ...]) -> CommandResult:
        target = Path(command[1].removeprefix("--info="))
        recorded = self.folder / "sigtool_info.txt"
        if target.name.startswith("daily") and recorded.exists():
            stderr_file = self.folder / "sigtool_info.stderr.txt"
            stderr = stderr_file.read_text(encoding="utf-8") if stderr_file.exists() else ""
            stdout = recorded.read_text(encoding="utf-8")
            return CommandResult(command, self.sigtool_returncode, stdout, stderr)
        # What sigtool 1.4.6 prints for a file that is not a database at all.
        stderr = (
            "LibClamAV Error: cli_cvdparse: Not a CVD file\n"
            f"ERROR: cvdinfo: Can't read/parse CVD header of {target}\n"
        )
        return CommandResult(command, 1, "", stderr)


@pytest.mark.parametrize("case", CASES)
def test_header_files_parse_as_expected(case: str) -> None:
    folder, _, expected = _load(case)
    for file_name, want in expected.get("headers", {}).items():
        data = (folder / file_name).read_bytes()
        database_name = file_name.split(".")[0]
        if "error" in want:
            with pytest.raises(ValueError, match=want["error"]):
                parse_cvd_header(data, name=database_name)
        else:
            assert _header_as_dict(parse_cvd_header(data, name=database_name)) == want, file_name


@pytest.mark.parametrize("case", _cases_with("sigtool_info.txt"))
def test_sigtool_info_parses_as_expected(case: str) -> None:
    folder, _, expected = _load(case)
    text = (folder / "sigtool_info.txt").read_text(encoding="utf-8")
    want = expected["sigtool_info"]
    if "error" in want:
        with pytest.raises(ValueError, match=want["error"]):
            parse_sigtool_info(text)
    else:
        assert _header_as_dict(parse_sigtool_info(text)) == want


@pytest.mark.parametrize("case", CASES)
def test_version_line_parses_as_expected(case: str) -> None:
    folder, circumstances, expected = _load(case)
    text = (folder / "version.txt").read_text(encoding="utf-8")
    zone = ZoneInfo(circumstances["timezone"])
    want = expected["version"]
    if "error" in want:
        with pytest.raises(ValueError, match=want["error"]):
            parse_clamav_version(text, local_timezone=zone)
        return
    version = parse_clamav_version(text, local_timezone=zone)
    assert {
        "version": version.version,
        "database_version": version.database_version,
        "database_time": _iso(version.database_time),
    } == want


@pytest.mark.parametrize("case", _cases_with("freshclam.log"))
def test_freshclam_log_gives_last_successful_update(case: str) -> None:
    folder, circumstances, expected = _load(case)
    log = folder / "freshclam.log"
    zone = ZoneInfo(circumstances["timezone"])
    last_update = last_update_from_freshclam_log(
        log.read_text(encoding="utf-8"), local_timezone=zone
    )
    assert _iso(last_update) == expected["freshclam_last_update"]


@pytest.mark.parametrize("case", CASES)
def test_collect_clamav_reports_expected_product_and_errors(case: str, tmp_path: Path) -> None:
    folder, circumstances, expected = _load(case)
    database_dir = tmp_path / "clamav"
    database_dir.mkdir()
    for header_file in folder.glob(f"*{HEADER_SUFFIX}"):
        shutil.copy(header_file, database_dir / header_file.name.removesuffix(HEADER_SUFFIX))
    settings = AgentSettings(
        av=AvSettings(
            clamav_database_dirs=[str(database_dir), str(tmp_path / "missing-unofficial")],
            freshclam_log=str(folder / "freshclam.log"),
            max_signature_age_hours=circumstances["max_signature_age_hours"],
        )
    )
    runner = RecordedCommands(folder, circumstances.get("sigtool_returncode", 0))
    context = ProbeContext(device_id="lab-pc-01", site="school-a", settings=settings, run=runner)

    products, errors = collect_clamav(
        context,
        datetime.fromisoformat(circumstances["now"]),
        local_timezone=ZoneInfo(circumstances["timezone"]),
        processes=ClamavProcesses(**circumstances["processes"]),
        scan_logs=[folder / name for name in circumstances.get("scan_logs", [])],
    )

    actual = msgspec.to_builtins(products)
    for product in actual:
        if "signature_age_hours" in product:
            product["signature_age_hours"] = round(product["signature_age_hours"], 6)
    assert actual == expected["products"]
    assert [(error.probe, error.reason) for error in errors] == [
        ("av", want["reason"]) for want in expected["errors"]
    ]
    for error, want in zip(errors, expected["errors"], strict=True):
        assert want["detail_contains"] in error.detail
    # The result must fit the wire contract, whatever the input was.
    message = AvMessage(
        device_id="lab-pc-01", site="school-a", status="at_risk", products=products, errors=errors
    )
    msgspec.json.decode(msgspec.json.encode(message), type=AvMessage)


def test_sigtool_is_only_run_for_headers_we_cannot_read(tmp_path: Path) -> None:
    folder = CASES_DIR / "clamav_14_fresh_cvd"
    for header_file in folder.glob(f"*{HEADER_SUFFIX}"):
        shutil.copy(header_file, tmp_path / header_file.name.removesuffix(HEADER_SUFFIX))
    runner = RecordedCommands(folder, 0)
    settings = AgentSettings(
        av=AvSettings(clamav_database_dirs=[str(tmp_path)], freshclam_log=str(tmp_path / "x"))
    )
    context = ProbeContext(device_id="pc", site="s", settings=settings, run=runner)
    collect_clamav(
        context,
        datetime(2024, 11, 20, tzinfo=UTC),
        processes=ClamavProcesses(clamd=False, clamonacc=False, freshclam_daemon=False),
        scan_logs=[],
    )
    assert runner.calls == [("clamscan", "--version")]


def test_no_clamav_installed_means_no_product_and_no_error(tmp_path: Path) -> None:
    settings = AgentSettings(av=AvSettings(clamav_database_dirs=[str(tmp_path)]))
    context = ProbeContext(
        device_id="pc", site="s", settings=settings, run=RecordedCommands(tmp_path, 0)
    )
    nothing_running = ClamavProcesses(clamd=False, clamonacc=False, freshclam_daemon=False)
    now = datetime(2024, 11, 20, tzinfo=UTC)
    assert collect_clamav(context, now, processes=nothing_running, scan_logs=[]) == ([], [])


def test_clamd_running_without_tools_on_path_still_counts_as_installed(tmp_path: Path) -> None:
    settings = AgentSettings(
        av=AvSettings(clamav_database_dirs=[str(tmp_path)], freshclam_log=str(tmp_path / "x"))
    )
    context = ProbeContext(
        device_id="pc", site="s", settings=settings, run=RecordedCommands(tmp_path, 0)
    )
    clamd_only = ClamavProcesses(clamd=True, clamonacc=False, freshclam_daemon=False)
    products, errors = collect_clamav(
        context, datetime(2024, 11, 20, tzinfo=UTC), processes=clamd_only, scan_logs=[]
    )
    assert [(p.running, p.engine_version) for p in products] == [(True, None)]
    assert [error.reason for error in errors] == ["not_found"]  # no signature database


def test_process_listing_failure_is_reported_as_unknown_not_off(tmp_path: Path) -> None:
    (tmp_path / "version.txt").write_text("ClamAV 1.4.6\n", encoding="utf-8")

    def broken_listing() -> ClamavProcesses:
        raise PermissionError("hidepid=2 on /proc")

    settings = AgentSettings(
        av=AvSettings(clamav_database_dirs=[str(tmp_path)], freshclam_log=str(tmp_path / "x"))
    )
    context = ProbeContext(
        device_id="pc", site="s", settings=settings, run=RecordedCommands(tmp_path, 0)
    )
    products, errors = collect_clamav(
        context, datetime(2024, 11, 20, tzinfo=UTC), processes=broken_listing, scan_logs=[]
    )
    assert [(p.running, p.enabled, p.realtime_protection) for p in products] == [(None, None, None)]
    assert "failed" in [error.reason for error in errors]


def test_unreadable_freshclam_log_is_a_permission_error(tmp_path: Path) -> None:
    (tmp_path / "version.txt").write_text("ClamAV 1.4.6\n", encoding="utf-8")
    settings = AgentSettings(
        av=AvSettings(clamav_database_dirs=[str(tmp_path)], freshclam_log=str(tmp_path))
    )
    context = ProbeContext(
        device_id="pc", site="s", settings=settings, run=RecordedCommands(tmp_path, 0)
    )
    resident = ClamavProcesses(clamd=True, clamonacc=False, freshclam_daemon=False)
    products, errors = collect_clamav(
        context, datetime(2024, 11, 20, tzinfo=UTC), processes=resident, scan_logs=[]
    )
    assert products[0].last_update is None
    assert ("failed", True) in [(e.reason, "freshclam log" in e.detail) for e in errors]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("10 Nov 2024 04-31 -0400", datetime(2024, 11, 10, 8, 31, tzinfo=UTC)),
        ("10 Nov 2024 04:31 -0400", datetime(2024, 11, 10, 8, 31, tzinfo=UTC)),
        ("01 Jan 2025 00-15 +0700", datetime(2024, 12, 31, 17, 15, tzinfo=UTC)),
        ("10 Nov 2024 04-31", None),
        ("31 Feb 2024 04-31 +0000", None),
        ("10 Noe 2024 04-31 +0000", None),
        ("", None),
    ],
)
def test_build_time_formats(text: str, expected: datetime | None) -> None:
    assert parse_build_time(text) == expected


def test_header_with_empty_build_time_falls_back_to_epoch_stime() -> None:
    header = parse_cvd_header(b"ClamAV-VDB::27460:2:216:X:X:cw:1730622660".ljust(512))
    assert header.build_time == datetime(2024, 11, 3, 8, 31, tzinfo=UTC)


def test_header_with_only_magic_and_version_is_accepted() -> None:
    header = parse_cvd_header(b"ClamAV-VDB::27460".ljust(512))
    assert (header.version, header.signatures, header.build_time) == (27460, None, None)


def test_header_without_version_is_rejected() -> None:
    with pytest.raises(ValueError, match="version"):
        parse_cvd_header(b"ClamAV-VDB:10 Nov 2024 04-31 -0400::2".ljust(512))


def test_threats_need_a_date_inside_the_last_day() -> None:
    log = (
        "Sun Nov 10 09:00:00 2024 -> /tmp/a: Eicar FOUND\n"
        "Sat Nov  9 08:59:59 2024 -> /tmp/b: Eicar FOUND\n"
        "/tmp/c: Eicar FOUND\n"
        "Sun Nov 10 09:00:01 2024 -> /tmp/d: OK\n"
    )
    now = datetime(2024, 11, 10, 9, 0, tzinfo=UTC)
    assert count_recent_threats(log, now, local_timezone=UTC) == 1


@pytest.mark.parametrize(
    "garbage",
    ["", "\x00\xff", "ClamAV", "ClamAV /27460/", "clamscan: command not found", "ClamAV x.y"],
)
def test_version_garbage_raises_value_error(garbage: str) -> None:
    with pytest.raises(ValueError, match="not a ClamAV version line"):
        parse_clamav_version(garbage)


def test_version_line_in_machine_local_time_when_no_zone_given() -> None:
    version = parse_clamav_version("ClamAV 1.0.7/27460/Sun Nov 10 09:31:11 2024")
    naive = datetime(2024, 11, 10, 9, 31, 11)
    assert version.database_time == naive.astimezone().astimezone(UTC)


def test_freshclam_before_0_102_is_up_to_date_counts_as_a_successful_run() -> None:
    """Issue 18 item 5: freshclam 0.101 and older logged "main.cvd is up to date (…)" (no
    "database", no hyphens); a lab PC on an old distribution still runs one."""
    log = (
        "Mon Mar  4 07:00:01 2019 -> ClamAV update process started at Mon Mar  4 07:00:01 2019\n"
        "Mon Mar  4 07:00:02 2019 -> main.cvd is up to date "
        "(version: 58, sigs: 4566249, f-level: 60, builder: sigmgr)\n"
        "Mon Mar  4 07:00:03 2019 -> daily.cld is up to date "
        "(version: 25376, sigs: 1539931, f-level: 63, builder: raynman)\n"
        "Mon Mar  4 09:00:01 2019 -> WARNING: bytecode.cvd is up to date, but mirrors "
        "disagree\n"
    )
    last = last_update_from_freshclam_log(log, local_timezone=UTC)
    assert last == datetime(2019, 3, 4, 7, 0, 3, tzinfo=UTC)


def test_running_daemons_are_found_by_name_and_freshclam_by_its_daemon_flag(
    tmp_path: Path,
) -> None:
    """Real processes: a script's process name is its file name on Linux."""
    import os
    import signal
    import subprocess

    # The suite runs on Debian (README): a script's process name is its file name there.
    started = []
    for name, args in (("clamd", []), ("freshclam", ["--daemon"])):
        script = tmp_path / name
        script.write_text("#!/bin/sh\nsleep 300\n", encoding="utf-8")
        script.chmod(0o755)
        started.append(subprocess.Popen([str(script), *args], start_new_session=True))
    try:

        def both_seen() -> ClamavProcesses | None:
            found = running_clamav_processes()
            return found if found.clamd and found.freshclam_daemon else None

        found = wait_until(both_seen, message="the scripts named clamd and freshclam not seen")
        assert (found.clamd, found.clamonacc, found.freshclam_daemon) == (True, False, True)
    finally:
        for process in started:
            os.killpg(process.pid, signal.SIGKILL)  # the script and its sleep
            process.wait()


def test_looking_for_daemons_keeps_no_process_objects() -> None:
    """Issue 18: psutil.process_iter caches a Process per running process until its next
    call; for process names only, that cache was ~0.5 KiB per process for the agent's life."""
    import psutil

    running_clamav_processes()
    cache: dict[object, object] = getattr(psutil, "_pmap", {})  # psutil's private cache
    assert cache == {}
