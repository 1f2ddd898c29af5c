"""Every query of every shipped dashboard, run against a real VictoriaMetrics and InfluxDB 1.6.

The stores hold an hour of simulator-like traffic from a small district, written through
the production path (wire messages → points_from_message → the real writers). A query
fails the test when the store answers an error or nothing at all, and when a school or
district selection lets another school's series through. All problems are collected and
reported together, each with dashboard, panel, selection and the query sent.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import httpx
import pytest

from campuswatch.collector.dashboards.files import DEFAULT_OUTPUT_DIR, load_dashboards
from campuswatch.collector.tsdb.influx import Influx1Writer
from campuswatch.collector.tsdb.points import Point
from campuswatch.collector.tsdb.urls import writer_from_url
from tests.collector.dashboards.district_data import (
    DISTRICTS,
    FOCUS_DISTRICT,
    FOCUS_SCHOOL,
    OFFLINE_SCHOOL,
    PCS_PER_SCHOOL,
    SCHOOLS,
    district_points,
)
from tests.collector.dashboards.grafana_emulation import (
    RANGE_S,
    QueryFailed,
    Selection,
    apply_variable_regex,
    influx_query,
    interpolate_macros,
    interpolate_variables,
    panel_interval_s,
    prometheus_label_values,
    prometheus_query,
)
from tests.support.influxdb import InfluxDb1Server
from tests.support.victoriametrics import VictoriaMetricsServer

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

WRITE_CHUNK: Final = 5000
EXPECTED_DASHBOARDS: Final = 6
SELECTIONS: Final = (
    Selection(),
    Selection(district=FOCUS_DISTRICT),
    Selection(district=FOCUS_DISTRICT, school=FOCUS_SCHOOL),
)
FOCUS_DISTRICT_SCHOOLS: Final = sorted(s for s in SCHOOLS if s.startswith(FOCUS_DISTRICT + "-"))

RunQuery = Callable[[str, bool, float, float, int], list[dict[str, Any]]]


def allowed_sites(selection: Selection) -> set[str] | None:
    if selection.school is not None:
        return {selection.school}
    if selection.district is not None:
        return set(FOCUS_DISTRICT_SCHOOLS)
    return None


def sites_in_prometheus(result: list[dict[str, Any]]) -> set[str]:
    return {item["metric"]["site"] for item in result if "site" in item.get("metric", {})}


def sites_in_influx(result: list[dict[str, Any]]) -> set[str]:
    sites = {series["tags"]["site"] for series in result if "site" in series.get("tags", {})}
    for series in result:
        if "site" in series.get("columns", []):
            column = series["columns"].index("site")
            sites |= {row[column] for row in series["values"]}
    return sites


def load(write: Callable[[list[Point]], None], points: list[Point]) -> None:
    for first in range(0, len(points), WRITE_CHUNK):
        write(points[first : first + WRITE_CHUNK])


@pytest.fixture
def vm_loaded(victoriametrics: VictoriaMetricsServer, tmp_path: Path) -> VictoriaMetricsServer:
    writer = writer_from_url(f"victoriametrics://127.0.0.1:{victoriametrics.port}", tmp_path)
    try:
        load(writer.write, district_points(datetime.now(UTC)))
    finally:
        writer.close()
    victoriametrics.force_flush()
    return victoriametrics


@pytest.fixture
def influx_loaded(influxdb1: InfluxDb1Server) -> InfluxDb1Server:
    writer = Influx1Writer(influxdb1.url, influxdb1.database)
    try:
        load(writer.write, district_points(datetime.now(UTC)))
    finally:
        writer.close()
    return influxdb1


@pytest.fixture
def vm_client(vm_loaded: VictoriaMetricsServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=vm_loaded.url, timeout=60) as client:
        yield client


@pytest.fixture
def influx_client(influx_loaded: InfluxDb1Server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=influx_loaded.url, timeout=60) as client:
        yield client


def check_every_panel(
    dashboards: list[dict[str, Any]],
    flavour: str,
    run: Callable[[str, dict[str, Any], float, float, int], list[dict[str, Any]]],
    sites_of: Callable[[list[dict[str, Any]]], set[str]],
) -> tuple[int, list[str]]:
    """Run every target under every selection; returns (queries run, problems)."""
    query_field = "expr" if flavour == "victoriametrics" else "query"
    problems: list[str] = []
    runs = 0
    end_s = time.time()
    start_s = end_s - RANGE_S
    for dashboard in dashboards:
        variables = dashboard["templating"]["list"]
        for panel in dashboard["panels"]:
            if panel["type"] == "row":
                continue
            if not panel.get("targets"):
                problems.append(f"{dashboard['title']} / {panel['title']}: no targets")
            interval_s = panel_interval_s(panel)
            for target in panel.get("targets", []):
                for selection in SELECTIONS:
                    query = interpolate_macros(
                        interpolate_variables(target[query_field], variables, selection, flavour),
                        start_s=start_s,
                        end_s=end_s,
                        interval_s=interval_s,
                    )
                    where = (
                        f"{dashboard['title']} / {panel['title']} / {target['refId']} "
                        f"({selection.describe()}):\n    {query}"
                    )
                    runs += 1
                    try:
                        result = run(query, target, start_s, end_s, interval_s)
                    except QueryFailed as error:
                        problems.append(f"{where}\n    error: {error}")
                        continue
                    if not result:
                        problems.append(f"{where}\n    empty result")
                        continue
                    allowed = allowed_sites(selection)
                    leaked = sites_of(result) - allowed if allowed is not None else set()
                    if leaked:
                        problems.append(f"{where}\n    series of other schools: {sorted(leaked)}")
    return runs, problems


def test_every_victoriametrics_panel_query_returns_data(vm_client: httpx.Client) -> None:
    dashboards = load_dashboards(DEFAULT_OUTPUT_DIR, "victoriametrics")
    assert len(dashboards) == EXPECTED_DASHBOARDS

    def run(
        query: str, target: dict[str, Any], start_s: float, end_s: float, step_s: int
    ) -> list[dict[str, Any]]:
        assert target["datasource"] == {"type": "prometheus", "uid": "campuswatch-vm"}
        return prometheus_query(
            vm_client,
            query,
            instant=bool(target["instant"]),
            start_s=start_s,
            end_s=end_s,
            step_s=step_s,
        )

    runs, problems = check_every_panel(dashboards, "victoriametrics", run, sites_in_prometheus)
    assert runs > 100
    assert not problems, f"{len(problems)} of {runs} queries failed:\n" + "\n".join(problems)


def test_every_influxdb_panel_query_returns_data(
    influx_client: httpx.Client, influx_loaded: InfluxDb1Server
) -> None:
    dashboards = load_dashboards(DEFAULT_OUTPUT_DIR, "influxdb")
    assert len(dashboards) == EXPECTED_DASHBOARDS

    def run(
        query: str, target: dict[str, Any], start_s: float, end_s: float, step_s: int
    ) -> list[dict[str, Any]]:
        assert target["datasource"] == {"type": "influxdb", "uid": "campuswatch-influxdb"}
        assert target["rawQuery"] is True
        return influx_query(influx_client, influx_loaded.database, query)

    runs, problems = check_every_panel(dashboards, "influxdb", run, sites_in_influx)
    assert runs > 100
    assert not problems, f"{len(problems)} of {runs} queries failed:\n" + "\n".join(problems)


def variable_values(
    dashboards: list[dict[str, Any]], flavour: str, fetch: Callable[[str], list[str]]
) -> tuple[dict[tuple[str, Selection], list[str]], list[str]]:
    """Every variable of every dashboard under each selection of the variables before it."""
    seen: dict[tuple[str, Selection], list[str]] = {}
    problems: list[str] = []
    for dashboard in dashboards:
        variables = dashboard["templating"]["list"]
        for variable in variables:
            assert variable["includeAll"] is True and variable["allValue"] == ".*"
            for selection in (Selection(), Selection(district=FOCUS_DISTRICT)):
                query = interpolate_variables(variable["query"], variables, selection, flavour)
                where = (
                    f"{dashboard['title']} / variable {variable['name']} "
                    f"({selection.describe()}):\n    {query}"
                )
                try:
                    values = apply_variable_regex(fetch(query), variable["regex"])
                except QueryFailed as error:
                    problems.append(f"{where}\n    error: {error}")
                    continue
                if not values:
                    problems.append(f"{where}\n    no values")
                previous = seen.setdefault((variable["name"], selection), values)
                if previous != values:
                    problems.append(f"{where}\n    differs between dashboards: {values}")
    return seen, problems


def assert_variables(seen: dict[tuple[str, Selection], list[str]], problems: list[str]) -> None:
    assert not problems, "\n".join(problems)
    assert seen[("district", Selection())] == sorted(DISTRICTS)
    assert seen[("school", Selection())] == sorted(SCHOOLS)
    # "hcm-q1" must not pick up "hcm-q10-…": the filter is district + "-", not a bare prefix.
    assert seen[("school", Selection(district=FOCUS_DISTRICT))] == FOCUS_DISTRICT_SCHOOLS


def test_every_victoriametrics_variable_has_values(vm_client: httpx.Client) -> None:
    end_s = time.time()

    def fetch(query: str) -> list[str]:
        return prometheus_label_values(vm_client, query, start_s=end_s - RANGE_S, end_s=end_s)

    assert_variables(
        *variable_values(
            load_dashboards(DEFAULT_OUTPUT_DIR, "victoriametrics"), "victoriametrics", fetch
        )
    )


def test_every_influxdb_variable_has_values(
    influx_client: httpx.Client, influx_loaded: InfluxDb1Server
) -> None:
    def fetch(query: str) -> list[str]:
        series = influx_query(influx_client, influx_loaded.database, query)
        return [str(row[1]) for item in series for row in item["values"]]

    assert_variables(
        *variable_values(load_dashboards(DEFAULT_OUTPUT_DIR, "influxdb"), "influxdb", fetch)
    )


def stat_values(
    dashboards: list[dict[str, Any]],
    flavour: str,
    run: Callable[[str], dict[str, float]],
) -> dict[tuple[str, str, str], float]:
    """(dashboard, panel, site or "") → the number a stat tile shows, for every stat panel."""
    query_field = "expr" if flavour == "victoriametrics" else "query"
    end_s = time.time()
    values: dict[tuple[str, str, str], float] = {}
    for dashboard in dashboards:
        for panel in dashboard["panels"]:
            if panel["type"] != "stat":
                continue
            (target,) = panel["targets"]
            query = interpolate_macros(
                interpolate_variables(
                    target[query_field], dashboard["templating"]["list"], Selection(), flavour
                ),
                start_s=end_s - RANGE_S,
                end_s=end_s,
                interval_s=panel_interval_s(panel),
            )
            for site, value in run(query).items():
                values[(dashboard["title"], panel["title"], site)] = value
    return values


def test_stat_tiles_agree_between_stores_and_with_the_data(
    vm_client: httpx.Client, influx_client: httpx.Client, influx_loaded: InfluxDb1Server
) -> None:
    """Two query languages, one meaning: each tile shows the same number on both stores."""
    end_s = time.time()

    def from_vm(query: str) -> dict[str, float]:
        result = prometheus_query(
            vm_client, query, instant=True, start_s=end_s - RANGE_S, end_s=end_s, step_s=60
        )
        return {item["metric"].get("site", ""): float(item["value"][1]) for item in result}

    def from_influx(query: str) -> dict[str, float]:
        series = influx_query(influx_client, influx_loaded.database, query)
        assert all(len(item["values"]) == 1 for item in series), (query, series)
        return {
            item.get("tags", {}).get("site", ""): float(item["values"][0][1]) for item in series
        }

    vm_values = stat_values(
        load_dashboards(DEFAULT_OUTPUT_DIR, "victoriametrics"), "victoriametrics", from_vm
    )
    influx_values = stat_values(
        load_dashboards(DEFAULT_OUTPUT_DIR, "influxdb"), "influxdb", from_influx
    )
    assert vm_values.keys() == influx_values.keys()
    assert vm_values == pytest.approx(influx_values)

    wall = {
        panel: value
        for (title, panel, site), value in vm_values.items()
        if "wall" in title and site == ""
    }
    pcs = PCS_PER_SCHOOL * len(SCHOOLS)
    # The focus school has one PC per status; every other school has one PC at risk.
    at_risk = 1 + (len(SCHOOLS) - 1)
    protected = pcs - at_risk - 2
    assert wall == {
        "AV coverage": pytest.approx(100 * protected / pcs),
        "PCs protected": protected,
        "PCs at risk": at_risk,
        "PCs without AV": 1,
        "AV status unknown": 1,
        "Schools with Internet": len(SCHOOLS) - 1,  # OFFLINE_SCHOOL lost its link
        "Schools reporting": len(SCHOOLS),
        "PCs reporting": pcs,
        "High / critical events (24 h)": 3 * len(SCHOOLS),
    }
    internet = {
        site: v for (_, panel, site), v in vm_values.items() if panel == "Internet by school"
    }
    assert internet == {site: float(site != OFFLINE_SCHOOL) for site in SCHOOLS}


def test_the_check_reports_errors_empty_results_and_unfiltered_queries(
    vm_client: httpx.Client,
) -> None:
    """The check above must be able to fail: feed it the three mistakes it exists to catch."""
    (template,) = [
        d
        for d in load_dashboards(DEFAULT_OUTPUT_DIR, "victoriametrics")
        if d["uid"] == "cw-school-vm"
    ]
    mistakes = {
        "syntax": 'sum(campus_health_cpu_pct{site=~"${school}"}',
        "typo": 'campus_health_cpu_percent{site=~"${school}"}',
        "unfiltered": "campus_health_cpu_pct",
    }
    dashboard = template | {
        "panels": [
            {"type": "timeseries", "title": title, "targets": [{"refId": "A", "expr": expr}]}
            for title, expr in mistakes.items()
        ]
    }

    def run(
        query: str, target: dict[str, Any], start_s: float, end_s: float, step_s: int
    ) -> list[dict[str, Any]]:
        return prometheus_query(
            vm_client, query, instant=False, start_s=start_s, end_s=end_s, step_s=step_s
        )

    runs, problems = check_every_panel([dashboard], "victoriametrics", run, sites_in_prometheus)
    report = "\n".join(problems)
    assert runs == len(mistakes) * len(SELECTIONS)
    assert report.count("/ syntax /") == len(SELECTIONS) and "error: HTTP 422" in report
    assert report.count("/ typo /") == len(SELECTIONS) and "empty result" in report
    # "All" lets every school through by design; a district or school selection must not.
    assert report.count("/ unfiltered /") == len(SELECTIONS) - 1
    assert "series of other schools: ['hcm-q10-thcs-d']" in report
