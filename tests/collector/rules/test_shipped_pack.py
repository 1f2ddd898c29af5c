"""CI gate: the shipped rule pack is valid, every rule's test case passes, schema in sync."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import yaml
from typer.testing import CliRunner

from campuswatch.collector.rules.cli import app
from campuswatch.collector.rules.loader import is_test_file, load_rule_pack
from campuswatch.collector.rules.model import rule_schema_text

ROOT = Path(__file__).resolve().parents[3]
RULES = ROOT / "rules"
SCHEMA = ROOT / "docs" / "schemas" / "rule.schema.json"


def test_rules_check_passes_on_the_shipped_pack() -> None:
    result = CliRunner().invoke(app, ["check", str(RULES)])
    assert result.exit_code == 0, result.output
    assert "no problems" in result.output


def test_rules_test_passes_on_the_shipped_pack() -> None:
    result = CliRunner().invoke(app, ["test", str(RULES)])
    assert result.exit_code == 0, result.output
    assert "FAIL" not in result.output
    pack = load_rule_pack(RULES)
    assert result.output.count("PASS") == len(pack) >= 20


def test_pack_covers_every_condition_kind_and_theme() -> None:
    pack = load_rule_pack(RULES)
    kinds = {loaded.rule.condition_kind() for loaded in pack.rules}
    assert kinds == {"match", "threshold", "absence", "change", "new_entity", "ratio"}
    themes = {loaded.path.parent.name for loaded in pack.rules}
    assert themes == {"antivirus", "connectivity", "devices", "inventory", "smart_classroom"}


def test_published_schema_is_generated_from_the_types() -> None:
    assert SCHEMA.read_text(encoding="utf-8") == rule_schema_text(), (
        "run: campuswatch rules schema docs/schemas/rule.schema.json"
    )


def test_every_shipped_rule_validates_against_the_published_schema() -> None:
    schema = json.loads(SCHEMA.read_text(encoding="utf-8"))
    rule_files = [path for path in RULES.rglob("*.yaml") if not is_test_file(path)]
    assert rule_files
    for path in rule_files:
        jsonschema.validate(yaml.safe_load(path.read_text(encoding="utf-8")), schema)


def test_rules_test_fails_when_a_test_case_expects_something_else(tmp_path: Path) -> None:
    target = tmp_path / "rules"
    target.mkdir()
    source = RULES / "antivirus" / "av_missing.yaml"
    (target / "av_missing.yaml").write_text(source.read_text(encoding="utf-8"), encoding="utf-8")
    wrong = source.with_name("av_missing.test.yaml").read_text(encoding="utf-8")
    wrong = wrong.replace("statuses: [firing, resolved]", "statuses: [firing]")
    (target / "av_missing.test.yaml").write_text(wrong, encoding="utf-8")
    result = CliRunner().invoke(app, ["test", str(target)])
    assert result.exit_code == 1
    assert (
        "FAIL" in result.output
        and "expected ['firing'], got ['firing', 'resolved']" in result.output
    )
