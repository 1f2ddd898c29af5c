"""Report renderers: HTML (Jinja2), PDF (WeasyPrint from that HTML), XLSX (openpyxl).

All three read the same ``view`` texts, so a figure cannot differ between formats.
"""

from __future__ import annotations

import io
import re
from pathlib import Path
from typing import Any, Final, Literal

from jinja2 import Environment, FileSystemLoader, select_autoescape

from campuswatch.collector.reports.i18n import number, percent_points, t
from campuswatch.collector.reports.kpis import ComplianceReport, Kpi, Measure, SchoolFigures
from campuswatch.collector.reports.view import (
    ack_texts,
    kpi_row,
    local_time,
    school_headers,
    school_row,
    uplink_text,
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
    found = []
    if report.no_data:
        found.append(t("note_no_data", lang).format(date=installed_text(report)))
    elif report.data_from is not None:
        found.append(t("note_partial", lang).format(date=local_time(report.data_from, report)))
    if report.live_measured_at is None:
        found.append(t("note_no_snapshot", lang))
    else:
        found.append(t("note_live", lang).format(time=local_time(report.live_measured_at, report)))
    found += [
        t("note_register", lang).format(time=local_time(report.measured_at, report)),
        t("note_outages" if report.outages_available else "note_no_outages", lang),
    ]
    return found


def installed_text(report: ComplianceReport) -> str:
    return "—" if report.installed_at is None else local_time(report.installed_at, report)


def coverage_line(report: ComplianceReport, lang: str) -> str | None:
    """Under the title: "no data" or "partial: from <install>" when the install cuts the
    period, so no one reads a few days of data as the whole period."""
    if report.no_data:
        return t("no_data_banner", lang).format(date=installed_text(report))
    if report.data_from is not None:
        return t("partial_banner", lang).format(date=local_time(report.data_from, report))
    return None


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
        "coverage": coverage_line(report, lang),
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


def _ratio(numerator: float, denominator: float | None) -> float | None:
    """A share as the number an XLSX cell holds: the one rounding rule's percentage / 100,
    so Excel's ``0.0%`` shows exactly the text the PDF and the UI show."""
    if denominator is None:
        return None
    points = percent_points(numerator, denominator)
    return None if points is None else float(points / 100)


def _measure_number(measure: Measure | None) -> float | None:
    if measure is None:
        return None
    if measure.denominator is None:
        return measure.numerator
    return _ratio(measure.numerator, measure.denominator)


SCHOOL_COLUMNS: Final = (
    "school",
    "uplink",
    "reachable_header",
    "computers",
    "computers_protected",
    "share_column",
    "assets_column",
    "assets_registered",
    "share_column",
    "systems_column",
    "systems_classified",
    "share_column",
    "alerts",
    "outages",
    "outage_minutes",
)


def _school_cells(school: SchoolFigures, lang: str) -> list[object]:
    return [
        school.name,
        uplink_text(school.uplink_type, lang),
        t("yes" if school.reachable else "no", lang),
        school.computers,
        school.computers_protected,
        _ratio(school.computers_protected, school.computers),
        school.assets,
        school.assets_registered,
        _ratio(school.assets_registered, school.assets),
        school.information_systems,
        school.information_systems_classified,
        _ratio(school.information_systems_classified, school.information_systems),
        school.alerts,
        school.outages,
        school.outage_minutes,
    ]


def render_xlsx(report: ComplianceReport, lang: str) -> bytes:
    """Sheet 1: the KPIs; then all schools; then one sheet per school. Every figure is a
    number cell (shares as ratios formatted ``0.0%``, rounded by the one rule), every
    header and label in the report's language; "result" keeps the "7 / 8" text as shown."""
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
    coverage = coverage_line(report, lang)
    if coverage:
        sheet.append([coverage])
    sheet.append([])
    headers = (
        "indicator",
        "result",
        "value",
        "target",
        "status",
        "previous",
        "trend",
        "details",
        "numerator",
        "denominator",
    )
    sheet.append([t(key, lang) for key in headers])
    for cell in sheet[sheet.max_row]:
        cell.font = bold
    for kpi in report.kpis:
        row = kpi_row(kpi, lang)
        sheet.append(
            [
                row.name,
                row.result,
                _measure_number(kpi.current),
                kpi.target,
                row.status,
                _measure_number(kpi.previous),
                row.trend,
                row.parts,
                kpi.current.numerator,
                kpi.current.denominator,
            ]
        )
        number_format = "0.0%" if kpi.is_share else ("0" if _whole(kpi) else "0.0")
        for index in (3, 6):  # value and previous
            sheet.cell(sheet.max_row, index).number_format = number_format
        sheet.cell(sheet.max_row, 4).number_format = "0.0%"  # a target is always a share
    sheet.append([])
    sheet.append([t("alerts_heading", lang)])
    sheet.cell(sheet.max_row, 1).font = bold
    for level in LEVELS:
        sheet.append([t(level, lang), report.alerts.by_level.get(level, 0)])
    # Durations as numbers of minutes (the unit in the label), not "10.0 min" texts.
    unit = t("minutes_unit", lang)
    for key, seconds in (
        ("ack_median", report.alerts.ack_median_s),
        ("ack_p90", report.alerts.ack_p90_s),
    ):
        minutes = None if seconds is None else round(seconds / 60, 1)
        sheet.append([f"{t(key, lang)} ({unit})", minutes])
        sheet.cell(sheet.max_row, 2).number_format = "0.0"
    sheet.append([])
    for note in notes(report, lang):
        sheet.append([note])
    sheet.column_dimensions["A"].width = 60
    for letter in "BCDEFGHIJ":
        sheet.column_dimensions[letter].width = 16

    school_headers = [t(key, lang) for key in SCHOOL_COLUMNS]
    share_columns = [i + 1 for i, key in enumerate(SCHOOL_COLUMNS) if key == "share_column"]
    if report.schools:
        overview = workbook.create_sheet(_sheet_title(t("schools_sheet", lang), used))
        overview.append(school_headers)
        for cell in overview[1]:
            cell.font = bold
        for school in report.schools:
            overview.append(_school_cells(school, lang))
            for share_column in share_columns:
                overview.cell(overview.max_row, share_column).number_format = "0.0%"
        overview.column_dimensions["A"].width = 40
    for school in report.schools:
        detail = workbook.create_sheet(_sheet_title(school.name, used))
        detail.append([school.name, school.site_id])
        detail["A1"].font = Font(bold=True, size=12)
        for index, (header, value) in enumerate(
            zip(school_headers[1:], _school_cells(school, lang)[1:], strict=True), start=2
        ):
            detail.append([header, value])
            if index in share_columns:
                detail.cell(detail.max_row, 2).number_format = "0.0%"
        detail.column_dimensions["A"].width = 40
        detail.column_dimensions["B"].width = 30
    buffer = io.BytesIO()
    workbook.save(buffer)
    return buffer.getvalue()


def _whole(kpi: Kpi) -> bool:
    return float(kpi.current.numerator).is_integer()


def render(report: ComplianceReport, lang: str, output_format: Format | str) -> bytes:
    if output_format == "html":
        return render_html(report, lang).encode("utf-8")
    if output_format == "pdf":
        return render_pdf(report, lang)
    if output_format == "xlsx":
        return render_xlsx(report, lang)
    raise ValueError(f"unknown format {output_format!r}; expected html, pdf or xlsx")
