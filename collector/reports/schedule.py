"""When each report is due, and the archive that keeps every generated report once.

Due dates (``SCHEDULE``; the grace is how many days after the period the report must be
in): weekly on Monday, monthly on the 1st (in before the 5th), quarterly (before the
10th), the mid-year (semester 1) and end-of-year (school year) reviews, the six-month
report (in before 5 June) and the annual report (in before 5 December) of the commune plan.

Archive layout (the collector's is ``data_dir/reports``, see ``default_archive_dir``)::

    archive_dir/index.json                         every file with its sha256 and size
    archive_dir/2026/six-month/2026-H1/all.json    the figures (language-independent)
    archive_dir/2026/six-month/2026-H1/all.vi.pdf  … .en.pdf, .vi.html, .vi.xlsx …
    archive_dir/on-demand/2026/month/2026-02/all.vi.20260302T030000Z.pdf   asked for in the UI

``generate_due`` writes only what the index does not list yet, so it can run every hour
(cron, systemd timer) and after downtime it catches up on the latest period of each kind.
A file is never overwritten: archived reports are what was submitted. Files are written to
a temporary name and renamed, and a lock file keeps two schedulers from racing.

Reports someone asks for (``generate_on_demand``, the web UI's "generate now") live apart
under ``on-demand/`` with origin "on-demand": a report made in the middle of a period must
neither stand in for the scheduled one nor become the next period's "previous" figures.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, Final, Literal

from sqlalchemy.orm import Session

from campuswatch.collector.reports.i18n import LANGUAGES
from campuswatch.collector.reports.kpis import (
    ComplianceReport,
    Measure,
    build_report,
    install_time,
    previous_live_from_archive,
)
from campuswatch.collector.reports.outages import SeriesReader
from campuswatch.collector.reports.periods import (
    DEFAULT_CALENDAR,
    Period,
    PeriodKind,
    ReportCalendar,
    report_period,
)
from campuswatch.collector.reports.render import FORMATS, render

INDEX_NAME: Final = "index.json"
ARCHIVE_DIR_NAME: Final = "reports"
ON_DEMAND_DIR: Final = "on-demand"
SCHEDULED: Final = "scheduled"
ON_DEMAND: Final = "on-demand"
# kind → days after the period's last day: the report must be in before that date
# (weekly on Monday, i.e. before Tuesday; monthly before the 5th; six-month before 5 June).
SCHEDULE: Final[dict[PeriodKind, int]] = {
    "week": 2,
    "month": 5,
    "quarter": 10,
    "semester1": 15,
    "school-year": 15,
    "six-month": 5,
    "annual": 5,
}


@dataclass(frozen=True, slots=True)
class DueReport:
    kind: PeriodKind
    period: Period
    available_on: date  # the day after the period: the first day it can be made
    submit_before: date

    def state(self, today: date) -> str:
        if today < self.available_on:
            return "upcoming"
        return "due" if today < self.submit_before else "late"


@dataclass(frozen=True, slots=True)
class ArchivedReport:
    kind: str
    key: str
    site: str | None
    lang: str | None
    format: str
    path: str  # relative to the archive folder
    sha256: str
    bytes: int
    generated_at: str
    period_start: str
    period_end: str
    origin: str = SCHEDULED  # or ON_DEMAND; indexes written before it existed are scheduled


ScheduleStateName = Literal["on_time", "late", "due", "overdue", "upcoming", "no_data"]


@dataclass(frozen=True, slots=True)
class ScheduleState:
    """A scheduled report as the archive answers for it: in on time or late, still due,
    overdue (deadline passed, nothing archived), upcoming (its period has not ended), or
    no data (the period ended before CampusWatch was installed: nothing to report)."""

    due: DueReport
    state: ScheduleStateName
    archived_at: datetime | None
    data_from: datetime | None = None
    """Set when the period began before the install: its report covers only from then."""


def before_install(period: Period, installed: datetime | None) -> bool:
    """Did ``period`` end before anything was recorded (no register yet: everything did)?"""
    return installed is None or period.end_at <= installed


def partial_from(period: Period, installed: datetime | None) -> datetime | None:
    """The install time when ``period`` began before it and ended after it."""
    if installed is not None and period.start_at < installed < period.end_at:
        return installed
    return None


def default_archive_dir(data_dir: Path) -> Path:
    """The collector's archive, shared by the scheduler, the CLI and the web UI."""
    return data_dir / ARCHIVE_DIR_NAME


def _due(kind: PeriodKind, period: Period, schedule: dict[PeriodKind, int]) -> DueReport:
    available = period.end + timedelta(days=1)
    return DueReport(kind, period, available, period.end + timedelta(days=schedule[kind]))


def due_reports(
    today: date,
    schedule: dict[PeriodKind, int] = SCHEDULE,
    calendar: ReportCalendar = DEFAULT_CALENDAR,
) -> list[DueReport]:
    """For each scheduled kind, the latest period that has ended before ``today``."""
    found = []
    for kind in schedule:
        period = report_period(kind, today, calendar)
        if period.end >= today:
            period = period.previous
        found.append(_due(kind, period, schedule))
    return sorted(found, key=lambda item: (item.submit_before, item.kind))


def upcoming_reports(
    today: date,
    schedule: dict[PeriodKind, int] = SCHEDULE,
    calendar: ReportCalendar = DEFAULT_CALENDAR,
) -> list[DueReport]:
    """For each scheduled kind, the next period still to end (what comes due next)."""
    found = []
    for kind in schedule:
        period = report_period(kind, today, calendar)
        if period.end < today:
            period = period.next
        found.append(_due(kind, period, schedule))
    return sorted(found, key=lambda item: (item.available_on, item.kind))


def submit_before(
    kind: str, period_end: date, schedule: dict[PeriodKind, int] = SCHEDULE
) -> date | None:
    """The deadline of a scheduled report of ``kind`` (None: that kind is not scheduled)."""
    for scheduled, days in schedule.items():
        if scheduled == kind:
            return period_end + timedelta(days=days)
    return None


def local_day(moment: datetime, calendar: ReportCalendar = DEFAULT_CALENDAR) -> date:
    """The reporting calendar's day of ``moment`` (a naive one is taken as UTC)."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(calendar.zone).date()


def schedule_states(
    entries: Sequence[ArchivedReport],
    today: date,
    site: str | None,
    schedule: dict[PeriodKind, int] = SCHEDULE,
    calendar: ReportCalendar = DEFAULT_CALENDAR,
    *,
    installed: datetime | None,
) -> list[ScheduleState]:
    """Each kind's latest ended period with what the archive holds for ``site``, then the
    next period of each kind. In on time means archived on a local day before the deadline;
    a period that ended before ``installed`` (``kpis.install_time``) has no data."""
    archived: dict[tuple[str, str], datetime] = {}
    for entry in entries:
        if entry.origin != SCHEDULED or entry.site != site:
            continue
        at = datetime.fromisoformat(entry.generated_at)
        known = archived.get((entry.kind, entry.key))
        if known is None or at < known:
            archived[(entry.kind, entry.key)] = at
    states: list[ScheduleState] = []
    for due in due_reports(today, schedule, calendar):
        archived_at = archived.get((due.kind, due.period.key))
        data_from = partial_from(due.period, installed)
        if before_install(due.period, installed):
            states.append(ScheduleState(due, "no_data", None))
        elif archived_at is not None:
            on_time = local_day(archived_at, calendar) < due.submit_before
            state: ScheduleStateName = "on_time" if on_time else "late"
            states.append(ScheduleState(due, state, archived_at, data_from))
        else:
            state = "due" if today < due.submit_before else "overdue"
            states.append(ScheduleState(due, state, None, data_from))
    states += [
        ScheduleState(due, "upcoming", None, partial_from(due.period, installed))
        for due in upcoming_reports(today, schedule, calendar)
    ]
    return states


def _scope(site: str | None) -> str:
    return "all" if site is None else site


def report_folder(period: Period) -> Path:
    return Path(f"{period.end.year:04d}") / period.kind / period.key


def _read_index(archive_dir: Path) -> list[ArchivedReport]:
    path = archive_dir / INDEX_NAME
    if not path.exists():
        return []
    data = json.loads(path.read_text(encoding="utf-8"))
    return [ArchivedReport(**entry) for entry in data["reports"]]


def _write_atomically(path: Path, content: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp")
    with temporary.open("wb") as handle:
        handle.write(content)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)


def _write_index(archive_dir: Path, entries: Sequence[ArchivedReport]) -> None:
    ordered = sorted(entries, key=lambda e: (e.period_end, e.kind, e.key, str(e.site), e.path))
    payload = {"reports": [asdict(entry) for entry in ordered]}
    text = json.dumps(payload, ensure_ascii=False, indent=1) + "\n"
    _write_atomically(archive_dir / INDEX_NAME, text.encode("utf-8"))


@contextmanager
def _locked(archive_dir: Path) -> Iterator[None]:
    archive_dir.mkdir(parents=True, exist_ok=True)
    with (archive_dir / ".lock").open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def list_archive(archive_dir: Path) -> list[ArchivedReport]:
    return _read_index(archive_dir)


def verify_archive(archive_dir: Path) -> list[str]:
    """Problems found: files missing or whose checksum no longer matches the index."""
    problems = []
    for entry in _read_index(archive_dir):
        path = archive_dir / entry.path
        if not path.exists():
            problems.append(f"missing: {entry.path}")
        elif hashlib.sha256(path.read_bytes()).hexdigest() != entry.sha256:
            problems.append(f"checksum mismatch: {entry.path}")
    return problems


def archived_figures(archive_dir: Path, period: Period, site: str | None) -> dict[str, Any] | None:
    """The figures an archived report of ``period`` recorded, if there is one."""
    path = archive_dir / report_folder(period) / f"{_scope(site)}.json"
    if not path.exists():
        return None
    figures: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return figures


def archive_report(
    session: Session,
    archive_dir: Path,
    period: Period,
    site: str | None,
    *,
    languages: Sequence[str] = LANGUAGES,
    formats: Sequence[str] = FORMATS,
    series: SeriesReader | None = None,
    now: datetime | None = None,
) -> list[ArchivedReport]:
    """Write the files of one report the index does not list yet; return what was written."""
    now = now or datetime.now(UTC)
    with _locked(archive_dir):
        entries = _read_index(archive_dir)
        listed = {entry.path for entry in entries}
        folder = report_folder(period)
        wanted = [(None, "json")] + [(lang, fmt) for lang in languages for fmt in formats]

        def relative(lang: str | None, fmt: str) -> str:
            middle = "" if lang is None else f".{lang}"
            return (folder / f"{_scope(site)}{middle}.{fmt}").as_posix()

        missing = [(lang, fmt) for lang, fmt in wanted if relative(lang, fmt) not in listed]
        if not missing:
            return []
        previous = archived_figures(archive_dir, period.previous, site)
        previous_live: dict[str, Measure] = previous_live_from_archive(previous) if previous else {}
        report = build_report(
            session, period, site, series=series, previous_live=previous_live, now=now
        )
        written = [
            _store(archive_dir, relative(lang, fmt), report, lang, fmt, SCHEDULED)
            for lang, fmt in missing
        ]
        _write_index(archive_dir, [*entries, *written])
        return written


def _store(
    archive_dir: Path,
    path: str,
    report: ComplianceReport,
    lang: str | None,
    fmt: str,
    origin: str,
) -> ArchivedReport:
    """Render one file of ``report``, write it under ``path`` and describe it for the index."""
    if fmt == "json":
        content = (json.dumps(report.to_dict(), ensure_ascii=False, indent=1) + "\n").encode()
    else:
        assert lang is not None
        content = render(report, lang, fmt)
    _write_atomically(archive_dir / path, content)
    period = report.period
    return ArchivedReport(
        kind=period.kind,
        key=period.key,
        site=report.site_id,
        lang=lang,
        format=fmt,
        path=path,
        sha256=hashlib.sha256(content).hexdigest(),
        bytes=len(content),
        generated_at=report.generated_at.isoformat(),
        period_start=period.start.isoformat(),
        period_end=period.end.isoformat(),
        origin=origin,
    )


def generate_on_demand(
    session: Session,
    archive_dir: Path,
    period: Period,
    site: str | None,
    lang: str,
    *,
    formats: Sequence[str] = FORMATS,
    series: SeriesReader | None = None,
    now: datetime | None = None,
) -> list[ArchivedReport]:
    """Make one report now, in ``lang`` and each of ``formats``, and index it on-demand.

    Its trend uses the scheduled archive's previous-period figures, like a scheduled report;
    the files get the generation time in their names, so asking twice keeps both.
    Raises LookupError for an unknown site (before anything is written).
    """
    now = now or datetime.now(UTC)
    with _locked(archive_dir):
        entries = _read_index(archive_dir)
        previous = archived_figures(archive_dir, period.previous, site)
        report = build_report(
            session,
            period,
            site,
            series=series,
            previous_live=previous_live_from_archive(previous) if previous else {},
            now=now,
        )
        listed = {entry.path for entry in entries}
        folder = Path(ON_DEMAND_DIR) / report_folder(period)
        stamp = now.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")
        for attempt in range(1, 1000):
            name = f"{_scope(site)}.{lang}.{stamp}" + ("" if attempt == 1 else f"-{attempt}")
            paths = {fmt: (folder / f"{name}.{fmt}").as_posix() for fmt in formats}
            if not any(p in listed or (archive_dir / p).exists() for p in paths.values()):
                break
        else:  # pragma: no cover - a thousand reports in one second
            raise RuntimeError("no free on-demand report name")
        written = [_store(archive_dir, paths[fmt], report, lang, fmt, ON_DEMAND) for fmt in formats]
        _write_index(archive_dir, [*entries, *written])
        return written


def generate_due(
    session: Session,
    archive_dir: Path,
    today: date,
    *,
    sites: Sequence[str | None] = (None,),
    languages: Sequence[str] = LANGUAGES,
    formats: Sequence[str] = FORMATS,
    series: SeriesReader | None = None,
    schedule: dict[PeriodKind, int] = SCHEDULE,
    calendar: ReportCalendar = DEFAULT_CALENDAR,
    now: datetime | None = None,
) -> list[ArchivedReport]:
    """Archive every due report (each site, language and format) not archived yet.

    A period that ended before the install (``kpis.install_time``) is skipped: there is
    nothing to report, and an archived file would be "submitted late" for ever."""
    written: list[ArchivedReport] = []
    installed = install_time(session)
    for due in due_reports(today, schedule, calendar):
        if before_install(due.period, installed):
            continue
        for site in sites:
            written += archive_report(
                session,
                archive_dir,
                due.period,
                site,
                languages=languages,
                formats=formats,
                series=series,
                now=now,
            )
    return written
