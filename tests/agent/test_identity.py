from __future__ import annotations

import json
from pathlib import Path

from campuswatch.agent.identity import HardwareFacts, resolve_identity

LAB_PC = HardwareFacts("4c4c4544-0051-3410-8058-b4c04f4e3332", "a" * 32, ("00:1a:2b:3c:4d:5e",))


def test_identity_is_derived_and_stable(tmp_path: Path) -> None:
    first = resolve_identity(tmp_path, LAB_PC)
    again = resolve_identity(tmp_path, LAB_PC)
    assert first.info.origin == "new"
    assert again.info.origin == "stable"
    assert first.device_id == again.device_id
    assert first.device_id.startswith("pc-")


def test_reimaged_pc_gets_its_old_id_back(tmp_path: Path) -> None:
    before = resolve_identity(tmp_path / "old", LAB_PC)
    after_reinstall = resolve_identity(tmp_path / "fresh", LAB_PC)
    assert after_reinstall.device_id == before.device_id


def test_replaced_network_card_keeps_the_identity(tmp_path: Path) -> None:
    first = resolve_identity(tmp_path, LAB_PC)
    new_nic = HardwareFacts(LAB_PC.product_uuid, LAB_PC.machine_id, ("00:aa:bb:cc:dd:ee",))
    assert resolve_identity(tmp_path, new_nic).device_id == first.device_id


def test_cloned_state_dir_on_other_hardware_is_reidentified(tmp_path: Path) -> None:
    golden = resolve_identity(tmp_path, LAB_PC)
    # The golden image, state dir included, copied onto another PC: same machine-id.
    clone_hw = HardwareFacts(
        "4c4c4544-0000-1111-2222-333344445555", LAB_PC.machine_id, ("00:1a:2b:3c:99:99",)
    )
    clone = resolve_identity(tmp_path, clone_hw)
    assert clone.device_id != golden.device_id
    assert clone.info.origin == "reidentified"
    assert clone.info.previous_device_id == golden.device_id
    stored = json.loads((tmp_path / "identity.json").read_text())
    assert stored["device_id"] == clone.device_id
    assert resolve_identity(tmp_path, clone_hw).info.origin == "stable"


def test_vm_clone_without_smbios_uuid_is_reidentified_by_macs(tmp_path: Path) -> None:
    vm = HardwareFacts(None, "b" * 32, ("52:54:00:00:00:01",))
    original = resolve_identity(tmp_path, vm)
    copy = resolve_identity(tmp_path, HardwareFacts(None, "b" * 32, ("52:54:00:00:00:02",)))
    assert copy.device_id != original.device_id


def test_configured_id_wins(tmp_path: Path) -> None:
    identity = resolve_identity(tmp_path, LAB_PC, configured_device_id="lab1-pc07")
    assert identity.device_id == "lab1-pc07"
    assert identity.info.origin == "configured"


def test_corrupt_identity_file_is_replaced_not_fatal(tmp_path: Path) -> None:
    (tmp_path / "identity.json").write_text("{broken", encoding="utf-8")
    identity = resolve_identity(tmp_path, LAB_PC)
    assert identity.info.origin == "new"
