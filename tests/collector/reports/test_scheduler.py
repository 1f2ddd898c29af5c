"""The collector's report scheduler: one pass archives what is due, and never twice."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy.orm import Session, sessionmaker

from campuswatch.collector.db.engine import make_engine, session_factory, upgrade
from campuswatch.collector.reports.schedule import default_archive_dir, list_archive, verify_archive
from campuswatch.collector.reports.scheduler import ReportScheduler
from tests.collector.conftest import CollectorFactory
from tests.collector.reports.conftest import fill_district


@pytest.fixture
def sessions(tmp_path: Path) -> Iterator[sessionmaker[Session]]:
    url = f"sqlite:///{tmp_path / 'register.db'}"
    upgrade(url)
    engine = make_engine(url)
    factory = session_factory(engine)
    with factory() as session:
        fill_district(session)
    yield factory
    engine.dispose()


def test_a_pass_archives_the_due_reports_once(
    sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    archive = tmp_path / "reports"
    scheduler = ReportScheduler(sessions, archive, sites=["dist"], formats=("html",))
    # 31 May 20:00 UTC is already 1 June in Vietnam: the six-month report is due.
    first = scheduler.run_once(datetime(2026, 5, 31, 20, tzinfo=UTC))
    assert "2026/six-month/2026-H1/dist.vi.html" in {entry.path for entry in first}
    # Six scheduled kinds × (figures + vi + en): the annual report 2025 (to 30 November
    # 2025) ended before the register's first site (1 December 2025): no data.
    assert len(first) == 6 * 3
    assert scheduler.run_once(datetime(2026, 6, 1, 9, tzinfo=UTC)) == []
    assert (scheduler.passes, scheduler.written) == (2, 18)
    assert verify_archive(archive) == []


def test_site_levels_add_each_district_of_the_register(
    sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    archive = tmp_path / "reports"
    scheduler = ReportScheduler(
        sessions, archive, site_levels=("district",), formats=("html",), languages=("en",)
    )
    scheduler.run_once(datetime(2026, 5, 31, 20, tzinfo=UTC))
    assert {entry.site for entry in list_archive(archive)} == {None, "dist"}


def test_the_thread_runs_a_pass_at_start_and_survives_a_failing_one(
    sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    archive = tmp_path / "reports"
    scheduler = ReportScheduler(sessions, archive, formats=("html",))
    scheduler.start()
    scheduler.stop()
    assert scheduler.passes == 1 and scheduler.failures == 0
    assert {entry.site for entry in list_archive(archive)} == {None}
    blocked = tmp_path / "not-a-folder"
    blocked.write_text("a file where the archive should be", encoding="utf-8")
    failing = ReportScheduler(sessions, blocked, formats=("html",))
    failing.start()
    failing.stop()
    assert (failing.passes, failing.failures) == (0, 1)


def test_collector_service_runs_the_scheduler_into_its_data_dir(
    collector_factory: CollectorFactory, tmp_path: Path
) -> None:
    running = collector_factory(report_schedule_interval_s=7200)
    scheduler = running.service.reports
    assert scheduler is not None and scheduler.interval_s == 7200
    assert scheduler.archive_dir == default_archive_dir(running.service.settings.data_dir)
    assert scheduler._thread is not None and scheduler._thread.is_alive()
    running.service.stop()
    assert not scheduler._thread.is_alive()
    assert collector_factory().service.reports is None  # 0, as the tests' environment sets
