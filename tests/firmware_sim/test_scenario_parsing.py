from __future__ import annotations

from pathlib import Path

import pytest

from campuswatch.firmware_sim.scenario import ScenarioError, load_scenario, parse_duration

SCENARIOS = Path(__file__).parents[2] / "firmware_sim" / "scenarios"
SHIPPED = {
    "power_cut",
    "uplink_outage",
    "firmware_rollout",
    "stolen_device",
    "rogue_device",
    "cloned_pcs",
    "malware",
    "sensor_stuck",
    "stale_signatures",
    "demo",
}


def test_shipped_scenarios_are_valid() -> None:
    assert {path.stem for path in SCENARIOS.glob("*.yaml")} >= SHIPPED
    for path in SCENARIOS.glob("*.yaml"):
        assert load_scenario(path).steps


def test_every_problem_is_reported_with_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(
        "name: broken\n"
        "timeline:\n"
        "  - at: 2 minutes\n"  # line 3: bad duration
        "    action: uplink_down\n"
        "  - at: 1m\n"
        "    action: explode\n"  # line 6: unknown action
        "  - at: 1m\n"
        "    action: firmware_rollout\n"  # line 8: no to_version (step starts line 7)
        "    select: {colour: red}\n"  # line 9: unknown selector
        "  - at: 1m\n"
        "    action: device_stolen\n"
        "    for: 5m\n",  # line 12: cannot be undone
        encoding="utf-8",
    )
    with pytest.raises(ScenarioError) as caught:
        load_scenario(path)
    problems = caught.value.problems
    expected = [
        (3, "not a duration"),
        (6, "unknown action 'explode'"),
        (7, "firmware_rollout needs 'to_version'"),
        (9, "unknown selector 'colour'"),
        (12, "cannot be undone"),
    ]
    for line, text in expected:
        assert any(p.startswith(f"{path}:{line}: ") and text in p for p in problems), problems
    assert len(problems) == len(expected)


def test_yaml_syntax_error_has_a_line(tmp_path: Path) -> None:
    path = tmp_path / "syntax.yaml"
    path.write_text("name: x\ntimeline:\n  - at: 1m\n    action: [unclosed\n", encoding="utf-8")
    with pytest.raises(ScenarioError, match=rf"^{path}:\d+: not valid YAML"):
        load_scenario(path)


def test_selector_values_are_checked(tmp_path: Path) -> None:
    path = tmp_path / "sel.yaml"
    path.write_text(
        "name: x\ntimeline:\n  - at: 1m\n    action: power_cut\n"
        "    select: {count: 0, percentage: 150}\n",
        encoding="utf-8",
    )
    with pytest.raises(ScenarioError) as caught:
        load_scenario(path)
    assert [p.split(": ", 1)[0] for p in caught.value.problems] == [f"{path}:5", f"{path}:5"]


@pytest.mark.parametrize(
    ("text", "seconds"), [("90", 90), ("30s", 30), ("2m", 120), ("1h30m", 5400), ("1.5d", 129600)]
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "m", "2 m", "1x", "-3s"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)
