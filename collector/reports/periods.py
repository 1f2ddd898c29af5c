"""Report periods: which dates a weekly … annual report covers, and its title in vi and en.

Every kind answers "the most recent period of this kind that has started on or before
``at``", so ``report_period("month", 2026-02-10)`` is February 2026 (in progress) and
``report_period("semester2", 2025-10-01)`` is semester 2 of school year 2024–2025.

Two calendars meet here, and both are configurable through ``ReportCalendar``:

* the **school year** (Ministry of Education timeline): school year ``Y–Y+1`` starts on
  5 September of ``Y``, semester 2 starts on 16 January of ``Y+1`` (semester 1 ends the
  day before, ahead of Tết), and the year ends on 31 May of ``Y+1``. Kinds ``semester1``
  (the mid-year review), ``semester2`` and ``school-year`` (the end-of-year review).
* the **plan reporting year** of the commune plan, whose six-month report is due before
  5 June and annual report before 5 December: the data must be closed before those dates,
  so reporting year ``N`` runs 1 December ``N-1`` – 30 November ``N`` and its first six
  months are 1 December ``N-1`` – 31 May ``N``. Kinds ``six-month`` and ``annual``.

``week`` is the ISO week (Monday first, weeks 1–53 of the ISO year), ``month``,
``quarter`` and ``year`` are calendar periods. ``previous`` is the period of the same
kind just before (for semesters: the same semester one school year earlier, because
semester 1 and semester 2 differ by season — exams, Tết — and compare badly).
Dates are local calendar days of ``ReportCalendar.timezone``; ``start_at`` / ``end_at``
give the half-open instant range ``[start 00:00, day after end 00:00)`` in that zone.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from typing import Final, Literal, get_args
from zoneinfo import ZoneInfo

PeriodKind = Literal[
    "week",
    "month",
    "quarter",
    "six-month",
    "semester1",
    "semester2",
    "school-year",
    "annual",
    "year",
]
PERIOD_KINDS: Final[tuple[PeriodKind, ...]] = get_args(PeriodKind)

MONTH_NAMES_EN: Final = (
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
)
ROMAN: Final = ("I", "II", "III", "IV")


@dataclass(frozen=True, slots=True)
class MonthDay:
    month: int
    day: int

    def __post_init__(self) -> None:
        # 2000 is a leap year, so 29 February is accepted as a boundary and then clamped.
        date(2000, self.month, self.day)

    def in_year(self, year: int) -> date:
        """This day in ``year``; 29 February falls back to the 28th in a common year."""
        try:
            return date(year, self.month, self.day)
        except ValueError:
            return date(year, self.month, self.day - 1)


@dataclass(frozen=True, slots=True)
class ReportCalendar:
    """Boundaries of the school year and of the plan reporting year (see module docstring)."""

    school_year_start: MonthDay = field(default_factory=lambda: MonthDay(9, 5))
    semester2_start: MonthDay = field(default_factory=lambda: MonthDay(1, 16))
    school_year_end: MonthDay = field(default_factory=lambda: MonthDay(5, 31))
    plan_year_start: MonthDay = field(default_factory=lambda: MonthDay(12, 1))
    timezone: str = "Asia/Ho_Chi_Minh"

    def __post_init__(self) -> None:
        # The arithmetic below assumes a school year that starts in the second half of a
        # calendar year and whose semester 2 and end fall in the first half of the next.
        if not 7 <= self.school_year_start.month <= 12:
            raise ValueError("school_year_start must be in July–December")
        if not 1 <= self.semester2_start.month <= 6 or not 1 <= self.school_year_end.month <= 8:
            raise ValueError("semester2_start must be in January–June, school_year_end before Sep")
        if (self.semester2_start.month, self.semester2_start.day) >= (
            self.school_year_end.month,
            self.school_year_end.day,
        ):
            raise ValueError("semester 2 must start before the school year ends")
        ZoneInfo(self.timezone)

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    def plan_year_begins(self, plan_year: int) -> date:
        """First day of plan reporting year ``plan_year`` (in the year before when it
        starts in the second half of the calendar year, as the default 1 December does)."""
        offset = 1 if self.plan_year_start.month >= 7 else 0
        return self.plan_year_start.in_year(plan_year - offset)


DEFAULT_CALENDAR: Final = ReportCalendar()


def _add_months(day: date, months: int) -> date:
    index = day.year * 12 + day.month - 1 + months
    year, month = divmod(index, 12)
    return date(year, month + 1, 1) if day.day == 1 else _clamped(year, month + 1, day.day)


def _clamped(year: int, month: int, day: int) -> date:
    while True:
        try:
            return date(year, month, day)
        except ValueError:
            day -= 1


def _span_vi(start: date, end: date) -> str:
    return f"{start:%d/%m/%Y} – {end:%d/%m/%Y}"


def _span_en(start: date, end: date) -> str:
    return f"{start.day} {MONTH_NAMES_EN[start.month - 1][:3]} {start.year} – " + (
        f"{end.day} {MONTH_NAMES_EN[end.month - 1][:3]} {end.year}"
    )


@dataclass(frozen=True, slots=True)
class Period:
    """One report period; ``end`` is the last day included."""

    kind: PeriodKind
    start: date
    end: date
    key: str
    label_vi: str
    label_en: str
    calendar: ReportCalendar = DEFAULT_CALENDAR

    @property
    def previous(self) -> Period:
        return report_period(self.kind, self.start - timedelta(days=1), self.calendar)

    @property
    def next(self) -> Period:
        """The following period (for schedules); semesters skip the other semester."""
        probe = self.end + timedelta(days=1)
        while True:
            candidate = report_period(self.kind, probe, self.calendar)
            if candidate.start > self.end:
                return candidate
            probe += timedelta(days=1)

    @property
    def start_at(self) -> datetime:
        return datetime.combine(self.start, time(0), self.calendar.zone)

    @property
    def end_at(self) -> datetime:
        """Exclusive: midnight starting the day after ``end``."""
        return datetime.combine(self.end + timedelta(days=1), time(0), self.calendar.zone)

    @property
    def days(self) -> int:
        return (self.end - self.start).days + 1

    def label(self, lang: str) -> str:
        return self.label_vi if lang == "vi" else self.label_en

    def span(self, lang: str) -> str:
        return _span_vi(self.start, self.end) if lang == "vi" else _span_en(self.start, self.end)


def report_period(
    kind: PeriodKind | str, at: date, calendar: ReportCalendar = DEFAULT_CALENDAR
) -> Period:
    """The latest period of ``kind`` that started on or before ``at``."""
    if isinstance(at, datetime):
        # A datetime is a date subclass; take its local calendar day, not its UTC one.
        at = at.astimezone(calendar.zone).date() if at.tzinfo else at.date()
    if kind == "week":
        start = at - timedelta(days=at.weekday())
        end = start + timedelta(days=6)
        iso_year, iso_week, _ = start.isocalendar()
        return Period(
            "week",
            start,
            end,
            f"{iso_year}-W{iso_week:02d}",
            f"Báo cáo tuần {iso_week:02d}/{iso_year}",
            f"Weekly report, week {iso_week} of {iso_year}",
            calendar,
        )
    if kind == "month":
        start = at.replace(day=1)
        end = _add_months(start, 1) - timedelta(days=1)
        return Period(
            "month",
            start,
            end,
            f"{at.year}-{at.month:02d}",
            f"Báo cáo tháng {at.month}/{at.year}",
            f"Monthly report, {MONTH_NAMES_EN[at.month - 1]} {at.year}",
            calendar,
        )
    if kind == "quarter":
        quarter = (at.month - 1) // 3
        start = date(at.year, quarter * 3 + 1, 1)
        end = _add_months(start, 3) - timedelta(days=1)
        return Period(
            "quarter",
            start,
            end,
            f"{at.year}-Q{quarter + 1}",
            f"Báo cáo quý {ROMAN[quarter]}/{at.year}",
            f"Quarterly report, Q{quarter + 1} {at.year}",
            calendar,
        )
    if kind == "year":
        return Period(
            "year",
            date(at.year, 1, 1),
            date(at.year, 12, 31),
            f"{at.year}",
            f"Báo cáo năm dương lịch {at.year}",
            f"Calendar-year report {at.year}",
            calendar,
        )
    if kind in ("six-month", "annual"):
        plan_year = at.year + 1
        while calendar.plan_year_begins(plan_year) > at:
            plan_year -= 1
        start = calendar.plan_year_begins(plan_year)
        if kind == "six-month":
            end = _add_months(start, 6) - timedelta(days=1)
            return Period(
                "six-month",
                start,
                end,
                f"{plan_year}-H1",
                f"Báo cáo 6 tháng đầu năm {plan_year}",
                f"Six-month report, first half {plan_year}",
                calendar,
            )
        end = calendar.plan_year_begins(plan_year + 1) - timedelta(days=1)
        return Period(
            "annual",
            start,
            end,
            f"{plan_year}-annual",
            f"Báo cáo năm {plan_year}",
            f"Annual report {plan_year}",
            calendar,
        )
    if kind in ("semester1", "semester2", "school-year"):
        year = at.year if at >= calendar.school_year_start.in_year(at.year) else at.year - 1
        if kind == "semester2" and at < calendar.semester2_start.in_year(year + 1):
            year -= 1  # semester 2 of this school year has not started: the one before
        school_year = f"{year}–{year + 1}"
        year_start = calendar.school_year_start.in_year(year)
        semester2 = calendar.semester2_start.in_year(year + 1)
        year_end = calendar.school_year_end.in_year(year + 1)
        if kind == "semester1":
            return Period(
                "semester1",
                year_start,
                semester2 - timedelta(days=1),
                f"{year}-{year + 1}-S1",
                f"Báo cáo sơ kết học kỳ I năm học {school_year}",
                f"Mid-year report, semester 1 of school year {school_year}",
                calendar,
            )
        if kind == "semester2":
            return Period(
                "semester2",
                semester2,
                year_end,
                f"{year}-{year + 1}-S2",
                f"Báo cáo học kỳ II năm học {school_year}",
                f"Semester 2 report, school year {school_year}",
                calendar,
            )
        return Period(
            "school-year",
            year_start,
            year_end,
            f"{year}-{year + 1}",
            f"Báo cáo tổng kết năm học {school_year}",
            f"End-of-year report, school year {school_year}",
            calendar,
        )
    raise ValueError(f"unknown period kind {kind!r}; expected one of {', '.join(PERIOD_KINDS)}")
