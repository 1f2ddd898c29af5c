"""Acceptance: the ClamAV probe against the real Debian ClamAV tools, fully offline.

A signature database is built in a temp dir with ``sigtool --unsigned --build`` (sigtool
stamps the build with the current time in the process's ``TZ``). For an exactly known build
time, the sigtool-built container gets a header we write ourselves and is saved as a
``.cld`` (what incremental updates leave behind); sigtool and clamscan read it as ClamAV
would. The probe then runs with the real ``run_command``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from campuswatch.agent.commands import run_command
from campuswatch.agent.probes import ProbeContext
from campuswatch.agent.probes.av_clamav import (
    CVD_HEADER_BYTES,
    ClamavProcesses,
    collect_clamav,
    parse_clamav_version,
    parse_cvd_header,
    parse_sigtool_info,
)
from campuswatch.agent.settings import AgentSettings, AvSettings
from campuswatch.wire.messages import AvProduct, ProbeError
from tests.support import required


@pytest.fixture(autouse=True)
def clamav_tools() -> None:
    """Every test here runs ClamAV's own sigtool or clamscan."""
    for tool in ("sigtool", "clamscan"):
        required.program(tool, "clamav")


BUILD_ZONE = "Asia/Ho_Chi_Minh"  # +0700 all year: proves the zone in the header is honoured
DAILY_VERSION = 27460
NO_DAEMONS = ClamavProcesses(clamd=False, clamonacc=False, freshclam_daemon=False)
KNOWN_BUILD_TEXT = "03 Nov 2024 04-31 -0400"
KNOWN_BUILD_TIME = datetime(2024, 11, 3, 8, 31, tzinfo=UTC)
KNOWN_STIME = int(KNOWN_BUILD_TIME.timestamp())


def _env(zone: str) -> dict[str, str]:
    return dict(os.environ, TZ=zone, LC_ALL="C", LANG="C")


def _floor_minute(moment: datetime) -> datetime:
    return moment.replace(second=0, microsecond=0)


def _build_unsigned_daily(work_dir: Path) -> tuple[Path, datetime, datetime]:
    """``sigtool --build`` a two-signature daily.cud; return it with the build window."""
    source = work_dir / "source"
    source.mkdir()
    (source / "COPYING").write_text("CampusWatch test signatures, not for use.\n")
    hex_marker = b"CampusWatchTestSignature".hex()
    (source / "daily.ndb").write_text(f"CampusWatch.Test.Marker:0:*:{hex_marker}\n")
    (source / "daily.hdb").write_text("44d88612fea8a8f36de82e1278abb02f:68:CampusWatch.Test.Hash\n")
    empty_datadir = work_dir / "no-previous-cvd"
    empty_datadir.mkdir()
    started = datetime.now(UTC)
    completed = subprocess.run(
        [
            "sigtool",
            "--unsigned",
            "--build=daily.cud",
            f"--cvd-version={DAILY_VERSION}",
            f"--datadir={empty_datadir}",
            "--no-cdiff",
        ],
        cwd=source,
        input="campuswatch-test\n",  # sigtool asks for the builder's name
        capture_output=True,
        text=True,
        env=_env(BUILD_ZONE),
        timeout=60,
        check=False,
    )
    finished = datetime.now(UTC)
    built = source / "daily.cud"
    assert built.exists(), f"sigtool --build failed: {completed.stdout}\n{completed.stderr}"
    return built, started, finished


def _with_header(container: Path, header_text: str, destination: Path) -> Path:
    body = container.read_bytes()[CVD_HEADER_BYTES:]
    destination.write_bytes(header_text.encode("ascii").ljust(CVD_HEADER_BYTES, b" ") + body)
    return destination


def _collect(
    database_dir: Path, now: datetime, max_age_hours: float = 72.0
) -> tuple[list[AvProduct], list[ProbeError]]:
    settings = AgentSettings(
        av=AvSettings(
            clamav_database_dirs=[str(database_dir)],
            freshclam_log=str(database_dir / "no-freshclam.log"),
            max_signature_age_hours=max_age_hours,
        )
    )
    context = ProbeContext(
        device_id="lab-pc-01", site="school-a", settings=settings, run=run_command
    )
    result: tuple[list[AvProduct], list[ProbeError]] = collect_clamav(
        context, now, processes=NO_DAEMONS, scan_logs=[]
    )
    return result


def _sigtool_info(path: Path) -> str:
    # Exit status 1 is expected: an unsigned test database cannot pass verification.
    output: str = run_command(["sigtool", f"--info={path}"], timeout_s=60, check=False).stdout
    return output


def test_sigtool_built_database_dates_the_signatures(tmp_path: Path) -> None:
    built, started, finished = _build_unsigned_daily(tmp_path)
    database_dir = tmp_path / "db"
    database_dir.mkdir()
    shutil.copy(built, database_dir / "daily.cud")
    assert b" +0700:" in built.read_bytes()[:CVD_HEADER_BYTES], "sigtool ignored TZ"

    now = finished + timedelta(hours=10)
    products, errors = _collect(database_dir, now)

    assert errors == []
    [product] = products
    assert product.signature_version == str(DAILY_VERSION)
    assert product.signature_time is not None
    # The header has minute precision, so the build time is the minute sigtool ran in.
    assert _floor_minute(started) <= product.signature_time <= finished
    expected_age = (now - product.signature_time).total_seconds() / 3600
    assert product.signature_age_hours == pytest.approx(expected_age)
    longest_age = (now - _floor_minute(started)).total_seconds() / 3600
    assert 10 <= (product.signature_age_hours or 0) <= longest_age
    assert product.signatures_up_to_date is True
    assert (product.enabled, product.running, product.realtime_protection) == (False, False, False)


def test_sigtool_info_agrees_with_header_parser(tmp_path: Path) -> None:
    built, _, _ = _build_unsigned_daily(tmp_path)
    known = _with_header(
        built,
        f"ClamAV-VDB:{KNOWN_BUILD_TEXT}:{DAILY_VERSION}:2:216:X:X:campuswatch:{KNOWN_STIME}",
        tmp_path / "daily.cld",
    )
    for database in (built, known):
        from_header = parse_cvd_header(database.read_bytes()[:CVD_HEADER_BYTES], name="daily")
        from_sigtool = parse_sigtool_info(_sigtool_info(database))
        assert from_sigtool == from_header, database.name
        assert from_header.signatures == 2
    assert parse_sigtool_info(_sigtool_info(known)).build_time == KNOWN_BUILD_TIME


def test_known_build_time_gives_exact_signature_time_and_age(tmp_path: Path) -> None:
    built, _, _ = _build_unsigned_daily(tmp_path)
    database_dir = tmp_path / "db"
    database_dir.mkdir()
    _with_header(
        built,
        f"ClamAV-VDB:{KNOWN_BUILD_TEXT}:{DAILY_VERSION}:2:216:X:X:campuswatch:{KNOWN_STIME}",
        database_dir / "daily.cld",
    )
    older_main = datetime(2021, 9, 16, 12, 32, tzinfo=UTC)
    _with_header(
        built,
        f"ClamAV-VDB:16 Sep 2021 08-32 -0400:62:2:90:X:X:campuswatch:{int(older_main.timestamp())}",
        database_dir / "main.cvd",
    )

    now = KNOWN_BUILD_TIME + timedelta(hours=48, minutes=30)
    products, errors = _collect(database_dir, now)
    assert errors == []
    [product] = products
    assert product.signature_time == KNOWN_BUILD_TIME  # the newest of daily and main
    assert product.signature_version == str(DAILY_VERSION)
    assert product.signature_age_hours == 48.5
    assert product.signatures_up_to_date is True

    [stale], _ = _collect(database_dir, now, max_age_hours=24)
    assert stale.signatures_up_to_date is False


def test_clamscan_version_line_with_one_digit_day_matches_the_database(tmp_path: Path) -> None:
    built, _, _ = _build_unsigned_daily(tmp_path)
    database_dir = tmp_path / "db"
    database_dir.mkdir()
    _with_header(
        built,
        f"ClamAV-VDB:{KNOWN_BUILD_TEXT}:{DAILY_VERSION}:2:216:X:X:campuswatch:{KNOWN_STIME}",
        database_dir / "daily.cld",
    )
    zone = "America/New_York"  # 3 Nov 2024 is also the day US clocks went back
    completed = subprocess.run(
        ["clamscan", f"--database={database_dir}", "--version"],
        capture_output=True,
        text=True,
        env=_env(zone),
        timeout=60,
        check=True,
    )
    assert "Nov  3 " in completed.stdout, completed.stdout  # ctime pads the day with a space
    version = parse_clamav_version(completed.stdout, local_timezone=ZoneInfo(zone))
    assert version.database_version == DAILY_VERSION
    assert version.database_time == KNOWN_BUILD_TIME  # clamscan prints stime in local time


def test_header_only_sigtool_can_read_is_reported_not_trusted(tmp_path: Path) -> None:
    built, _, _ = _build_unsigned_daily(tmp_path)
    database_dir = tmp_path / "db"
    database_dir.mkdir()
    (database_dir / "daily.cvd").write_bytes(built.read_bytes()[:200])  # interrupted download

    products, errors = _collect(database_dir, datetime.now(UTC))

    [product] = products
    assert product.signature_time is None
    assert product.product_version is not None
    assert [error.reason for error in errors] == ["parse"]
    assert "truncated" in errors[0].detail
    assert "sigtool --info exited" in errors[0].detail
