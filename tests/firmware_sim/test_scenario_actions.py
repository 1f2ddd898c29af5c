from __future__ import annotations

import json
from datetime import datetime, timedelta

from campuswatch.firmware_sim.engine import Simulator
from campuswatch.firmware_sim.labpc import LabPc
from campuswatch.firmware_sim.scenario import parse_scenario
from campuswatch.firmware_sim.transport import MemoryTransport
from tests.firmware_sim.helpers import TUESDAY_MORNING, memory_simulator, of_kind


def _run(
    timeline: str, seconds: float = 300, devices: int = 60
) -> tuple[Simulator, MemoryTransport]:
    scenario = parse_scenario(f"name: t\ntimeline:\n{timeline}", "t.yaml")
    simulator, transport = memory_simulator(scenario=scenario, devices=devices)
    simulator.run_for(seconds, step_s=5)
    return simulator, transport


def _states(transport, device_id: str) -> list[tuple[str, str | None, bool]]:
    found = []
    for published in transport.published:
        if published.topic.endswith(f"/{device_id}/state"):
            body = json.loads(published.payload)
            found.append((body["status"], body.get("reason"), published.by_broker))
    return found


def test_power_cut_fires_wills_and_restores() -> None:
    simulator, transport = _run(
        "  - at: 1m\n    action: power_cut\n    select: {school: 1, building: B}\n    for: 2m\n"
    )
    in_b = [d for d in simulator.fleet.devices if d.site.endswith("s01") and d.building == "B"]
    assert in_b
    for device in in_b:
        assert _states(transport, device.device_id) == [
            ("online", "connected", False),
            ("offline", "will", True),
            ("online", "connected", False),
        ]
    others = [d for d in simulator.fleet.devices if d.building != "B"]
    assert all(len(_states(transport, d.device_id)) == 1 for d in others)


def test_uplink_down_silences_a_school_until_up() -> None:
    simulator, transport = _run(
        "  - at: 1m\n    action: uplink_down\n    select: {school: 2}\n"
        "  - at: 4m\n    action: uplink_up\n    select: {school: 2}\n",
        seconds=300,
    )
    school2 = [d.device_id for d in simulator.fleet.devices if d.site.endswith("s02")]
    # The device clock follows simulated time in these tests, so ts says when it was sent.
    down_from, down_to = (
        TUESDAY_MORNING + timedelta(seconds=61),
        TUESDAY_MORNING + timedelta(minutes=4),
    )
    sent_while_down = [
        p
        for p in transport.published
        if p.topic.split("/")[3] in school2
        and not p.by_broker
        and down_from < datetime.fromisoformat(json.loads(p.payload)["ts"]) < down_to
    ]
    assert not sent_while_down
    sent_before = [p for p in transport.published if p.topic.split("/")[3] in school2]
    assert len(sent_before) > 3 * len(school2)
    for device_id in school2:
        assert [s[:2] for s in _states(transport, device_id)] == [
            ("online", "connected"),
            ("offline", "will"),
            ("online", "connected"),
        ]


def test_firmware_rollout_reboots_with_the_new_version() -> None:
    simulator, transport = _run(
        "  - at: 1m\n    action: firmware_rollout\n    select: {device_type: projector}\n"
        "    to_version: '9.9'\n    spread: 1m\n"
    )
    projectors = [d for d in simulator.fleet.devices if d.device_type == "projector"]
    assert projectors
    for device in projectors:
        hellos = [h for h in of_kind(transport, "hello") if h["device_id"] == device.device_id]
        assert hellos[-1]["firmware_version"] == "9.9" != hellos[0]["firmware_version"]
        assert [s[:2] for s in _states(transport, device.device_id)][-2:] == [
            ("offline", "restart"),
            ("online", "connected"),
        ]
        events = [e for e in of_kind(transport, "event") if e["device_id"] == device.device_id]
        assert any(e["event_type"] == "firmware_updated" for e in events)


def test_stolen_device_vanishes_for_good() -> None:
    simulator, transport = _run(
        "  - at: 1m\n    action: device_stolen\n    select: {device_type: camera, count: 1}\n",
        seconds=600,
    )
    (stolen,) = [d for d in simulator.fleet.devices if d.index in simulator.stolen]
    assert _states(transport, stolen.device_id)[-1] == ("offline", "will", True)
    last_discovery = [m for m in of_kind(transport, "discovery") if m["site"] == stolen.site][-1]
    assert stolen.mac not in {h["mac"] for h in last_discovery["hosts"]}


def test_rogue_device_is_reported_by_the_scanner() -> None:
    simulator, transport = _run(
        "  - at: 1m\n    action: rogue_device\n    select: {school: 1}\n"
        "    mac: '02:aa:bb:cc:dd:ee'\n    ip: 10.1.99.9\n"
    )
    known = {d.mac for d in simulator.fleet.devices}
    reports = [m for m in of_kind(transport, "discovery") if m["site"].endswith("s01")]
    rogue = [h for m in reports for h in m["hosts"] if h["mac"] not in known]
    assert rogue and rogue[0]["mac"] == "02:aa:bb:cc:dd:ee" and rogue[0]["ip"] == "10.1.99.9"


def test_cloned_pcs_share_an_id_with_different_fingerprints() -> None:
    _simulator, transport = _run(
        "  - at: 1m\n    action: cloned_pcs\n    select: {device_type: pc, count: 2}\n"
    )
    fingerprints: dict[str, set[str]] = {}
    for hello in of_kind(transport, "hello"):
        if hello["device_type"] == "pc":
            fingerprints.setdefault(hello["device_id"], set()).add(hello["identity"]["fingerprint"])
    assert sorted(len(f) for f in fingerprints.values())[-2:] == [2, 2]


def test_malware_sets_threats_and_sends_an_event() -> None:
    _simulator, transport = _run(
        "  - at: 1m\n    action: malware_detected\n    select: {device_type: pc, count: 1}\n"
        "    threats: 3\n"
    )
    events = [e for e in of_kind(transport, "event") if e["event_type"] == "threat_detected"]
    assert len(events) == 1 and events[0]["severity"] == "high"
    avs = [m for m in of_kind(transport, "av") if m["device_id"] == events[0]["device_id"]]
    assert any(p.get("threats_found") == 3 for p in avs[-1]["products"])


def test_sensor_stuck_repeats_one_value() -> None:
    simulator, transport = _run(
        "  - at: 1m\n    action: sensor_stuck\n    select: {device_type: env_sensor, count: 1}\n"
        "    metric: co2_ppm\n",
        seconds=900,
    )
    (stuck,) = [d for d in simulator.fleet.devices if d.frozen]
    readings = [
        t["values"] for t in of_kind(transport, "telemetry") if t["device_id"] == stuck.device_id
    ]
    after = readings[-8:]
    assert len({r["co2_ppm"] for r in after}) == 1
    assert len({r["temperature_c"] for r in after}) > 1


def test_stale_signatures_age_with_simulated_time() -> None:
    simulator, transport = _run(
        "  - at: 1m\n    action: av_signatures_stale\n    select: {device_type: pc}\n",
        seconds=3 * 3600,
        devices=40,
    )
    pcs = {d.device_id for d in simulator.fleet.devices if isinstance(d, LabPc) and d.is_windows}
    ages: dict[str, list[float]] = {}
    for message in of_kind(transport, "av"):
        if message["device_id"] in pcs:
            ages.setdefault(message["device_id"], []).append(
                message["products"][-1]["signature_age_hours"]
            )
    assert ages
    for series in ages.values():
        assert series[-1] > series[1] + 2  # kept growing for hours after updates stopped
