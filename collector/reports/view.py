"""A report turned into the texts every renderer shows, so HTML, PDF and XLSX agree."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from campuswatch.collector.reports.i18n import duration, number, percent, share_text, t
from campuswatch.collector.reports.kpis import ComplianceReport, Kpi, Measure, SchoolFigures

TREND_ARROWS = {"up": "↑", "down": "↓", "flat": "→"}


@dataclass(frozen=True, slots=True)
class KpiRow:
    code: str
    name: str
    result: str  # "7 / 8" for a share, the count otherwise
    value: str  # "87.5 %" for a share, the count otherwise
    target: str
    status: str
    passed: bool | None
    previous: str
    trend: str
    improved: bool | None
    parts: str


def measure_texts(measure: Measure | None, lang: str) -> tuple[str, str]:
    """(result, value) texts: ("7 / 8", "87.5 %") or ("12", "12")."""
    if measure is None:
        return "—", "—"
    if measure.denominator is None:
        decimals = 0 if float(measure.numerator).is_integer() else 1
        count = number(measure.numerator, lang, decimals)
        return count, count
    fraction = f"{number(measure.numerator, lang)} / {number(measure.denominator, lang)}"
    return fraction, share_text(measure.numerator, measure.denominator, lang)


def _target_text(kpi: Kpi, lang: str) -> str:
    if kpi.target is None:
        return ""
    text = percent(kpi.target, lang)
    return text if kpi.target >= 1.0 else f"≥ {text}"


def kpi_row(kpi: Kpi, lang: str) -> KpiRow:
    result, value = measure_texts(kpi.current, lang)
    if not kpi.is_share:
        value = ""  # a count has no share; repeating it in "value" reads as a second figure
    previous_result, previous = measure_texts(kpi.previous, lang)
    if kpi.previous is not None and kpi.previous.denominator is None:
        previous = previous_result
    trend = kpi.trend
    if trend is None:
        trend_text = "—"
    elif trend == "flat":
        trend_text = f"{TREND_ARROWS[trend]} {t('unchanged', lang)}"
    elif kpi.improved is None:
        trend_text = TREND_ARROWS[trend]  # a change that is neither better nor worse
    else:
        word = t("improved", lang) if kpi.improved else t("worsened", lang)
        trend_text = f"{TREND_ARROWS[trend]} {word}"
    passed = kpi.passed
    status = "" if passed is None else t("pass" if passed else "fail", lang)
    parts = ", ".join(f"{t(key, lang)}: {number(value, lang)}" for key, value in kpi.parts.items())
    return KpiRow(
        kpi.code,
        t(kpi.code, lang),
        result,
        value,
        _target_text(kpi, lang),
        status,
        passed,
        previous,
        trend_text,
        kpi.improved,
        parts,
    )


def uplink_text(uplink: str | None, lang: str) -> str:
    return t(f"uplink_{uplink or 'none'}", lang)


def school_row(school: SchoolFigures, lang: str) -> list[str]:
    def share(numerator: int, denominator: int) -> str:
        if denominator == 0:
            return "—"
        return f"{numerator} / {denominator} ({share_text(numerator, denominator, lang)})"

    outages = "—"
    if school.outages is not None and school.outage_minutes is not None:
        minutes = number(school.outage_minutes, lang, 1)
        outages = f"{school.outages} ({minutes} {t('minutes_unit', lang)})"
    return [
        school.name,
        uplink_text(school.uplink_type, lang),
        t("yes" if school.reachable else "no", lang),
        share(school.computers_protected, school.computers),
        share(school.assets_registered, school.assets),
        share(school.information_systems_classified, school.information_systems),
        number(school.alerts, lang),
        outages,
    ]


def school_headers(lang: str) -> list[str]:
    return [
        t(key, lang)
        for key in (
            "school",
            "uplink",
            "reachable_header",
            "computers_protected",
            "assets_registered",
            "systems_classified",
            "alerts",
            "outages",
        )
    ]


def local_time(moment: datetime, report: ComplianceReport) -> str:
    return moment.astimezone(report.period.calendar.zone).strftime("%d/%m/%Y %H:%M")


def ack_texts(report: ComplianceReport, lang: str) -> tuple[str, str]:
    return duration(report.alerts.ack_median_s, lang), duration(report.alerts.ack_p90_s, lang)
