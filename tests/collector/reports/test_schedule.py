"""Due dates, and the archive: each report written once, with checksums, idempotent."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from pathlib import Path

import pytest

from campuswatch.collector.db.models import Device
from campuswatch.collector.reports.kpis import install_time
from campuswatch.collector.reports.periods import report_period
from campuswatch.collector.reports.schedule import (
    ON_DEMAND,
    SCHEDULED,
    ArchivedReport,
    archived_figures,
    due_reports,
    generate_due,
    generate_on_demand,
    list_archive,
    schedule_states,
    submit_before,
    upcoming_reports,
    verify_archive,
)
from campuswatch.collector.reports.snapshots import take_daily_snapshot
from tests.collector.reports.conftest import NOW, District
from tests.support.device_state import set_latest


def _by_kind(today: date) -> dict[str, tuple[str, date, str]]:
    return {
        due.kind: (due.period.key, due.submit_before, due.state(today))
        for due in due_reports(today)
    }


def test_six_month_and_annual_deadlines() -> None:
    june = _by_kind(date(2026, 6, 1))
    assert june["six-month"] == ("2026-H1", date(2026, 6, 5), "due")
    assert june["school-year"][0] == "2025-2026"
    assert _by_kind(date(2026, 6, 5))["six-month"][2] == "late"
    december = _by_kind(date(2026, 12, 1))
    assert december["annual"] == ("2026-annual", date(2026, 12, 5), "due")
    assert december["month"] == ("2026-11", date(2026, 12, 5), "due")


def test_weekly_on_monday_and_monthly_on_the_first() -> None:
    monday = _by_kind(date(2026, 3, 2))
    assert monday["week"] == ("2026-W09", date(2026, 3, 3), "due")
    assert monday["month"] == ("2026-02", date(2026, 3, 5), "due")
    assert monday["quarter"] == ("2025-Q4", date(2026, 1, 10), "late")
    assert monday["semester1"][0] == "2025-2026-S1"
    upcoming = {due.kind: due for due in upcoming_reports(date(2026, 3, 2))}
    assert upcoming["six-month"].submit_before == date(2026, 6, 5)
    assert upcoming["annual"].submit_before == date(2026, 12, 5)
    assert upcoming["week"].available_on == date(2026, 3, 9)


def test_generate_due_is_idempotent_and_checksummed(district: District, tmp_path: Path) -> None:
    archive = tmp_path / "archive"
    today = date(2026, 3, 2)
    first = generate_due(
        district.session,
        archive,
        today,
        sites=["dist"],
        formats=("html", "xlsx"),
        series=district.store,
        now=NOW,
    )
    # The register began on 1 December 2025: the school year 2024–2025, the six-month
    # report 2025-H1 and the annual report 2025 ended before it (no data, not archived).
    # 4 scheduled kinds × (figures JSON + 2 languages × 2 formats)
    assert len(first) == 4 * 5
    monthly = archive / "2026" / "month" / "2026-02"
    assert sorted(path.name for path in monthly.iterdir()) == [
        "dist.en.html",
        "dist.en.xlsx",
        "dist.json",
        "dist.vi.html",
        "dist.vi.xlsx",
    ]
    before = {path: path.read_bytes() for path in archive.rglob("*") if path.is_file()}
    again = generate_due(
        district.session,
        archive,
        today,
        sites=["dist"],
        formats=("html", "xlsx"),
        series=district.store,
        now=NOW.replace(hour=9),
    )
    assert again == []
    assert {path: path.read_bytes() for path in archive.rglob("*") if path.is_file()} == before
    assert len(list_archive(archive)) == 20
    assert verify_archive(archive) == []
    (monthly / "dist.vi.html").write_text("tampered", encoding="utf-8")
    assert verify_archive(archive) == ["checksum mismatch: 2026/month/2026-02/dist.vi.html"]
    index = json.loads((archive / "index.json").read_text(encoding="utf-8"))
    assert {entry["format"] for entry in index["reports"]} == {"json", "html", "xlsx"}


def test_previous_live_figures_come_from_the_snapshots(district: District, tmp_path: Path) -> None:
    """January's last snapshot becomes February's "previous" AV value and trend."""
    archive = tmp_path / "archive"
    take_daily_snapshot(district.session, date(2026, 1, 31), NOW)
    # pc-3 gets an antivirus before February ends.
    device = district.session.get_one(Device, "pc-3")
    defender = {"name": "Defender", "source": "defender", "signatures_up_to_date": True}
    av = {
        **device.latest["av"],
        "status": "protected",
        "products": [{**defender, "signature_age_hours": 3.0}],
    }
    set_latest(district.session, "pc-3", "av", av, NOW)
    take_daily_snapshot(district.session, date(2026, 2, 28), NOW)
    district.session.commit()
    generate_due(district.session, archive, date(2026, 3, 1), sites=["dist"], formats=(), now=NOW)
    february = archived_figures(archive, report_period("month", date(2026, 2, 1)), "dist")
    assert february is not None
    av = next(kpi for kpi in february["kpis"] if kpi["code"] == "av_coverage")
    assert (av["current"]["numerator"], av["current"]["denominator"]) == (4, 7)
    assert (av["previous"]["numerator"], av["previous"]["denominator"]) == (3, 7)
    assert (av["trend"], av["improved"]) == ("up", True)


INSTALLED = datetime(2025, 1, 1, tzinfo=UTC)


def _entry(kind: str, key: str, generated: str, **changes: object) -> ArchivedReport:
    values: dict[str, object] = {
        "kind": kind, "key": key, "site": None, "lang": "vi", "format": "pdf",
        "path": f"{kind}/{key}.pdf", "sha256": "0" * 64, "bytes": 1, "generated_at": generated,
        "period_start": "2026-01-01", "period_end": "2026-01-31", "origin": SCHEDULED,
    }  # fmt: skip
    values.update(changes)
    return ArchivedReport(**values)  # type: ignore[arg-type]


def test_schedule_states_tell_on_time_late_due_overdue_and_upcoming() -> None:
    today = date(2026, 6, 8)
    entries = [
        _entry("six-month", "2026-H1", "2026-06-02T01:00:00+00:00"),
        # 4 June 20:00 UTC is already 5 June in Vietnam: the deadline day, so late.
        _entry("month", "2026-05", "2026-06-04T20:00:00+00:00"),
        # Neither an on-demand report nor another site's report counts for "everything".
        _entry("quarter", "2026-Q1", "2026-04-02T01:00:00+00:00", origin=ON_DEMAND),
        _entry("quarter", "2026-Q1", "2026-04-02T01:00:00+00:00", site="dist"),
    ]
    states = schedule_states(entries, today, None, installed=INSTALLED)
    latest = {s.due.kind: s.state for s in states if s.state != "upcoming"}
    assert latest["six-month"] == "on_time" and latest["month"] == "late"
    assert latest["week"] == "due"  # week 23 ended yesterday, due before Tuesday 9 June
    assert latest["quarter"] == "overdue"  # Q1 was due before 10 April
    six_month = next(s for s in states if s.due.kind == "six-month")
    assert six_month.archived_at == datetime(2026, 6, 2, 1, tzinfo=UTC)
    upcoming = {s.due.kind: s.due for s in states if s.state == "upcoming"}
    assert upcoming["annual"].submit_before == date(2026, 12, 5)
    assert set(upcoming) == set(latest)
    for_dist = schedule_states(entries, today, "dist", installed=INSTALLED)[:7]
    dist = {s.due.kind: s.state for s in for_dist}
    assert dist["quarter"] == "on_time" and dist["six-month"] == "overdue"
    assert submit_before("six-month", date(2026, 5, 31)) == date(2026, 6, 5)
    assert submit_before("semester2", date(2026, 5, 31)) is None


def test_on_demand_reports_live_apart_and_leave_the_schedule_alone(
    district: District, tmp_path: Path
) -> None:
    archive = tmp_path / "archive"
    february = district.period
    first = generate_on_demand(
        district.session, archive, february, "dist", "en", formats=("html", "xlsx"), now=NOW
    )
    folder = "on-demand/2026/month/2026-02"
    assert [entry.path for entry in first] == [
        f"{folder}/dist.en.20260302T030000Z.html",
        f"{folder}/dist.en.20260302T030000Z.xlsx",
    ]
    assert {entry.origin for entry in first} == {ON_DEMAND}
    again = generate_on_demand(
        district.session, archive, february, "dist", "en", formats=("html",), now=NOW
    )
    assert [entry.path for entry in again] == [f"{folder}/dist.en.20260302T030000Z-2.html"]
    assert b"Monthly report, February 2026" in (archive / again[0].path).read_bytes()
    with pytest.raises(LookupError):
        generate_on_demand(district.session, archive, february, "nowhere", "en", now=NOW)
    assert len(list_archive(archive)) == 3
    # The scheduled February report is still made, and it alone is the archived figures.
    assert archived_figures(archive, february, "dist") is None
    scheduled = generate_due(
        district.session, archive, date(2026, 3, 2), sites=["dist"], formats=("html",), now=NOW
    )
    assert "2026/month/2026-02/dist.en.html" in {entry.path for entry in scheduled}
    assert archived_figures(archive, february, "dist") is not None
    assert verify_archive(archive) == []
    states = schedule_states(
        list_archive(archive), date(2026, 3, 2), "dist", installed=install_time(district.session)
    )
    assert next(s for s in states if s.due.kind == "month").state == "on_time"
