"""Report renderers: HTML (Jinja2), PDF (WeasyPrint from that HTML), XLSX (openpyxl).

All three read the same ``view`` texts, so a figure cannot differ between formats.
"""

from __future__ import annotations

import io
import re
from pathlib import Path
from typing import Any, Final, Literal

from jinja2 import Environment, FileSystemLoader, select_autoescape

from campuswatch.collector.reports.i18n import number, t
from campuswatch.collector.reports.kpis import ComplianceReport
from campuswatch.collector.reports.view import (
    ack_texts,
    kpi_row,
    local_time,
    school_headers,
    school_row,
)
from campuswatch.collector.signals import LEVELS

Format = Literal["html", "pdf", "xlsx"]
FORMATS: Final[tuple[Format, ...]] = ("html", "pdf", "xlsx")
TEMPLATES_DIR: Final = Path(__file__).parent / "templates"
# Excel refuses these in sheet names, and names are limited to 31 characters.
_SHEET_BAD_CHARS: Final = re.compile(r"[\[\]:*?/\\]")

_environment = Environment(
    loader=FileSystemLoader(TEMPLATES_DIR),
    autoescape=select_autoescape(["html", "j2"]),
    trim_blocks=True,
    lstrip_blocks=True,
)


def report_title(report: ComplianceReport, lang: str) -> str:
    return report.period.label(lang)


def scope_name(report: ComplianceReport, lang: str) -> str:
    if report.site_id is None:
        return t("all_sites", lang)
    return report.site_name or report.site_id


def notes(report: ComplianceReport, lang: str) -> list[str]:
    return [
        t("note_live", lang).format(time=local_time(report.live_measured_at, report)),
        t("note_register", lang).format(time=local_time(report.measured_at, report)),
        t("note_outages" if report.outages_available else "note_no_outages", lang),
    ]


def render_html(report: ComplianceReport, lang: str) -> str:
    template = _environment.get_template("report.html.j2")
    previous_levels = report.previous_alerts.by_level
    context: dict[str, Any] = {
        "lang": lang,
        "t": lambda key: t(key, lang),
        "title": report_title(report, lang),
        "scope": scope_name(report, lang),
        "span": report.period.span(lang),
        "generated": local_time(report.generated_at, report),
        "kpi_rows": [kpi_row(kpi, lang) for kpi in report.kpis],
        "alert_rows": [
            (
                level,
                number(report.alerts.by_level.get(level, 0), lang),
                number(previous_levels.get(level, 0), lang),
            )
            for level in LEVELS
        ],
        "alerts": report.alerts,
        "ack_median": ack_texts(report, lang)[0],
        "ack_p90": ack_texts(report, lang)[1],
        "school_headers": school_headers(lang),
        "school_rows": [school_row(school, lang) for school in report.schools],
        "notes": notes(report, lang),
    }
    return template.render(context)


def render_pdf(report: ComplianceReport, lang: str) -> bytes:
    # Imported here: WeasyPrint loads Pango at import time, which only report users need.
    from weasyprint import HTML

    pdf = HTML(string=render_html(report, lang), base_url=str(TEMPLATES_DIR)).write_pdf()
    assert pdf is not None
    return bytes(pdf)


def _sheet_title(name: str, used: set[str]) -> str:
    base = _SHEET_BAD_CHARS.sub("_", name).strip("'") or "_"
    title, counter = base[:31], 2
    while title.lower() in used:
        suffix = f" ({counter})"
        title, counter = base[: 31 - len(suffix)] + suffix, counter + 1
    used.add(title.lower())
    return title


def render_xlsx(report: ComplianceReport, lang: str) -> bytes:
    """Sheet 1: the KPIs (numbers as numbers, texts as shown); then all schools; then one
    sheet per school."""
    from openpyxl import Workbook
    from openpyxl.styles import Font

    bold = Font(bold=True)
    workbook = Workbook()
    used: set[str] = set()
    sheet = workbook.active
    assert sheet is not None
    sheet.title = _sheet_title(t("kpi_sheet", lang), used)
    sheet.append([report_title(report, lang)])
    sheet["A1"].font = Font(bold=True, size=14)
    sheet.append([t("scope", lang), scope_name(report, lang)])
    sheet.append([t("period", lang), report.period.span(lang)])
    sheet.append([t("generated", lang), local_time(report.generated_at, report)])
    sheet.append([])
    headers = ["indicator", "result", "value", "target", "status", "previous", "trend", "details"]
    sheet.append([t(key, lang) for key in headers] + ["numerator", "denominator", "ratio"])
    for cell in sheet[sheet.max_row]:
        cell.font = bold
    for kpi in report.kpis:
        row = kpi_row(kpi, lang)
        current = kpi.current
        sheet.append(
            [
                row.name,
                row.result,
                row.value,
                row.target,
                row.status,
                row.previous,
                row.trend,
                row.parts,
                current.numerator,
                current.denominator,
                current.value,
            ]
        )
        sheet.cell(sheet.max_row, 11).number_format = "0.0%"
    sheet.append([])
    sheet.append([t("alerts_heading", lang)])
    sheet.cell(sheet.max_row, 1).font = bold
    for level in LEVELS:
        sheet.append([t(level, lang), report.alerts.by_level.get(level, 0)])
    median, p90 = ack_texts(report, lang)
    sheet.append([t("ack_median", lang), median])
    sheet.append([t("ack_p90", lang), p90])
    sheet.append([])
    for note in notes(report, lang):
        sheet.append([note])
    sheet.column_dimensions["A"].width = 60
    for column in "BCDEFGH":
        sheet.column_dimensions[column].width = 16

    if report.schools:
        overview = workbook.create_sheet(_sheet_title(t("schools_sheet", lang), used))
        overview.append(school_headers(lang))
        for cell in overview[1]:
            cell.font = bold
        for school in report.schools:
            overview.append(school_row(school, lang))
        overview.column_dimensions["A"].width = 40
    for school in report.schools:
        detail = workbook.create_sheet(_sheet_title(school.name, used))
        detail.append([school.name, school.site_id])
        detail["A1"].font = Font(bold=True, size=12)
        for header, cell in zip(
            school_headers(lang)[1:], school_row(school, lang)[1:], strict=True
        ):
            detail.append([header, cell])
        detail.column_dimensions["A"].width = 40
        detail.column_dimensions["B"].width = 30
    buffer = io.BytesIO()
    workbook.save(buffer)
    return buffer.getvalue()


def render(report: ComplianceReport, lang: str, output_format: Format | str) -> bytes:
    if output_format == "html":
        return render_html(report, lang).encode("utf-8")
    if output_format == "pdf":
        return render_pdf(report, lang)
    if output_format == "xlsx":
        return render_xlsx(report, lang)
    raise ValueError(f"unknown format {output_format!r}; expected html, pdf or xlsx")
