"""The engine drops a partition's schools when another collector takes them over
(docs/scale.md#ownership): nothing left to time out as silence or to stay firing."""

from __future__ import annotations

from datetime import timedelta

from campuswatch.collector.rules.engine import RuleEngine
from tests.collector.rules.test_engine import T0, engine_for, msg, rule, tick

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


def test_a_silent_device_of_a_partition_taken_over_fires_at_the_next_tick() -> None:
    """A takeover restores the partition's devices from the register while this collector
    is running: a device silent since before is judged at the next tick, although the
    engine already ticked and none of its reports came through this collector."""
    engine = engine_for(rule(SILENT))
    hot(engine, 0, "school-a", "pc-a")
    assert tick(engine, 60) == []  # the first tick has looked at every device
    last_report = msg(30, kind="health", site="school-b", device_id="pc-b", cpu_pct=5)
    engine.restore([last_report], [], now=T0 + timedelta(seconds=90))
    fired = tick(engine, 400)
    assert [(s.device_id, s.status) for s in fired] == [("pc-a", "firing"), ("pc-b", "firing")]
