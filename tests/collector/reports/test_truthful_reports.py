"""Issue 19 item 3: reports that tell the truth.

A fresh install archives nothing for periods that ended before it; a closed period reads
its antivirus and broadband figures from the daily KPI snapshots, never today's state; one
rounding rule gives one text for one ratio in the UI, the wall, HTML, PDF and XLSX; the
XLSX holds numbers as numbers under headers in the report's language.
"""

from __future__ import annotations

import io
import re
import subprocess
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from openpyxl import load_workbook
from sqlalchemy.orm import Session, sessionmaker

from campuswatch.collector.db.engine import make_engine, session_factory, upgrade
from campuswatch.collector.db.models import Site
from campuswatch.collector.reports.i18n import CATALOGUE, percent_points, share_text, t
from campuswatch.collector.reports.kpis import Kpi, Measure, build_report
from campuswatch.collector.reports.periods import report_period
from campuswatch.collector.reports.render import render_html, render_pdf, render_xlsx
from campuswatch.collector.reports.schedule import list_archive, schedule_states
from campuswatch.collector.reports.scheduler import ReportScheduler
from campuswatch.collector.reports.snapshots import take_daily_snapshot
from campuswatch.collector.reports.view import kpi_row
from campuswatch.collector.web.overview import Figures
from campuswatch.collector.web.rendering import format_percent
from tests.collector.reports.conftest import NOW, District
from tests.support import required
from tests.support.device_state import set_latest

# "Today" of the issue: the collector was installed at 09:00 UTC and runs its first pass.
INSTALLED = datetime(2026, 12, 3, 9, 0, tzinfo=UTC)


@pytest.fixture
def fresh_install(db_url: str) -> Iterator[sessionmaker[Session]]:
    upgrade(db_url)
    engine = make_engine(db_url)
    sessions = session_factory(engine)
    with sessions() as session:
        session.add(Site(id="prov", level="province", name="Tỉnh", created_at=INSTALLED))
        session.add(
            Site(
                id="school",
                parent_id="prov",
                level="school",
                name="Trường",
                uplink_type="fibre",
                created_at=INSTALLED + timedelta(minutes=1),
            )
        )
        session.commit()
    yield sessions
    engine.dispose()


def test_fresh_install_archives_nothing_for_periods_before_it(
    fresh_install: sessionmaker[Session], tmp_path: Path
) -> None:
    archive = tmp_path / "reports"
    scheduler = ReportScheduler(fresh_install, archive, formats=("html",))
    first_pass = INSTALLED + timedelta(minutes=5)
    written = scheduler.run_once(first_pass)
    # Every latest ended period (November, annual 2026, week 48, …) ended before 3 December.
    assert written == []
    states = schedule_states(list_archive(archive), date(2026, 12, 3), None, installed=INSTALLED)
    ended = [state for state in states if state.state != "upcoming"]
    assert {state.state for state in ended} == {"no_data"}
    assert {state.due.kind for state in ended} >= {"annual", "month", "week"}
    # The running periods began before the install: partial, from the install.
    upcoming = {state.due.kind: state for state in states if state.state == "upcoming"}
    assert upcoming["month"].data_from == INSTALLED


def test_last_months_report_on_a_fresh_install_says_no_data(
    fresh_install: sessionmaker[Session],
) -> None:
    november = report_period("month", date(2026, 11, 15))
    with fresh_install() as session:
        report = build_report(session, november, now=INSTALLED + timedelta(minutes=5))
    assert report.no_data and report.to_dict()["no_data"] is True
    assert report.kpi("av_coverage").current.value is None
    html = render_html(report, "vi")
    assert "Không có số liệu" in html
    assert "Passed" not in html and "Đạt<" not in html


def test_partial_period_says_from_the_install(fresh_install: sessionmaker[Session]) -> None:
    december = report_period("month", date(2026, 12, 3))
    with fresh_install() as session:
        report = build_report(session, december, now=INSTALLED + timedelta(hours=1))
    assert report.data_from == INSTALLED and not report.no_data
    assert "Partial data: from 03/12/2026 16:00" in render_html(report, "en")


def test_closed_period_reads_its_snapshot_not_todays_state(district: District) -> None:
    # The fixture took February's last snapshot: 3 of 7 protected, 1 of 3 on broadband.
    # In March, pc-2 and pc-3 get fresh antivirus and school-b's link comes back.
    fresh = {
        "ts": NOW.isoformat(),
        "status": "protected",
        "products": [
            {
                "name": "Defender",
                "source": "defender",
                "signatures_up_to_date": True,
                "signature_age_hours": 1.0,
            }
        ],
    }
    for pc in ("pc-2", "pc-3"):
        set_latest(district.session, pc, "av", fresh, NOW + timedelta(seconds=1))
    net = {"ts": NOW.isoformat(), "internet_ok": True}
    set_latest(district.session, "pc-5", "net", net, NOW + timedelta(seconds=1))
    district.session.commit()
    later = NOW + timedelta(hours=1)
    february = build_report(district.session, district.period, "dist", now=later)
    av = february.kpi("av_coverage").current
    assert (av.numerator, av.denominator) == (3, 7)
    broadband = february.kpi("broadband").current
    assert (broadband.numerator, broadband.denominator) == (1, 3)
    assert february.live_measured_at == NOW
    # The running month measures now, and February's snapshot is its "previous".
    march = build_report(district.session, district.period.next, "dist", now=later)
    av_now = march.kpi("av_coverage")
    assert (av_now.current.numerator, av_now.current.denominator) == (5, 7)
    assert av_now.previous == Measure(3, 7)
    assert march.kpi("broadband").current == Measure(2, 3)


def test_closed_period_without_a_snapshot_reports_no_live_figures(district: District) -> None:
    january = district.period.previous  # ended; nothing recorded during it
    report = build_report(district.session, january, "dist", now=NOW)
    assert report.kpi("av_coverage").current.value is None
    assert report.live_measured_at is None
    assert "No daily snapshot" in render_html(report, "en")


def test_daily_snapshot_rewrites_only_its_own_day(district: District) -> None:
    session = district.session
    rows = take_daily_snapshot(session, date(2026, 3, 2), NOW)
    session.commit()
    # school-a, school-b, school-c, school-c-lab (computers) and "" (the unplaced PC).
    assert rows == 5
    again = take_daily_snapshot(session, date(2026, 3, 2), NOW + timedelta(hours=1))
    session.commit()
    assert again == rows
    february = build_report(session, district.period, "dist", now=NOW)
    assert february.live_measured_at == NOW  # 28 February's row is untouched


# --- one rounding rule ----------------------------------------------------------------


def test_one_ratio_reads_the_same_in_the_ui_the_wall_and_the_report() -> None:
    """1583 of 2000 is exactly 79.15 %: half-up gives 79.2 % everywhere (the UI said 79.2,
    the PDF truncated to 79.1)."""
    assert percent_points(1583, 2000) == Decimal("79.2")
    figures = Figures(computers=2000, av_protected=1583)
    for lang, expected in (("en", "79.2 %"), ("vi", "79,2 %")):
        ui = format_percent(figures.av_coverage, lang)
        row = kpi_row(Kpi("av_coverage", Measure(1583, 2000), None, target=1.0), lang)
        assert ui == row.value == share_text(1583, 2000, lang) == expected
    # The rule never shows a missed target as met, nor a PC as nothing.
    assert share_text(19999, 20000, "en") == "99.9 %"
    assert share_text(1, 20000, "en") == "0.1 %"
    assert share_text(2, 3, "en") == "66.7 %"


def test_the_same_ratio_in_html_pdf_and_xlsx(district: District, tmp_path: Path) -> None:
    report = build_report(district.session, district.period, "dist", now=NOW)
    # 3 of 7 is 42.857… %: 42.9 % by the rule (truncation printed 42.8 %).
    html = render_html(report, "en")
    row = re.search(r'data-kpi="av_coverage".*?</tr>', html, re.S)
    assert row is not None and "42.9 %" in row.group(0)
    workbook = load_workbook(io.BytesIO(render_xlsx(report, "en")))
    cell = next(
        row[2]
        for row in workbook["KPIs"].iter_rows()
        if row[0].value == CATALOGUE["av_coverage"]["en"]
    )
    assert cell.data_type == "n" and cell.number_format == "0.0%"
    assert f"{cell.value * 100:.1f}" == "42.9"
    required.program("pdftotext", "poppler-utils")
    pdf = tmp_path / "r.pdf"
    pdf.write_bytes(render_pdf(report, "en"))
    text = subprocess.run(
        ["pdftotext", "-layout", str(pdf), "-"], check=True, capture_output=True, timeout=120
    ).stdout.decode("utf-8")
    assert "42.9" in text.replace(" ", "") and "42.8" not in text.replace(" ", "")


# --- XLSX: numbers as numbers, headers in the report's language ------------------------


@pytest.mark.parametrize("lang", ["vi", "en"])
def test_xlsx_numbers_are_numbers_and_headers_are_translated(district: District, lang: str) -> None:
    report = build_report(district.session, district.period, "dist", now=NOW)
    workbook = load_workbook(io.BytesIO(render_xlsx(report, lang)))
    kpis = workbook.worksheets[0]
    header = next(
        [cell.value for cell in row]
        for row in kpis.iter_rows()
        if row[0].value == t("indicator", lang)
    )
    if lang == "vi":
        english = {"numerator", "denominator", "ratio", "Numerator", "Denominator"}
        assert not english & set(header)
    by_name = {row[0].value: row for row in kpis.iter_rows()}
    av = by_name[t("av_coverage", lang)]
    assert [av[i].data_type for i in (2, 3, 8, 9)] == ["n", "n", "n", "n"]
    assert (av[8].value, av[9].value) == (3, 7)
    alerts = by_name[t("alerts", lang)]
    assert alerts[2].data_type == "n" and alerts[2].value == 3
    # Time to acknowledge: 10 and 30 minutes → median 10 (nearest rank), in minutes.
    median = by_name[f"{t('ack_median', lang)} ({t('minutes_unit', lang)})"]
    assert median[1].data_type == "n" and median[1].value == 10.0
    schools = workbook.worksheets[1]
    school_header = [cell.value for cell in schools[1]]
    assert school_header[0] == t("school", lang)
    school_a = next(row for row in schools.iter_rows() if row[0].value == "Trường A")
    numbers = [cell for cell in school_a[3:] if cell.value is not None]
    assert numbers and all(cell.data_type == "n" for cell in numbers)
    protected_share = school_a[5]
    assert protected_share.number_format == "0.0%" and protected_share.value == 0.5
