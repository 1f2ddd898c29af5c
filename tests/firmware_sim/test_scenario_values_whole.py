"""Scenario values checked by pattern are matched whole: Python's ``$`` also matches before a
final newline, and a MAC with one would only fail later, in every message the simulator sends."""

from __future__ import annotations

import pytest

from campuswatch.firmware_sim.scenario import ScenarioError, parse_scenario

SCENARIO = """\
name: rogue device
timeline:
  - at: 1m
    action: rogue_device
    select: {{school: 1}}
    mac: "{mac}"
    ip: 10.1.99.23
"""


def test_a_mac_with_a_trailing_newline_is_refused() -> None:
    assert parse_scenario(SCENARIO.format(mac="02:5e:10:ab:cd:ef")).steps
    with pytest.raises(ScenarioError, match="mac"):
        parse_scenario(SCENARIO.format(mac="02:5e:10:ab:cd:ef\\n"))
