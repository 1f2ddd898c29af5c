from __future__ import annotations

from collections import Counter
from pathlib import Path

from campuswatch.firmware_sim.fleet import build_fleet
from campuswatch.firmware_sim.labpc import LabPc
from campuswatch.firmware_sim.scenario import load_scenario
from tests.firmware_sim.helpers import bodies, memory_simulator, of_kind

SCENARIOS = Path(__file__).parents[2] / "firmware_sim" / "scenarios"


def _run(seed: int) -> list[tuple[str, dict[str, object]]]:
    simulator, transport = memory_simulator(
        seed=seed, scenario=load_scenario(SCENARIOS / "demo.yaml")
    )
    simulator.run_for(600, step_s=7)
    return bodies(transport)


def test_same_seed_same_messages() -> None:
    first, second = _run(5), _run(5)
    assert len(first) > 300
    assert first == second


def test_other_seed_other_messages() -> None:
    assert _run(5) != _run(6)


def test_device_ids_are_stable_per_seed() -> None:
    ids = [d.device_id for d in build_fleet(seed=9, schools=3, devices=90).devices]
    assert ids == [d.device_id for d in build_fleet(seed=9, schools=3, devices=90).devices]
    assert len(set(ids)) == len(ids)
    assert ids != [d.device_id for d in build_fleet(seed=10, schools=3, devices=90).devices]


def test_lab_pc_antivirus_mix() -> None:
    pcs = [d for d in build_fleet(seed=2, schools=10, devices=5000).devices if isinstance(d, LabPc)]
    shares = {k: v / len(pcs) for k, v in Counter(pc.av_profile for pc in pcs).items()}
    assert 0.70 < shares["up_to_date"] < 0.80
    assert 0.07 < shares["stale_signatures"] < 0.13
    for profile in ("realtime_off", "no_av", "clamav"):
        assert 0.03 < shares[profile] < 0.07


def test_av_status_comes_from_the_agent_logic() -> None:
    simulator, transport = memory_simulator(seed=2, devices=400, schools=2)
    simulator.run_for(120, step_s=10)
    by_device = {m["device_id"]: m for m in of_kind(transport, "av")}
    pcs = {d.device_id: d for d in simulator.fleet.devices if isinstance(d, LabPc)}
    expected = {
        "up_to_date": "protected",
        "clamav": "protected",
        "no_av": "no_av",
        "stale_signatures": "at_risk",
        "realtime_off": "at_risk",
    }
    assert by_device
    for device_id, message in by_device.items():
        assert message["status"] == expected[pcs[device_id].av_profile], message
