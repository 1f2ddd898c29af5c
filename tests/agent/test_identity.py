from __future__ import annotations

import json
from pathlib import Path

import pytest

from campuswatch.agent.identity import HardwareFacts, read_hardware_facts, resolve_identity

LAB_PC = HardwareFacts("4c4c4544-0051-3410-8058-b4c04f4e3332", "a" * 32, ("00:1a:2b:3c:4d:5e",))


def test_identity_is_derived_and_stable(tmp_path: Path) -> None:
    first = resolve_identity(tmp_path, LAB_PC)
    again = resolve_identity(tmp_path, LAB_PC)
    assert first.info.origin == "new"
    assert again.info.origin == "stable"
    assert first.device_id == again.device_id
    assert first.device_id.startswith("pc-")


def test_fingerprint_is_the_same_as_before_msgspec_encoded_it() -> None:
    """Issue 18: the fingerprint went from the stdlib json to msgspec (json stays unloaded);
    the collector compares fingerprints across restarts, so not one byte may change, even
    for a machine-id with a DEL or non-ASCII byte (which json escaped)."""
    assert LAB_PC.fingerprint() == (
        "42b3177da9b8d51ce5f26c8776bbe28b46da844c7c6372f66975366542d3bf64"
    )
    odd = HardwareFacts(None, 'x\x7fy"\\ \u00e9', ())
    assert odd.fingerprint() == "49a7584544a138f0440e59daf02c9699dd428829372d0c75e75352c0b9e826d9"


def test_identity_file_stays_indented_json(tmp_path: Path) -> None:
    identity = resolve_identity(tmp_path, LAB_PC)
    text = (tmp_path / "identity.json").read_text(encoding="utf-8")
    assert text.startswith('{\n  "device_id": ')
    assert json.loads(text)["device_id"] == identity.device_id


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


# --- what survives without a readable SMBIOS UUID (issue 18 item 5) -----------------------
# The id survives re-imaging and a replaced network card only with a readable SMBIOS UUID.
# These tests pin down the fallbacks, which docs/agent.md describes.

NO_UUID = HardwareFacts(None, "c" * 32, ("00:1a:2b:3c:4d:5e",))


def test_with_a_uuid_a_reimaged_pc_with_a_replaced_card_gets_a_new_id(tmp_path: Path) -> None:
    """The MACs are part of the derivation (boards that share one UUID stay apart), so the
    two events together, with the state dir lost, give a new id."""
    before = resolve_identity(tmp_path / "old", LAB_PC)
    new_nic = HardwareFacts(LAB_PC.product_uuid, "d" * 32, ("00:aa:bb:cc:dd:ee",))
    assert resolve_identity(tmp_path / "fresh", new_nic).device_id != before.device_id


def test_without_uuid_reimaging_gives_a_new_id(tmp_path: Path) -> None:
    before = resolve_identity(tmp_path / "old", NO_UUID)
    # A re-install writes a new /etc/machine-id (or sysprep a new MachineGuid).
    reinstalled = HardwareFacts(None, "e" * 32, NO_UUID.macs)
    after = resolve_identity(tmp_path / "fresh", reinstalled)
    assert after.device_id != before.device_id
    assert after.info.origin == "new"


def test_without_uuid_a_reimage_that_keeps_the_machine_id_keeps_the_id(tmp_path: Path) -> None:
    before = resolve_identity(tmp_path / "old", NO_UUID)
    assert resolve_identity(tmp_path / "fresh", NO_UUID).device_id == before.device_id


def test_without_uuid_a_replaced_card_gives_a_new_id(tmp_path: Path) -> None:
    before = resolve_identity(tmp_path, NO_UUID)
    after = resolve_identity(
        tmp_path, HardwareFacts(None, NO_UUID.machine_id, ("00:aa:00:00:00:01",))
    )
    assert after.device_id != before.device_id
    assert after.info.origin == "reidentified"


def test_without_uuid_an_added_card_keeps_the_id(tmp_path: Path) -> None:
    before = resolve_identity(tmp_path, NO_UUID)
    more = HardwareFacts(None, NO_UUID.machine_id, (*NO_UUID.macs, "00:aa:00:00:00:01"))
    assert resolve_identity(tmp_path, more).device_id == before.device_id


def test_with_nothing_stable_the_id_is_random_and_kept_only_in_the_state_dir(
    tmp_path: Path,
) -> None:
    nothing = HardwareFacts(None, None, ())
    first = resolve_identity(tmp_path / "a", nothing)
    assert resolve_identity(tmp_path / "a", nothing).device_id == first.device_id
    assert resolve_identity(tmp_path / "b", nothing).device_id != first.device_id


def _fake_root(tmp_path: Path, uuid: str | None, machine_id: str | None, dbus: str | None) -> Path:
    root = tmp_path / "root"
    for relative, value in (
        ("sys/class/dmi/id/product_uuid", uuid),
        ("etc/machine-id", machine_id),
        ("var/lib/dbus/machine-id", dbus),
    ):
        if value is not None:
            (root / relative).parent.mkdir(parents=True, exist_ok=True)
            (root / relative).write_text(value + "\n", encoding="ascii")
    return root


@pytest.mark.parametrize(
    "placeholder",
    ["00000000-0000-0000-0000-000000000000", "FFFFFFFF-FFFF-FFFF-FFFF-FFFFFFFFFFFF",
     "03000200-0400-0500-0006-000700080009"],
)  # fmt: skip
def test_placeholder_uuid_is_no_uuid(tmp_path: Path, placeholder: str) -> None:
    facts = read_hardware_facts(_fake_root(tmp_path, placeholder, "f" * 32, None))
    assert facts.product_uuid is None
    assert facts.machine_id == "f" * 32


def test_unreadable_uuid_falls_back_to_the_machine_id(tmp_path: Path) -> None:
    # Not root (product_uuid is 0400 root), or no DMI at all (ARM boards, some VMs).
    facts = read_hardware_facts(_fake_root(tmp_path, None, "f" * 32, None))
    assert facts.product_uuid is None and facts.machine_id == "f" * 32


def test_machine_id_falls_back_to_dbus(tmp_path: Path) -> None:
    facts = read_hardware_facts(_fake_root(tmp_path, "4C4C4544-0051-3410", None, "9" * 32))
    assert facts.product_uuid == "4c4c4544-0051-3410"
    assert facts.machine_id == "9" * 32
