"""The checked-in dashboards/ folder is exactly what the code generates, and well-formed."""

from __future__ import annotations

import json
from pathlib import Path

import yaml
from typer.testing import CliRunner

from campuswatch.collector.dashboards.catalog import DASHBOARDS
from campuswatch.collector.dashboards.cli import app
from campuswatch.collector.dashboards.files import (
    DEFAULT_OUTPUT_DIR,
    generated_files,
    stale_files,
    write_files,
)
from campuswatch.collector.dashboards.model import DATASOURCE_UIDS, FLAVOURS, GRID_COLUMNS


def test_checked_in_files_are_up_to_date() -> None:
    outdated = [
        relative
        for relative, text in generated_files().items()
        if not (DEFAULT_OUTPUT_DIR / relative).exists()
        or (DEFAULT_OUTPUT_DIR / relative).read_text(encoding="utf-8") != text
    ]
    assert not outdated, f"run `campuswatch dashboards build`; outdated: {outdated}"
    assert not stale_files(), "dashboard JSON without a definition in the code"


def test_regenerating_is_byte_identical() -> None:
    assert generated_files() == generated_files()


def test_build_writes_then_reports_up_to_date(tmp_path: Path) -> None:
    (tmp_path / "influxdb").mkdir()
    leftover = tmp_path / "influxdb" / "removed-dashboard.json"
    leftover.write_text("{}")
    runner = CliRunner()
    first = runner.invoke(app, ["build", "--output", str(tmp_path)])
    assert first.exit_code == 0, first.output
    assert first.output.count("wrote ") == len(generated_files()) + 1
    assert not leftover.exists()
    second = runner.invoke(app, ["build", "--output", str(tmp_path)])
    assert second.output.strip() == "dashboards are up to date"
    assert write_files(tmp_path) == []


def test_dashboards_are_well_formed() -> None:
    uids: set[str] = set()
    for flavour in FLAVOURS:
        for dashboard in DASHBOARDS:
            path = DEFAULT_OUTPUT_DIR / flavour / f"{dashboard.slug}.json"
            model = json.loads(path.read_text(encoding="utf-8"))
            assert model["uid"] not in uids and len(model["uid"]) <= 40
            uids.add(model["uid"])
            assert [v["name"] for v in model["templating"]["list"]] == ["district", "school"]
            panel_ids = [panel["id"] for panel in model["panels"]]
            assert len(panel_ids) == len(set(panel_ids))
            for panel in model["panels"]:
                if panel["type"] == "row":
                    # An open row's panels follow it; nested ones (the SDK's with_row) would be
                    # hidden from Grafana and from the tests that run every panel's queries.
                    assert panel["collapsed"] is False and panel["panels"] == [], panel["title"]
                position = panel["gridPos"]
                assert position["x"] + position["w"] <= GRID_COLUMNS, panel["title"]
                for target in panel.get("targets", []):
                    assert target["datasource"]["uid"] == DATASOURCE_UIDS[flavour]


def test_provisioning_names_the_uids_the_dashboards_use() -> None:
    files = generated_files()
    datasources = yaml.safe_load(files["provisioning/datasources/campuswatch.yaml"])
    assert {ds["uid"] for ds in datasources["datasources"]} == set(DATASOURCE_UIDS.values())
    providers = yaml.safe_load(files["provisioning/dashboards/campuswatch.yaml"])["providers"]
    assert {p["options"]["path"].rsplit("/", 1)[-1] for p in providers} == set(FLAVOURS)
    assert len({p["folder"] for p in providers}) == len(FLAVOURS)
