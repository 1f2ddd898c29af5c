"""Rendered reports: the PDF (rasterised and read back), XLSX and HTML carry the API's figures.

Acceptance: "A PDF report renders (pdftoppm to PNG) with the KPIs matching the API's
figures". The figures come from ``build_report`` (what the API serves via ``to_dict``);
the text pdftotext extracts from the PDF must show each of them on its KPI's row.
"""

from __future__ import annotations

import io
import re
import shutil
import subprocess
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

import pytest
from openpyxl import load_workbook

from campuswatch.collector.db.models import Site
from campuswatch.collector.reports.i18n import CATALOGUE, percent, t
from campuswatch.collector.reports.kpis import ComplianceReport, build_report
from campuswatch.collector.reports.render import render_html, render_pdf, render_xlsx
from tests.collector.reports.conftest import NOW, District
from tests.support import required

ARTEFACTS = Path(__file__).resolve().parents[3] / "artifacts" / "reports"


def _need(tool: str) -> None:
    required.program(tool, "poppler-utils")


def _report(district: District) -> ComplianceReport:
    return build_report(district.session, district.period, "dist", series=district.store, now=NOW)


def _expected_cells(report: ComplianceReport, lang: str) -> dict[str, list[str]]:
    """Per KPI, the figures its row must show, written independently of the view code."""
    decimal = "," if lang == "vi" else "."
    cells: dict[str, list[str]] = {}
    for item in report.to_dict()["kpis"]:
        current = item["current"]
        if current["denominator"] is None:
            value = current["numerator"]
            text = f"{value:.0f}" if float(value).is_integer() else f"{value:.1f}"
            cells[item["code"]] = [text.replace(".", decimal)]
        else:
            # Half-up to one decimal from the exact fraction (3 / 7 → 42.9).
            exact = Decimal(current["numerator"] * 100) / Decimal(current["denominator"])
            tenths = exact.quantize(Decimal("0.1"), rounding=ROUND_HALF_UP)
            share = f"{tenths:.1f}".replace(".", decimal)
            cells[item["code"]] = [
                f"{current['numerator']} / {current['denominator']}",
                f"{share} %",
            ]
    return cells


@pytest.mark.parametrize("lang", ["en", "vi"])
def test_pdf_renders_and_shows_the_api_figures(
    district: District, tmp_path: Path, lang: str
) -> None:
    _need("pdftoppm")
    _need("pdftotext")
    report = _report(district)
    pdf = tmp_path / f"report-{lang}.pdf"
    pdf.write_bytes(render_pdf(report, lang))
    assert pdf.read_bytes().startswith(b"%PDF-")

    subprocess.run(
        ["pdftoppm", "-png", "-r", "60", "-f", "1", "-l", "1", str(pdf), str(tmp_path / "page")],
        check=True,
        timeout=120,
    )
    pages = sorted(tmp_path.glob("page*.png"))
    assert pages and pages[0].stat().st_size > 10_000
    ARTEFACTS.mkdir(parents=True, exist_ok=True)
    backend = district.session.get_bind().dialect.name
    shutil.copy(pages[0], ARTEFACTS / f"{backend}-{lang}-page1.png")

    text = subprocess.run(
        ["pdftotext", "-layout", str(pdf), "-"], check=True, capture_output=True, timeout=120
    ).stdout.decode("utf-8")
    assert report.period.label(lang) in text
    lines = text.splitlines()
    for code, cells in _expected_cells(report, lang).items():
        label = t(code, lang)
        # The label may wrap inside its cell; its first words start the KPI's row.
        head = " ".join(label.split()[:3])
        rows = [line for line in lines if line.strip().startswith(head)]
        assert rows, f"{code}: no row starting with {head!r}"
        # pdftotext drops the thin spaces around "/" and before "%": compare without spaces.
        row = rows[0].replace(" ", "")
        for cell in cells:
            assert cell.replace(" ", "") in row, f"{code}: {cell!r} not in {rows[0]!r}"


def test_xlsx_has_the_same_figures_and_a_sheet_per_school(district: District) -> None:
    report = _report(district)
    workbook = load_workbook(io.BytesIO(render_xlsx(report, "en")))
    kpis = workbook["KPIs"]
    header_row = next(
        row for row in kpis.iter_rows(values_only=True) if row and row[0] == "Indicator"
    )
    columns = {name: index for index, name in enumerate(header_row)}
    rows = {
        row[0]: row
        for row in kpis.iter_rows(values_only=True)
        if row and row[0] in {CATALOGUE[k.code]["en"] for k in report.kpis}
    }
    for kpi in report.kpis:
        row = rows[CATALOGUE[kpi.code]["en"]]
        assert row[columns["Numerator"]] == kpi.current.numerator
        assert row[columns["Denominator"]] == kpi.current.denominator
        if kpi.current.denominator:
            # The share cell holds the rounded ratio, so Excel's 0.0% shows the PDF's text.
            assert f"{row[columns['Value']] * 100:.1f} %" == percent(kpi.current.value, "en")
    assert workbook.sheetnames == ["KPIs", "Schools", "Trường A", "Trường B", "Trường C"]
    school_a = {row[0]: row[1] for row in workbook["Trường A"].iter_rows(values_only=True)}
    assert (school_a["Computers"], school_a["Computers protected"]) == (4, 2)
    assert (school_a["Internet outages"], school_a["Outage time (minutes)"]) == (1, 20.0)


def _visible_text(html: str) -> str:
    body = re.sub(r"<style.*?</style>", " ", html, flags=re.S)
    return re.sub(r"<[^>]+>", " ", body)


def test_vietnamese_output_has_no_english_labels(district: District) -> None:
    report = _report(district)
    html = render_html(report, "vi")
    text = _visible_text(html)
    english_only = {entry["en"] for entry in CATALOGUE.values() if entry["en"] != entry["vi"]}
    # Words of 4+ letters from the English catalogue that are not also Vietnamese text.
    vietnamese_words = set(re.findall(r"\w+", " ".join(e["vi"] for e in CATALOGUE.values())))
    english_words = {
        word
        for phrase in english_only
        for word in re.findall(r"[A-Za-z]{4,}", phrase)
        if word not in vietnamese_words
    }
    found = sorted(word for word in english_words if re.search(rf"\b{word}\b", text))
    assert found == []
    assert "Báo cáo tháng 2/2026" in text and "Chưa đạt" in text
    xlsx = load_workbook(io.BytesIO(render_xlsx(report, "vi")))
    site_ids = {school.site_id for school in report.schools}
    cells = " ".join(
        str(value)
        for sheet in xlsx.worksheets
        for row in sheet.iter_rows(values_only=True)
        for value in row
        if isinstance(value, str) and value not in site_ids
    )
    leftovers = {word for word in english_words if re.search(rf"\b{word}\b", cells)}
    assert leftovers == set()


def test_html_is_escaped_and_print_ready(district: District) -> None:
    site = district.session.get_one(Site, "school-a")
    site.name = "<script>alert(1)</script> A&B"
    district.session.commit()
    report = _report(district)
    html = render_html(report, "en")
    assert "@page" in html and 'lang="en"' in html
    assert "Monthly report, February 2026" in html
    assert "<script>" not in html and "&lt;script&gt;alert(1)&lt;/script&gt; A&amp;B" in html
