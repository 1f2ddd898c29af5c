"""Period arithmetic: ISO weeks, year boundaries, leap years, school and plan calendars."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest

from campuswatch.collector.reports.periods import (
    PERIOD_KINDS,
    MonthDay,
    ReportCalendar,
    report_period,
)


def test_week_is_iso_monday_to_sunday_and_crosses_the_year() -> None:
    week = report_period("week", date(2026, 1, 1))  # a Thursday
    assert (week.start, week.end) == (date(2025, 12, 29), date(2026, 1, 4))
    assert week.key == "2026-W01"
    assert week.previous.key == "2025-W52"
    assert week.label_en == "Weekly report, week 1 of 2026"


def test_iso_week_53() -> None:
    week = report_period("week", date(2021, 1, 3))  # Sunday, still ISO week 53 of 2020
    assert (week.start, week.end, week.key) == (date(2020, 12, 28), date(2021, 1, 3), "2020-W53")
    assert report_period("week", date(2021, 1, 4)).previous == week
    assert week.previous.key == "2020-W52"


def test_month_leap_february_and_previous_across_the_year() -> None:
    leap = report_period("month", date(2024, 2, 29))
    assert (leap.start, leap.end, leap.days) == (date(2024, 2, 1), date(2024, 2, 29), 29)
    assert report_period("month", date(2025, 2, 10)).end == date(2025, 2, 28)
    january = report_period("month", date(2026, 1, 31))
    assert january.previous.key == "2025-12"
    assert january.previous.end == date(2025, 12, 31)
    assert january.label_vi == "Báo cáo tháng 1/2026"


def test_quarter() -> None:
    q1 = report_period("quarter", date(2026, 3, 31))
    assert (q1.start, q1.end, q1.key) == (date(2026, 1, 1), date(2026, 3, 31), "2026-Q1")
    assert q1.previous.key == "2025-Q4"
    assert q1.label_vi == "Báo cáo quý I/2026"


def test_six_month_and_annual_close_before_their_deadlines() -> None:
    half = report_period("six-month", date(2026, 4, 1))
    assert (half.start, half.end) == (date(2025, 12, 1), date(2026, 5, 31))
    assert half.label_vi == "Báo cáo 6 tháng đầu năm 2026"
    assert half.label_en == "Six-month report, first half 2026"
    annual = report_period("annual", date(2026, 11, 30))
    assert (annual.start, annual.end) == (date(2025, 12, 1), date(2026, 11, 30))
    # 1 December already belongs to the next reporting year.
    assert report_period("annual", date(2026, 12, 1)).key == "2027-annual"
    assert annual.previous.key == "2025-annual"
    # Leap year: the six-month period of plan year 2024 includes 29 February.
    assert report_period("six-month", date(2024, 1, 1)).days == 31 + 31 + 29 + 31 + 30 + 31


def test_school_year_and_semesters_default_calendar() -> None:
    s1 = report_period("semester1", date(2025, 10, 1))
    assert (s1.start, s1.end) == (date(2025, 9, 5), date(2026, 1, 15))
    assert s1.label_vi == "Báo cáo sơ kết học kỳ I năm học 2025–2026"
    assert s1.previous.key == "2024-2025-S1"
    # Semester 2 of 2025–2026 has not started on 1 Oct 2025: the latest one is last year's.
    s2 = report_period("semester2", date(2025, 10, 1))
    assert (s2.start, s2.end, s2.key) == (date(2025, 1, 16), date(2025, 5, 31), "2024-2025-S2")
    year = report_period("school-year", date(2025, 9, 4))  # summer: the year that just ended
    assert (year.start, year.end) == (date(2024, 9, 5), date(2025, 5, 31))
    assert report_period("school-year", date(2025, 9, 5)).key == "2025-2026"


def test_school_calendar_is_configurable() -> None:
    calendar = ReportCalendar(
        school_year_start=MonthDay(8, 25),
        semester2_start=MonthDay(1, 20),
        school_year_end=MonthDay(5, 25),
        plan_year_start=MonthDay(1, 1),
    )
    s1 = report_period("semester1", date(2025, 9, 1), calendar)
    assert (s1.start, s1.end) == (date(2025, 8, 25), date(2026, 1, 19))
    half = report_period("six-month", date(2026, 3, 1), calendar)
    assert (half.start, half.end) == (date(2026, 1, 1), date(2026, 6, 30))
    with pytest.raises(ValueError):
        ReportCalendar(school_year_start=MonthDay(3, 1))


def test_leap_day_boundary_is_clamped_in_common_years() -> None:
    calendar = ReportCalendar(school_year_end=MonthDay(2, 29), semester2_start=MonthDay(1, 10))
    assert report_period("school-year", date(2025, 10, 1), calendar).end == date(2026, 2, 28)
    assert report_period("school-year", date(2023, 10, 1), calendar).end == date(2024, 2, 29)


@pytest.mark.parametrize("kind", PERIOD_KINDS)
def test_every_kind_tiles_time_consistently(kind: str) -> None:
    """Over four years each period contains ``at``-ish days, previous ends before start,
    and next starts after end, for every kind."""
    day = date(2023, 1, 1)
    while day < date(2027, 1, 1):
        period = report_period(kind, day)
        assert period.start <= day
        assert period.previous.end < period.start
        assert period.next.start > period.end
        if kind not in ("semester1", "semester2", "school-year", "six-month"):
            # Calendar kinds have no gaps: the day is inside its period.
            assert day <= period.end
            assert period.previous.end == period.start - timedelta(days=1)
        day += timedelta(days=11)


def test_instants_are_local_midnights() -> None:
    period = report_period("month", date(2026, 2, 1))
    assert period.start_at.astimezone(UTC) == datetime(2026, 1, 31, 17, tzinfo=UTC)
    assert period.end_at.astimezone(UTC) == datetime(2026, 2, 28, 17, tzinfo=UTC)
    # A datetime is read as its local day: 31 Jan 18:00 UTC is 1 Feb in Vietnam.
    assert report_period("month", datetime(2026, 1, 31, 18, tzinfo=UTC)).key == "2026-02"


def test_unknown_kind() -> None:
    with pytest.raises(ValueError, match="unknown period kind"):
        report_period("fortnight", date(2026, 1, 1))
