"""Engine behaviour per condition kind, lifecycle (no storms), bounds and hot reload."""

from __future__ import annotations

import gc
import tracemalloc
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from campuswatch.collector.register.assets import AssetChange
from campuswatch.collector.rules.engine import EngineLimits, RuleEngine, fingerprint
from campuswatch.collector.rules.loader import parse_rule_text, rule_pack_from_rules
from campuswatch.collector.rules.model import Rule
from campuswatch.collector.rules.testing import build_message
from campuswatch.collector.signals import AlertSignal
from campuswatch.wire.codec import DecodedMessage
from campuswatch.wire.topics import Topic

T0 = datetime(2025, 3, 3, 7, 0, tzinfo=UTC)
_sequence = iter(range(1, 10**9))


def rule(
    condition: str, *, subject: str = "device", summary: str = "s {site_id}", extra: str = ""
) -> Rule:
    return parse_rule_text(
        f"id: {uuid.uuid4()}\ntitle: {{en: t, vi: tê}}\ndescription: {{en: d, vi: đ}}\n"
        f"level: high\nstatus: test\nsubject: {subject}\n"
        f'summary: {{en: "{summary}", vi: "tiếng Việt: {summary}"}}\n'
        f"runbook: {{en: a, vi: ấ}}\n{extra}condition:\n{condition}"
    )


def msg(at_s: float, **data: Any) -> DecodedMessage:
    at = T0 + timedelta(seconds=at_s)
    message = build_message(data, at, next(_sequence))
    return DecodedMessage(Topic(message.site, message.device_id, data["kind"]), message, at, 0.0)


def tick(engine: RuleEngine, at_s: float) -> list[AlertSignal]:
    return engine.evaluate_tick(T0 + timedelta(seconds=at_s))


def engine_for(*rules: Rule, **kwargs: Any) -> RuleEngine:
    return RuleEngine(rule_pack_from_rules(list(rules)), **kwargs)


def subjects_judged(engine: RuleEngine, method: str) -> list[tuple[str, str | None]]:
    """The subjects the engine's only rule passes to ``method`` from now on, in order."""
    [runtime] = engine._runtimes
    judged: list[tuple[str, str | None]] = []
    original = getattr(runtime, method)

    def counting(key: tuple[str, str | None], *args: Any) -> None:
        judged.append(key)
        original(key, *args)

    setattr(runtime, method, counting)
    return judged


AV_OFF = """  match:
    kind: av
    where:
      - field: products[*].realtime_protection
        equals: false
"""


def av(at_s: float, device: str, realtime: bool | None) -> DecodedMessage:
    product: dict[str, Any] = {"name": "Defender", "source": "defender"}
    if realtime is not None:
        product["realtime_protection"] = realtime
    return msg(at_s, kind="av", site="s1", device_id=device, status="at_risk", products=[product])


def test_match_fires_once_not_per_message_and_resolves_once() -> None:
    engine = engine_for(rule(AV_OFF, summary="off on {device_id} at {site_id}"))
    signals = [s for i in range(50) for s in engine.process(av(i, "pc-1", False))]
    assert [s.status for s in signals] == ["firing"]
    first = signals[0]
    assert first.summary == "off on pc-1 at s1"
    assert first.fingerprint == fingerprint(first.rule_id, "s1", "pc-1")
    assert first.evidence[0].kind == "av"
    assert first.evidence[0].excerpt == {"products[*].realtime_protection": False}
    assert [s.status for s in engine.process(av(60, "pc-1", True))] == ["resolved"]
    assert engine.process(av(61, "pc-1", True)) == []


def test_unknown_value_neither_fires_nor_resolves() -> None:
    engine = engine_for(rule(AV_OFF))
    assert engine.process(av(0, "pc-1", None)) == []
    engine.process(av(1, "pc-1", False))
    assert engine.stats()["alerts_firing"] == 1


def test_for_keeps_alert_pending_and_fires_on_a_tick() -> None:
    condition = """  match:
    kind: state
    where: [{field: status, equals: offline}]
    for: 10m
"""
    engine = engine_for(rule(condition))
    assert engine.process(msg(0, kind="state", site="s1", device_id="d1", status="offline")) == []
    assert tick(engine, 9 * 60) == []
    assert [s.status for s in tick(engine, 10 * 60)] == ["firing"]
    assert tick(engine, 11 * 60) == []
    # A short blip during pending must not fire at all.
    engine.process(msg(700, kind="state", site="s1", device_id="d2", status="offline"))
    engine.process(msg(760, kind="state", site="s1", device_id="d2", status="online"))
    assert tick(engine, 2000) == []


THRESHOLD = """  threshold:
    kind: net
    aggregate: avg
    field: loss_pct
    window: 10m
    above: 10
    clear_below: 5
"""


def test_threshold_hysteresis_between_clear_and_fire_bounds() -> None:
    engine = engine_for(rule(THRESHOLD, subject="site"))
    out = engine.process(msg(0, kind="net", site="s1", device_id="a", loss_pct=20))
    assert [s.status for s in out] == ["firing"] and out[0].device_id is None
    # avg 7.5 lies in the band: stays firing, nothing emitted
    assert engine.process(msg(11 * 60, kind="net", site="s1", device_id="a", loss_pct=7.5)) == []
    assert [
        s.status
        for s in engine.process(msg(22 * 60, kind="net", site="s1", device_id="b", loss_pct=4))
    ] == ["resolved"]


def test_threshold_window_expires_on_ticks_and_count_max() -> None:
    count = rule(
        """  threshold:
    kind: event
    aggregate: count
    where: [{field: event_type, equals: login_failed}]
    window: 5m
    at_least: 3
""",
    )
    engine = engine_for(count)
    for second in (0, 10, 20):
        out = engine.process(
            msg(second, kind="event", site="s1", device_id="pc", event_type="login_failed")
        )
    assert [s.status for s in out] == ["firing"]
    assert [s.status for s in tick(engine, 400)] == ["resolved"]
    highest = rule(THRESHOLD.replace("avg", "max").replace("clear_below: 5\n", ""))
    engine = engine_for(highest)
    engine.process(msg(0, kind="net", site="s1", device_id="a", loss_pct=50))
    engine.process(msg(60, kind="net", site="s1", device_id="a", loss_pct=1))
    assert [s.status for s in tick(engine, 601)] == ["resolved"]  # the 50 left the window


def test_absence_fires_on_tick_and_resolves_on_message() -> None:
    engine = engine_for(rule("  absence:\n    kind: health\n    for: 15m\n"))
    engine.process(msg(0, kind="health", site="s1", device_id="pc-1"))
    engine.process(msg(0, kind="state", site="s1", device_id="pc-2", status="online"))
    assert tick(engine, 14 * 60) == []
    fired = tick(engine, 15 * 60)
    assert [(s.status, s.device_id) for s in fired] == [("firing", "pc-1")]
    assert tick(engine, 30 * 60) == []
    # other kinds do not count as a sign of life for a kind-specific absence
    assert engine.process(msg(31 * 60, kind="net", site="s1", device_id="pc-1")) == []
    assert [
        s.status for s in engine.process(msg(32 * 60, kind="health", site="s1", device_id="pc-1"))
    ] == ["resolved"]


def test_an_absence_tick_looks_only_at_devices_whose_silence_may_be_due() -> None:
    """Both shipped absence rules watch each of a district's 100,000 devices; a tick judges
    only those whose newest watched report is now old enough, not every device every 10 s."""
    silent = rule("  absence:\n    kind: health\n    for: 15m\n")
    engine = engine_for(silent)
    for index in range(1000):
        engine.process(msg(index * 0.1, kind="health", site="s1", device_id=f"pc-{index}"))
    assert tick(engine, 120) == []  # the first tick looks at every device
    judged = subjects_judged(engine, "_judge")
    assert tick(engine, 300) == [] and judged == []
    fired = tick(engine, 15 * 60 + 49.95)
    assert len(judged) == 500
    assert [signal.device_id for signal in fired] == [f"pc-{index}" for index in range(500)]
    # A report resolves its device's alert, and its silence is timed again from there.
    assert [
        s.status for s in engine.process(msg(16 * 60, kind="health", site="s1", device_id="pc-7"))
    ] == ["resolved"]
    judged.clear()
    fired = tick(engine, 20 * 60)
    assert [signal.device_id for signal in fired] == [f"pc-{index}" for index in range(500, 1000)]
    assert sorted(judged) == sorted(
        [("s1", "pc-7")] + [("s1", f"pc-{n}") for n in range(500, 1000)]
    )
    judged.clear()
    assert tick(engine, 30 * 60) == [] and judged == []
    assert [(s.status, s.device_id) for s in tick(engine, 31 * 60)] == [("firing", "pc-7")]
    assert judged == [("s1", "pc-7")]


def test_an_absence_alert_resolved_by_hand_fires_again_while_the_device_stays_silent() -> None:
    """As before the tick judged only due devices: the next tick finds it still silent."""
    silent = rule("  absence:\n    kind: health\n    for: 15m\n")
    engine = engine_for(silent)
    engine.process(msg(0, kind="health", site="s1", device_id="pc-1"))
    assert [s.status for s in tick(engine, 15 * 60)] == ["firing"]
    assert tick(engine, 16 * 60) == []
    assert engine.forget(silent.id, "s1", "pc-1") is True
    assert [(s.status, s.device_id) for s in tick(engine, 17 * 60)] == [("firing", "pc-1")]


def test_change_direction_uses_version_order() -> None:
    condition = """  change:
    kind: hello
    field: firmware_version
    direction: decrease
    compare: version
"""
    engine = engine_for(rule(condition, summary="{previous} -> {value}"))

    def hello(at_s: float, version: str) -> DecodedMessage:
        return msg(
            at_s,
            kind="hello",
            site="s1",
            device_id="p",
            device_type="projector",
            software="fw",
            software_version="1",
            firmware_version=version,
        )

    assert engine.process(hello(0, "2.9")) == []
    assert engine.process(hello(1, "2.10")) == []
    out = engine.process(hello(2, "2.9.1"))
    assert [s.summary for s in out] == ["2.10 -> 2.9.1"]
    assert len(out[0].evidence) == 2


def test_new_entity_through_callback_and_through_asset_changes() -> None:
    known = {("s1", "00:00:00:00:00:01")}
    engine = engine_for(
        rule("  new_entity:\n    entity: discovered_host\n", summary="{mac} at {ip}"),
        is_registered=lambda site, key: (site, key) in known,
    )
    sweep = msg(
        0,
        kind="discovery",
        site="s1",
        device_id="scan",
        subnet="10.0.0.0/24",
        hosts=[
            {"ip": "10.0.0.1", "mac": "00:00:00:00:00:01"},
            {"ip": "10.0.0.9", "mac": "00:00:00:00:00:09"},
        ],
    )
    out = engine.process(sweep)
    assert [s.summary for s in out] == ["00:00:00:00:00:09 at 10.0.0.9"]
    assert out[0].device_id is None and out[0].labels["entity"] == "mac:00:00:00:00:00:09"
    assert engine.process(sweep) == []
    registered = AssetChange(7, "updated", ("registered",), True, "api", mac="00:00:00:00:00:09")
    assert [s.status for s in engine.process_asset_changes("s1", [registered], T0)] == ["resolved"]
    unknown = AssetChange(
        8, "created", ("macs",), False, "discovery", True, "00:00:00:00:00:0a", "10.0.0.10"
    )
    assert [s.status for s in engine.process_asset_changes("s1", [unknown], T0)] == ["firing"]


def test_ratio_per_site_over_latest_state() -> None:
    condition = """  ratio:
    kind: av
    where: [{field: status, equals: protected}]
    below: 100
"""
    engine = engine_for(rule(condition, subject="site", summary="{ratio_pct} {matching}/{total}"))
    for device in ("a", "b", "c", "d"):
        engine.process(msg(0, kind="av", site="s1", device_id=device, status="protected"))
    engine.process(msg(0, kind="av", site="s1", device_id="d", status="no_av"))
    fired = tick(engine, 60)
    assert [(s.status, s.summary) for s in fired] == [("firing", "75 3/4")]
    assert [e.message_id for e in fired[0].evidence] and len(fired[0].evidence) == 1
    assert tick(engine, 120) == []
    engine.process(msg(130, kind="av", site="s1", device_id="d", status="protected"))
    assert [s.status for s in tick(engine, 180)] == ["resolved"]


def test_state_is_bounded_and_evictions_are_counted() -> None:
    limits = EngineLimits(max_devices=100, max_subjects_per_rule=50, max_window_samples=10)
    engine = engine_for(rule(AV_OFF), rule(THRESHOLD), limits=limits)
    for index in range(1000):
        engine.process(av(index, f"pc-{index}", False))
        engine.process(msg(index, kind="net", site="s1", device_id="pc-0", loss_pct=1))
    stats = engine.stats()
    assert stats["devices_tracked"] == 100 and stats["devices_evicted"] == 900
    assert stats["alert_states"] <= 100 and stats["subjects_evicted"] >= 950
    assert stats["window_samples_dropped"] == 990


def test_a_flood_of_new_device_ids_leaves_the_tick_queues_within_the_engine_s_bounds() -> None:
    """A gateway's login can report for device ids it makes up. The engine keeps at most
    ``max_devices`` devices and ``max_subjects_per_rule`` windows; what waits for a tick
    (silences, expiring windows) must not keep the evicted ones for a whole window or
    silence (30 days for "asset not seen")."""
    limits = EngineLimits(max_devices=100, max_subjects_per_rule=50)
    silent = rule("  absence:\n    for: 30d\n")
    engine = engine_for(silent, rule(THRESHOLD), limits=limits)
    for index in range(5000):
        engine.process(msg(index * 0.01, kind="net", site="s1", device_id=f"x-{index}", loss_pct=1))
    tick(engine, 60)
    for index in range(5000, 10000):
        engine.process(
            msg(60 + index * 0.01, kind="net", site="s1", device_id=f"x-{index}", loss_pct=1)
        )
    tick(engine, 200)
    absence, threshold = engine._runtimes
    assert len(absence.due) <= 3 * limits.max_devices  # type: ignore[attr-defined]
    assert len(absence.scheduled) <= 3 * limits.max_devices  # type: ignore[attr-defined]
    assert len(threshold.expiries) <= 3 * limits.max_subjects_per_rule  # type: ignore[attr-defined]


def test_a_threshold_window_keeps_little_per_sample() -> None:
    """A district's 60,000 classroom sensors fill two 10-minute windows each: a few hundred
    bytes more per sample is hundreds of MB. Samples keep what the evidence needs, not an
    evidence record each (the message objects are made before measuring)."""
    engine = engine_for(rule(THRESHOLD))
    reports = [
        msg(index * 0.1, kind="net", site="s1", device_id=f"pc-{index % 100}", loss_pct=1)
        for index in range(5000)
    ]
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for report in reports:
            engine.process(report)
        per_sample = (tracemalloc.get_traced_memory()[0] - before) / len(reports)
    finally:
        tracemalloc.stop()
    assert engine.stats()["window_samples_dropped"] == 0
    assert per_sample < 200, f"{per_sample:.0f} bytes a sample"


def test_a_tick_looks_again_only_at_windows_a_sample_has_left() -> None:
    """A district's 60,000 classroom sensors keep two windows each, and the housekeeping tick
    runs every 10 s: judging every window again at every tick, where no sample has left it
    and so nothing can have changed, was most of the threshold rules' share of the tick."""
    engine = engine_for(rule(THRESHOLD))
    for index in range(1000):
        engine.process(
            msg(index * 0.1, kind="net", site="s1", device_id=f"pc-{index}", loss_pct=50)
        )
    judged = subjects_judged(engine, "_evaluate")
    assert tick(engine, 300) == [] and judged == []
    # 10 minutes after the first 200 reports: their windows empty, and those alerts resolve.
    resolved = tick(engine, 619.95)
    assert len(judged) == 200
    assert [signal.device_id for signal in resolved] == [f"pc-{index}" for index in range(200)]
    assert {signal.status for signal in resolved} == {"resolved"}


def test_threshold_evidence_cites_the_window_s_newest_reports_with_their_values() -> None:
    engine = engine_for(rule(THRESHOLD))
    reports = [
        msg(at_s, kind="net", site="s1", device_id="pc-1", loss_pct=loss)
        for at_s, loss in ((0, 2), (10, 4), (20, 30), (30, 40))
    ]
    fired = [signal for report in reports for signal in engine.process(report)]
    assert [s.status for s in fired] == ["firing"]  # avg 12 after the third report
    assert [(e.message_id, e.kind, e.ts, e.excerpt) for e in fired[0].evidence] == [
        (report.message.id, "net", report.message.ts, {"value": float(loss)})
        for report, loss in zip(reports[:3], (2, 4, 30), strict=True)
    ]


def test_hot_reload_keeps_state_of_unchanged_rules_and_resolves_removed_ones() -> None:
    kept = rule(AV_OFF)
    removed = rule(AV_OFF.replace("realtime_protection", "enabled"))
    engine = engine_for(kept, removed, clock=lambda: T0 + timedelta(hours=1))
    product = {"name": "x", "source": "defender", "realtime_protection": False, "enabled": False}
    out = engine.process(
        msg(0, kind="av", site="s1", device_id="pc", status="at_risk", products=[product])
    )
    assert len(out) == 2
    retitled = parse_rule_text(
        f"id: {kept.id}\ntitle: {{en: new title, vi: tên mới}}\ndescription: {{en: d, vi: đ}}\n"
        f"level: high\nstatus: test\nsubject: device\n"
        f"summary: {{en: s, vi: ś}}\nrunbook: {{en: a, vi: ấ}}\ncondition:\n{AV_OFF}"
    )
    resolved = engine.replace_pack(rule_pack_from_rules([retitled]))
    assert [(s.rule_id, s.status) for s in resolved] == [(removed.id, "resolved")]
    assert engine.rule_ids == (kept.id,)
    # still firing after reload: no second "firing"; the resolution carries the new title
    assert (
        engine.process(
            msg(1, kind="av", site="s1", device_id="pc", status="at_risk", products=[product])
        )
        == []
    )
    product["realtime_protection"] = True
    out = engine.process(
        msg(2, kind="av", site="s1", device_id="pc", status="at_risk", products=[product])
    )
    assert [(s.status, s.rule_title) for s in out] == [("resolved", "new title")]


def test_a_restarted_engine_warms_from_the_register_and_emits_nothing_doing_so() -> None:
    """What ``restore`` gets after a restart: each device's newest message per kind and
    the alerts still open. Silence, changes and clearing all carry across the restart."""
    av_off = rule(AV_OFF)
    silent = rule("  absence:\n    kind: health\n    for: 15m\n")
    firmware_down = rule(
        "  change:\n    kind: hello\n    field: firmware_version\n"
        "    direction: decrease\n    compare: version\n"
    )
    before = engine_for(av_off, silent, firmware_down)
    hello = {
        "kind": "hello",
        "site": "s1",
        "device_id": "proj-1",
        "device_type": "projector",
        "software": "fw",
        "software_version": "1",
    }
    latest = [
        av(0, "pc-1", False),
        msg(0, kind="health", site="s1", device_id="pc-2"),
        msg(0, **hello, firmware_version="2.10"),
    ]
    opened = [s for decoded in latest for s in before.process(decoded)]
    assert [(s.rule_id, s.status) for s in opened] == [(av_off.id, "firing")]

    after = engine_for(av_off, silent, firmware_down)
    after.restore(latest, [(av_off.id, "s1", "pc-1")], now=T0 + timedelta(minutes=1))
    assert after.stats()["alerts_firing"] == 1
    # Still off: no second "firing" for the alert already open.
    assert after.process(av(120, "pc-1", False)) == []
    # pc-2 has been silent since before the restart.
    assert [(s.status, s.device_id) for s in tick(after, 15 * 60)] == [("firing", "pc-2")]
    # A downgrade is judged against the firmware reported before the restart.
    downgrade = after.process(msg(16 * 60, **hello, firmware_version="2.9"))
    assert [(s.rule_id, s.status) for s in downgrade] == [(firmware_down.id, "firing")]
    # The alert opened before the restart resolves when its condition clears.
    resolved = after.process(av(17 * 60, "pc-1", True))
    assert [(s.fingerprint, s.status) for s in resolved] == [
        (fingerprint(av_off.id, "s1", "pc-1"), "resolved")
    ]


def test_restore_ignores_alerts_of_rules_no_longer_in_the_pack() -> None:
    engine = engine_for(rule(AV_OFF))
    engine.restore([], [(str(uuid.uuid4()), "s1", "pc-1")])
    assert engine.stats()["alerts_firing"] == 0


def test_a_pending_for_timer_survives_a_restart() -> None:
    """A device said offline shortly before the collector restarted: the redelivered
    retained message is a duplicate and never reaches the engine again, so the timer must
    come back from the register's latest state."""
    condition = """  match:
    kind: state
    where: [{field: status, equals: offline}]
    for: 10m
"""
    offline = rule(condition)
    before = engine_for(offline)
    will = msg(0, kind="state", site="s1", device_id="proj-1", status="offline", reason="will")
    assert before.process(will) == []

    after = engine_for(offline)
    after.restore([will], [], now=T0 + timedelta(minutes=2))
    assert tick(after, 9 * 60) == []
    fired = tick(after, 10 * 60)
    assert [(s.status, s.device_id) for s in fired] == [("firing", "proj-1")]
    assert fired[0].evidence[0].message_id == will.message.id
    # A device back online before the restart has no timer to restore.
    back = engine_for(offline)
    online = msg(30, kind="state", site="s1", device_id="proj-1", status="online")
    back.restore([online], [], now=T0 + timedelta(minutes=2))
    assert tick(back, 20 * 60) == []


def test_repeats_of_a_firing_subject_are_folded_until_taken() -> None:
    """No signal per message: repeats are counted in memory and handed over in one piece."""
    engine = engine_for(rule(AV_OFF))
    reports = [av(i, "pc-1", False) for i in range(50)]
    assert [s.status for r in reports for s in engine.process(r)] == ["firing"]
    [folded] = engine.take_repeats()
    assert (folded.status, folded.occurrences) == ("firing", 49)
    assert folded.at == reports[-1].received_at
    assert folded.evidence[0].message_id == reports[-1].message.id
    assert engine.take_repeats() == []
    # Taken for one subject only (the collector does so just before it resolves).
    engine.process(av(60, "pc-1", False))
    engine.process(av(61, "pc-2", False))
    engine.process(av(62, "pc-2", False))
    rule_id = folded.rule_id
    assert engine.take_repeats([(rule_id, "s1", "pc-3")]) == []
    [one] = engine.take_repeats([(rule_id, "s1", "pc-1")])
    assert (one.device_id, one.occurrences) == ("pc-1", 1)
    [other] = engine.take_repeats()
    assert (other.device_id, other.occurrences) == ("pc-2", 1)


def test_a_tick_rejudging_a_held_condition_is_not_a_repeat() -> None:
    engine = engine_for(rule(THRESHOLD))
    engine.process(msg(0, kind="net", site="s1", device_id="r1", loss_pct=50.0))
    for at_s in (30, 60, 90):
        tick(engine, at_s)
    assert engine.take_repeats() == []


def test_a_forgotten_subject_fires_again_on_its_next_trigger() -> None:
    """A person resolved the alert while real-time protection stayed off."""
    av_off = rule(AV_OFF)
    engine = engine_for(av_off)
    engine.process(av(0, "pc-1", False))
    assert engine.forget(av_off.id, "s1", "pc-1") is True
    assert engine.forget(av_off.id, "s1", "pc-1") is False
    assert [s.status for s in engine.process(av(10, "pc-1", False))] == ["firing"]
