"""Archiving due reports from inside the running collector, so no cron job is needed.

``ReportScheduler`` takes the day's KPI snapshot (``snapshots.take_daily_snapshot``) and
runs ``schedule.generate_due`` once when started and then every
``interval_s`` (an hour) in its own thread: one pass can render dozens of PDFs (seven kinds ×
sites × two languages), and the collector's 10-second housekeeping (liveness, rule ticks)
must never wait for that. Missing a pass costs nothing: the next one catches up, as the
archive only ever gains what its index lacks. The collector wires it as::

    self.reports = ReportScheduler(self.sessions, default_archive_dir(settings.data_dir),
                                   series=<the embedded SqliteStore or None>)
    self.reports.start()   # in start()
    self.reports.stop()    # in stop(), before the engine is disposed
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from campuswatch.collector.db.models import Site
from campuswatch.collector.reports.i18n import LANGUAGES
from campuswatch.collector.reports.outages import SeriesReader
from campuswatch.collector.reports.periods import DEFAULT_CALENDAR, ReportCalendar
from campuswatch.collector.reports.render import FORMATS
from campuswatch.collector.reports.schedule import ArchivedReport, generate_due, local_day
from campuswatch.collector.reports.snapshots import take_daily_snapshot

log = logging.getLogger(__name__)
DEFAULT_INTERVAL_S = 3600.0


class ReportScheduler:
    def __init__(
        self,
        sessions: sessionmaker[Session],
        archive_dir: Path,
        *,
        series: SeriesReader | None = None,
        sites: Sequence[str | None] = (None,),
        site_levels: Sequence[str] = (),
        languages: Sequence[str] = LANGUAGES,
        formats: Sequence[str] = FORMATS,
        interval_s: float = DEFAULT_INTERVAL_S,
        start_delay_s: float = 0.0,
        calendar: ReportCalendar = DEFAULT_CALENDAR,
    ) -> None:
        self.sessions = sessions
        self.archive_dir = archive_dir
        self.series = series
        self.sites = list(sites)
        self.site_levels = tuple(site_levels)
        """Also archive a report for every site of these levels (e.g. each district), read
        from the register at every pass so a new district gets its reports."""
        self.languages = list(languages)
        self.formats = list(formats)
        self.interval_s = interval_s
        self.start_delay_s = start_delay_s
        self.calendar = calendar
        self.passes = 0
        self.failures = 0
        self.written = 0
        self.snapshot_rows = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def run_once(self, now: datetime | None = None) -> list[ArchivedReport]:
        """One pass: today's KPI snapshot, then every due report the index lacks (``now``
        for tests). The snapshot comes first and is committed on its own: a failing render
        must not cost the day's figures, which nothing can measure again later."""
        now = now or datetime.now(UTC)
        with self.sessions() as session:
            try:
                self.snapshot_rows = take_daily_snapshot(
                    session, local_day(now, self.calendar), now
                )
                session.commit()
            except IntegrityError:
                # Another collector sharing the register wrote today's rows at the same
                # moment: its snapshot is as good as ours.
                session.rollback()
                log.info("today's KPI snapshot was written by another collector")
        with self.sessions() as session:
            sites = list(self.sites)
            if self.site_levels:
                level_sites = session.scalars(
                    select(Site.id).where(Site.level.in_(self.site_levels)).order_by(Site.id)
                )
                sites += [site for site in level_sites if site not in sites]
            written = generate_due(
                session,
                self.archive_dir,
                local_day(now, self.calendar),
                sites=sites,
                languages=self.languages,
                formats=self.formats,
                series=self.series,
                calendar=self.calendar,
                now=now,
            )
        self.passes += 1
        self.written += len(written)
        if written:
            log.info("archived %d report files in %s", len(written), self.archive_dir)
        return written

    def _loop(self) -> None:
        # A delayed first pass keeps PDF rendering away from a collector's busy start-up
        # (a restart, the demo); without a delay the first pass runs even when stop() came
        # first: start()+stop() is one pass.
        if self.start_delay_s > 0 and self._stop.wait(self.start_delay_s):
            return
        while True:
            try:
                self.run_once()
            except Exception:
                self.failures += 1
                log.exception("report archiving failed; retrying in %s s", self.interval_s)
            if self._stop.wait(self.interval_s):
                return

    def start(self) -> None:
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._loop, name="report-scheduler", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float | None = None) -> bool:
        """Ends the thread after the pass in progress (a pass is never cut half-way);
        False if ``timeout_s`` ran out first (the daemon thread ends with the process)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
            return not self._thread.is_alive()
        return True
