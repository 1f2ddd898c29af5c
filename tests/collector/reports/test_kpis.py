"""KPIs of a register filled with known rows (SQLite and PostgreSQL), with trends."""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

import pytest

from campuswatch.collector.register.assets import (
    digital_record_coverage,
    information_systems_classified,
)
from campuswatch.collector.reports.alert_figures import percentile
from campuswatch.collector.reports.kpis import Measure, av_category, build_report
from campuswatch.collector.reports.periods import report_period
from campuswatch.collector.reports.snapshots import take_daily_snapshot
from tests.collector.reports.conftest import EXPECTED, NOW, District
from tests.support.device_state import set_latest


def _pair(measure: Measure | None) -> tuple[float, int | None] | None:
    return None if measure is None else (measure.numerator, measure.denominator)


def test_plan_kpis_for_the_district(district: District) -> None:
    report = build_report(district.session, district.period, "dist", series=district.store, now=NOW)
    av = report.kpi("av_coverage")
    assert _pair(av.current) == EXPECTED["av_coverage"]
    assert av.parts == EXPECTED["av_parts"]
    assert av.passed is False and av.target == 1.0
    assert _pair(report.kpi("broadband").current) == EXPECTED["broadband"]
    records = report.kpi("digital_records")
    assert _pair(records.current) == EXPECTED["digital_records"]
    assert records.target == 0.8 and records.passed is False  # 71.4 %
    systems = report.kpi("information_systems")
    assert _pair(systems.current) == EXPECTED["information_systems"]


def test_period_counts_and_alert_timing(district: District) -> None:
    report = build_report(district.session, district.period, "dist", series=district.store, now=NOW)
    assert {k: v for k, v in report.alerts.by_level.items() if v} == EXPECTED["alerts"]
    assert report.alerts.ack_median_s == percentile(EXPECTED["ack_delays_s"], 0.5) == 600.0
    assert report.alerts.ack_p90_s == 1800.0
    assert (report.alerts.acknowledged, report.alerts.unacknowledged) == (2, 1)
    assert {k: v for k, v in report.previous_alerts.by_level.items() if v} == {"low": 1}
    assert report.previous_alerts.auto_resolved == 1
    assert report.kpi("assets_added").current.numerator == EXPECTED["added"]
    assert report.kpi("assets_lost").current.numerator == EXPECTED["lost"]
    assert report.kpi("assets_retired").current.numerator == EXPECTED["retired"]
    assert report.kpi("outages").current.numerator == EXPECTED["outages"]
    assert report.kpi("outage_minutes").current.numerator == EXPECTED["outage_minutes"]
    school_a = next(s for s in report.schools if s.site_id == "school-a")
    assert (school_a.outages, school_a.outage_minutes) == (1, 20.0)
    assert (school_a.computers, school_a.computers_protected) == (4, 2)


def test_trend_against_previous_period(district: District) -> None:
    report = build_report(district.session, district.period, "dist", series=district.store, now=NOW)
    records = report.kpi("digital_records")
    assert _pair(records.previous) == EXPECTED["digital_records_previous"]
    assert (records.trend, records.improved) == ("down", False)
    systems = report.kpi("information_systems")
    assert _pair(systems.previous) == EXPECTED["information_systems_previous"]
    assert (systems.trend, systems.improved) == ("up", True)
    alerts = report.kpi("alerts")
    assert (alerts.current.numerator, _pair(alerts.previous)) == (3, (1, None))
    assert (alerts.trend, alerts.improved) == ("up", False)  # more alerts is worse
    retired = report.kpi("assets_retired")
    assert retired.previous == Measure(EXPECTED["retired_previous"])
    assert (retired.trend, retired.improved) == ("down", True)
    assert report.kpi("assets_added").previous == Measure(EXPECTED["added_previous"])
    assert report.kpi("assets_added").improved is None  # neither good nor bad
    assert report.kpi("outages").previous == Measure(EXPECTED["outages_previous"])
    # Live KPIs have no history in the database: unknown unless the archive supplies it.
    assert report.kpi("av_coverage").trend is None
    archived = build_report(
        district.session,
        district.period,
        "dist",
        now=NOW,
        previous_live={"av_coverage": Measure(5, 7)},
    )
    assert (archived.kpi("av_coverage").trend, archived.kpi("av_coverage").improved) == (
        "down",
        False,
    )


def test_register_kpis_now_agree_with_the_register_functions(district: District) -> None:
    """For a running period the rebuilt register is today's register."""
    running = report_period("month", date(2026, 3, 2))
    report = build_report(district.session, running, "dist", now=NOW)
    assert _pair(report.kpi("digital_records").current) == digital_record_coverage(
        district.session, "dist"
    )
    assert _pair(report.kpi("information_systems").current) == information_systems_classified(
        district.session, "dist"
    )
    assert report.measured_at == NOW


def test_scopes_school_and_everything(district: District) -> None:
    school = build_report(district.session, district.period, "school-c", now=NOW)
    assert [s.site_id for s in school.schools] == ["school-c"]
    # pc-7 (room under school-c) is the only computer in service there; its report is stale.
    assert _pair(school.kpi("av_coverage").current) == (0, 1)
    assert school.kpi("av_coverage").parts["no_report"] == 1
    # The lab's critical alert counts for its school.
    assert school.schools[0].alerts == 1 and school.alerts.total == 1
    everything = build_report(district.session, district.period, None, now=NOW)
    # The asset with no site counts only for "everything"; the alert from an unknown site too.
    assert _pair(everything.kpi("digital_records").current) == (10, 15)
    assert everything.alerts.total == 4
    assert "outages" not in [kpi.code for kpi in everything.kpis]  # no store given


def test_outage_needs_every_device_down_and_ignores_silence(district: District) -> None:
    """January: one of two devices reported down while the other was up — no outage."""
    january = report_period("month", date(2026, 1, 15))
    report = build_report(district.session, january, "dist", series=district.store, now=NOW)
    assert report.kpi("outages").current.numerator == 0
    # The samples are there: averaged over the school they read "half the devices up".
    buckets = district.store.query(
        "campus_net", "internet_ok", {"site": "school-a"}, january.start_at, january.end_at
    )
    assert sorted(value for _, value in buckets) == [0.0, 1.0]
    assert datetime(2026, 1, 10, 3, tzinfo=UTC) in {
        datetime.fromtimestamp(ms / 1000, UTC) for ms, _ in buckets
    }


def _defender(**fields: Any) -> dict[str, Any]:
    product: dict[str, Any] = {
        "name": "Microsoft Defender Antivirus",
        "source": "defender",
        "enabled": True,
        "mode": "active",
        "realtime_protection": True,
        "signatures_up_to_date": True,  # Defender's own DefenderSignaturesOutOfDate = false
    }
    product.update(fields)
    return product


def _report(products: list[dict[str, Any]]) -> dict[str, Any]:
    return {"ts": NOW.isoformat(), "status": "protected", "products": products}


@pytest.mark.parametrize(
    ("products", "expected"),
    [
        ([_defender(signature_age_hours=5.0)], "protected"),
        ([_defender(signature_age_hours=400 * 24.0)], "at_risk"),  # 400 days old
        ([_defender()], "at_risk"),  # no signatures at all: no age
        ([_defender(signature_age_hours=None)], "at_risk"),
        ([_defender(signature_age_hours=5.0, signatures_up_to_date=False)], "at_risk"),
        # A passive Defender with fresh signatures beside a stale primary does not protect.
        (
            [
                _defender(mode="passive", signature_age_hours=1.0),
                {
                    "name": "BKAV",
                    "source": "security_center",
                    "signatures_up_to_date": True,
                    "signature_age_hours": 400 * 24.0,
                },
            ],
            "at_risk",
        ),
        # Security Center reports no signature age for third-party products: its flag decides.
        (
            [
                {
                    "name": "BKAV",
                    "source": "security_center",
                    "enabled": True,
                    "signatures_up_to_date": True,
                }
            ],
            "protected",
        ),
    ],
)
def test_signature_age_limit_applies_to_every_product(
    products: list[dict[str, Any]], expected: str
) -> None:
    assert av_category(_report(products), NOW) == expected


def test_the_age_limit_is_a_parameter() -> None:
    report = _report([_defender(signature_age_hours=100.0)])
    assert av_category(report, NOW) == "at_risk"
    assert av_category(report, NOW, max_signature_age_hours=120.0) == "protected"


def test_stale_defender_counts_as_at_risk_with_stale_signatures(district: District) -> None:
    set_latest(
        district.session, "pc-1", "av", _report([_defender(signature_age_hours=9600.0)]), NOW
    )
    district.session.flush()
    # February is closed: its figures are its last snapshot's, so take it again.
    take_daily_snapshot(district.session, date(2026, 2, 28), NOW)
    report = build_report(district.session, district.period, "dist", series=district.store, now=NOW)
    av = report.kpi("av_coverage")
    assert _pair(av.current) == (2, 7)
    assert av.parts["at_risk"] == EXPECTED["av_parts"]["at_risk"] + 1
    assert av.parts["stale_signatures"] == EXPECTED["av_parts"]["stale_signatures"] + 1
