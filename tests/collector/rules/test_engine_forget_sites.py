"""The engine drops a partition's schools when another collector takes them over
(docs/scale.md#ownership): nothing left to time out as silence or to stay firing."""

from __future__ import annotations

from campuswatch.collector.rules.engine import RuleEngine
from tests.collector.rules.test_engine import engine_for, msg, rule, tick

HOT_FOUR = """  threshold:
    kind: health
    aggregate: count
    where:
      - field: cpu_pct
        gt: 90
    window: 10m
    above: 3
"""
SILENT = """  absence:
    for: 5m
"""


def hot(engine: RuleEngine, at_s: float, site: str, device: str) -> list[str]:
    message = msg(at_s, kind="health", site=site, device_id=device, cpu_pct=97)
    return [signal.status for signal in engine.process(message)]


def test_forgotten_sites_keep_no_window_alert_or_device_and_others_are_untouched() -> None:
    engine = engine_for(rule(HOT_FOUR), rule(SILENT))
    for n in range(4):
        hot(engine, n, "school-a", "pc-a")
        hot(engine, n, "school-b", "pc-b")
    assert engine.stats()["alerts_firing"] == 2
    engine.forget_sites({"school-a"})
    stats = engine.stats()
    assert stats["alerts_firing"] == 1 and stats["devices_tracked"] == 1
    # No "silent" alert for pc-a, which this collector no longer hears; pc-b's still comes.
    assert [(s.device_id, s.status) for s in tick(engine, 400)] == [("pc-b", "firing")]
    # pc-a starts from nothing if the partition comes back: three hot reports do not fire.
    assert [hot(engine, 500 + n, "school-a", "pc-a") for n in range(3)] == [[], [], []]
    assert hot(engine, 503, "school-a", "pc-a") == ["firing"]
