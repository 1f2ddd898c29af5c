"""``campuswatch report`` against a SQLite register (the command the lead registers)."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from openpyxl import load_workbook
from typer.testing import CliRunner

from campuswatch.collector.db.engine import make_engine, session_factory, upgrade
from campuswatch.collector.reports.cli import app
from tests.collector.reports.conftest import fill_district


@pytest.fixture
def register(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    url = f"sqlite:///{tmp_path / 'register.db'}"
    upgrade(url)
    engine = make_engine(url)
    with session_factory(engine)() as session:
        fill_district(session)
    engine.dispose()
    monkeypatch.setenv("CW_COLLECTOR_DATA_DIR", str(tmp_path / "data"))
    return url


def test_report_to_xlsx_file(register: str, tmp_path: Path) -> None:
    out = tmp_path / "report.xlsx"
    result = CliRunner().invoke(
        app,
        [
            "--period",
            "month",
            "--at",
            "2026-02-10",
            "--site",
            "dist",
            "--lang",
            "en",
            "--format",
            "xlsx",
            "--out",
            str(out),
            "--db",
            register,
        ],
    )
    assert result.exit_code == 0, result.output
    sheet = load_workbook(io.BytesIO(out.read_bytes()))["KPIs"]
    assert sheet["A1"].value == "Monthly report, February 2026"


def test_report_html_to_stdout_and_bad_site(register: str) -> None:
    runner = CliRunner()
    result = runner.invoke(
        app, ["--period", "six-month", "--at", "2026-05-01", "--format", "html", "--db", register]
    )
    assert result.exit_code == 0, result.output
    assert "Báo cáo 6 tháng đầu năm 2026" in result.stdout
    bad = runner.invoke(app, ["--site", "nowhere", "--format", "html", "--db", register])
    assert bad.exit_code == 2 and "nowhere" in bad.output


def test_schedule_and_generate_due(register: str, tmp_path: Path) -> None:
    runner = CliRunner()
    schedule = runner.invoke(app, ["schedule", "--today", "2026-06-01"])
    assert schedule.exit_code == 0, schedule.output
    line = next(row for row in schedule.stdout.splitlines() if "six-month" in row)
    assert "2026-H1" in line and "submit before 2026-06-05" in line and "[due]" in line
    archive = tmp_path / "archive"
    args = ["generate-due", "--archive", str(archive), "--today", "2026-06-01", "--db", register]
    first = runner.invoke(app, args)
    assert first.exit_code == 0, first.output
    assert "2026/six-month/2026-H1/all.vi.pdf" in first.stdout
    second = runner.invoke(app, args)
    assert second.exit_code == 0 and second.stdout == ""
    listing = runner.invoke(app, ["archive", "--archive", str(archive), "--verify"])
    assert listing.exit_code == 0 and "all.en.xlsx" in listing.stdout


def test_the_archive_defaults_to_the_collectors_data_dir(register: str, tmp_path: Path) -> None:
    """Without --archive the scheduler writes where the web UI's Reports page reads."""
    runner = CliRunner()
    args = ["generate-due", "--today", "2026-06-01", "--site", "dist", "--db", register]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert (
        tmp_path / "data" / "reports" / "2026" / "six-month" / "2026-H1" / "dist.vi.pdf"
    ).exists()
    listing = runner.invoke(app, ["archive", "--verify"])
    assert listing.exit_code == 0 and "2026/six-month/2026-H1/dist.en.xlsx" in listing.stdout
