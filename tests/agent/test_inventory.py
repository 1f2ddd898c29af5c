"""Inventory probe: parsers on recorded outputs, then the probe live and with replayed commands."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import msgspec
import pytest

from campuswatch.agent.commands import CommandError, CommandResult
from campuswatch.agent.probes import ProbeContext
from campuswatch.agent.probes.inventory import (
    DPKG_QUERY,
    InventoryProbe,
    inventory_digest,
    normalise_mac,
)
from campuswatch.agent.probes.inventory_linux import (
    parse_cpuinfo_model,
    parse_debian_version,
    parse_dmi,
    parse_dpkg_query,
    parse_os_release,
    parse_rpm,
)
from campuswatch.agent.probes.inventory_windows import (
    HARDWARE_SCRIPT,
    OS_SCRIPT,
    UNINSTALL_SCRIPT,
    parse_windows_cpu,
    parse_windows_os,
    parse_windows_system,
    parse_windows_uninstall,
)
from campuswatch.agent.settings import AgentSettings
from campuswatch.wire import InventoryMessage, decode_message, encode_message
from campuswatch.wire.messages import CpuInfo, OsInfo, SoftwareItem

CASES = Path(__file__).parent / "testcases" / "inventory"
SITE, DEVICE = "school-a", "lab-pc-01"
TOPIC = f"cw/v1/{SITE}/{DEVICE}/inventory"


def expected(input_file: Path) -> Any:
    stem = input_file.name.rsplit(".", 1)[0]
    return json.loads((input_file.parent / f"{stem}.expected.json").read_text(encoding="utf-8"))


def as_data(value: object) -> Any:
    return msgspec.to_builtins(value)


def cases(folder: str, pattern: str) -> list[Path]:
    found = sorted(path for path in (CASES / folder).glob(pattern) if ".expected." not in path.name)
    assert found, f"no recorded cases in {folder}"
    return found


# --- parsers on recorded files ---------------------------------------------------------------


@pytest.mark.parametrize("path", cases("os-release", "*.txt"), ids=lambda p: p.stem)
def test_os_release(path: Path) -> None:
    assert as_data(parse_os_release(path.read_text(encoding="utf-8"))) == expected(path)


def test_os_release_without_name_or_id_is_none() -> None:
    assert parse_os_release("# nothing here\nVERSION_ID=3\n") is None
    assert parse_os_release("") is None


def test_os_release_tolerates_broken_quoting() -> None:
    parsed = parse_os_release('NAME="Odd Linux\nVERSION_ID=1\n')
    assert parsed is not None and parsed.name == "Odd Linux"


def test_debian_version_point_release() -> None:
    assert parse_debian_version("12.5\n") == "12.5"
    assert parse_debian_version("trixie/sid\n") is None


def test_dpkg_query() -> None:
    path = CASES / "dpkg" / "bookworm-lab.txt"
    assert as_data(parse_dpkg_query(path.read_text(encoding="utf-8"))) == expected(path)


def test_dpkg_query_three_column_format_counts_every_line() -> None:
    items = parse_dpkg_query("zsh\t5.9-4\tDebian Zsh Maintainers <x@y>\nvim\t2:9.0\t\n")
    assert [(item.name, item.version, item.publisher) for item in items] == [
        ("vim", "2:9.0", None),
        ("zsh", "5.9-4", "Debian Zsh Maintainers"),
    ]


def test_rpm() -> None:
    path = CASES / "rpm" / "rocky-9.txt"
    assert as_data(parse_rpm(path.read_text(encoding="utf-8"))) == expected(path)


def test_dmi_recorded_directory() -> None:
    assert as_data(parse_dmi(CASES / "dmi-optiplex")) == expected(CASES / "dmi-optiplex.json")


def test_dmi_unreadable_and_placeholder_files_are_none(tmp_path: Path) -> None:
    (tmp_path / "sys_vendor").write_text("LENOVO\n")
    (tmp_path / "product_name").write_text("To be filled by O.E.M.\n")
    # Root can read a chmod-000 file, so a directory stands in for an unreadable file:
    # reading it raises an OSError just like product_serial does for a normal user.
    (tmp_path / "product_serial").mkdir()
    hardware = parse_dmi(tmp_path)
    assert hardware is not None
    assert (hardware.vendor, hardware.model, hardware.serial) == ("LENOVO", None, None)


def test_dmi_missing_directory_is_none(tmp_path: Path) -> None:
    assert parse_dmi(tmp_path / "absent") is None


def test_cpuinfo_model_x86_and_arm() -> None:
    x86 = "processor\t: 0\nvendor_id\t: GenuineIntel\nmodel\t\t: 165\nmodel name\t: Intel(R) i5\n"
    arm = "processor\t: 0\nBogoMIPS\t: 108.00\n\nHardware\t: BCM2835\nModel\t\t: Raspberry Pi 4\n"
    assert parse_cpuinfo_model(x86) == "Intel(R) i5"
    assert parse_cpuinfo_model(arm) == "Raspberry Pi 4"
    assert parse_cpuinfo_model("processor : 0\nmodel : 1\n") is None


@pytest.mark.parametrize("path", cases("windows", "os-*.json"), ids=lambda p: p.stem)
def test_windows_os(path: Path) -> None:
    assert as_data(parse_windows_os(path.read_text(encoding="utf-8"))) == expected(path)


@pytest.mark.parametrize("path", cases("windows", "hardware-*.json"), ids=lambda p: p.stem)
def test_windows_hardware_and_cpu(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    model, max_mhz = parse_windows_cpu(text)
    result = {"hardware": as_data(parse_windows_system(text)), "cpu_model": model}
    result["cpu_max_mhz"] = max_mhz
    assert result == expected(path)


def test_windows_hardware_never_carries_owner_or_user_names() -> None:
    text = (CASES / "windows" / "hardware-win10.json").read_text(encoding="utf-8")
    assert "Nguyen Van A" in text  # the recording has them ...
    encoded = msgspec.json.encode(parse_windows_system(text)).decode()
    assert "Nguyen" not in encoded and "nguyenvana" not in encoded  # ... the result does not


@pytest.mark.parametrize("path", cases("windows", "uninstall-*.json"), ids=lambda p: p.stem)
def test_windows_uninstall(path: Path) -> None:
    assert as_data(parse_windows_uninstall(path.read_text(encoding="utf-8"))) == expected(path)


@pytest.mark.parametrize("text", ["", "   \r\n", "null", "[]", '[1, "x", null]'])
def test_windows_parsers_on_empty_output(text: str) -> None:
    assert parse_windows_uninstall(text) == []
    assert parse_windows_os(text) is None
    assert parse_windows_system(text) is None
    assert parse_windows_cpu(text) == (None, None)


def test_windows_parsers_raise_value_error_on_garbage() -> None:
    with pytest.raises(ValueError):
        parse_windows_uninstall("Get-ItemProperty : Access is denied")


def test_mac_normalisation() -> None:
    assert normalise_mac("3C-18-A0-B1-C2-D3") == "3c:18:a0:b1:c2:d3"
    assert normalise_mac("00:00:00:00:00:00") is None
    assert normalise_mac("") is None


# --- the probe ---------------------------------------------------------------------------------

Responder = Callable[[Sequence[str]], str]


def make_context(
    respond: Responder | None = None, *, collect_software: bool = True
) -> tuple[ProbeContext, list[list[str]]]:
    calls: list[list[str]] = []

    def run(argv: Sequence[str], *, timeout_s: float, check: bool = True) -> CommandResult:
        calls.append(list(argv))
        if respond is None:
            raise CommandError("not_found", f"{argv[0]} is not installed")
        return CommandResult(tuple(argv), 0, respond(argv), "")

    settings = AgentSettings(collect_software=collect_software)
    return ProbeContext(device_id=DEVICE, site=SITE, settings=settings, run=run), calls


def assert_valid_on_wire(message: InventoryMessage) -> InventoryMessage:
    decoded = decode_message(TOPIC, encode_message(message)).message
    assert isinstance(decoded, InventoryMessage)
    assert decoded == message
    return decoded


def test_live_inventory_passes_wire_validation_and_digest_is_stable() -> None:
    real = ProbeContext(device_id=DEVICE, site=SITE, settings=AgentSettings())
    first = InventoryProbe().collect(real)
    second = InventoryProbe().collect(real)
    assert_valid_on_wire(first)
    assert first.id != second.id
    assert first.digest == second.digest
    assert first.digest == inventory_digest(first)
    assert first.hostname and first.os and first.os.kernel
    assert first.memory_bytes and first.memory_bytes > 0
    assert first.cpu and first.cpu.threads and first.cpu.threads >= 1
    assert all(interface.name != "lo" for interface in first.interfaces)
    assert all(disk.fstype not in ("tmpfs", "overlay", "proc") for disk in first.disks)
    if shutil.which("dpkg-query"):
        assert first.software and any(item.name == "dpkg" for item in first.software)


def test_digest_changes_when_inventory_changes_but_not_with_envelope_or_boot_time() -> None:
    real = ProbeContext(device_id=DEVICE, site=SITE, settings=AgentSettings())
    message = InventoryProbe().collect(real)
    rebooted = msgspec.structs.replace(message, id="00000000-0000-7000-8000-000000000000")
    assert inventory_digest(rebooted) == message.digest
    changed = msgspec.structs.replace(message, memory_bytes=(message.memory_bytes or 0) + 1)
    assert inventory_digest(changed) != message.digest


def test_digest_is_the_same_as_before_msgspec_encoded_it() -> None:
    """Issue 18: the digest went from the stdlib json (sorted keys) to msgspec's sorted
    encoding; a changed digest would make every PC resend its inventory after the upgrade."""
    message = InventoryMessage(
        device_id="pc-1",
        site="school-a",
        digest="0" * 64,
        hostname="lab-01",
        os=OsInfo(name="Ubuntu", version="24.04"),
        cpu=CpuInfo(model="Intel(R) Core(TM) i5", cores=4, threads=8, max_mhz=3400.0),
        software=[
            SoftwareItem(name="ti\u1ebfng-vi\u1ec7t", version="1.0"),
            SoftwareItem(name='quote"back\\slash\ttab', version="2:1.2"),
        ],
    )
    assert inventory_digest(message) == (
        "ece72e608e197e5e270860a0561f66e7b23c28e575acdbf9166f3d38939e55d9"
    )


def test_linux_inventory_from_recorded_root(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    shutil.copy(CASES / "os-release" / "ubuntu-22.04.txt", tmp_path / "etc" / "os-release")
    (tmp_path / "proc").mkdir()
    (tmp_path / "proc" / "cpuinfo").write_text("model name\t: Intel(R) Core(TM) i3-8100\n")
    (tmp_path / "sys" / "class" / "dmi").mkdir(parents=True)
    shutil.copytree(CASES / "dmi-optiplex", tmp_path / "sys" / "class" / "dmi" / "id")
    dpkg_text = (CASES / "dpkg" / "bookworm-lab.txt").read_text(encoding="utf-8")
    context, calls = make_context(lambda argv: dpkg_text)

    message = InventoryProbe(root=tmp_path, platform="linux").collect(context)

    assert_valid_on_wire(message)
    assert message.errors == []
    assert message.os is not None and (message.os.name, message.os.build) == ("Ubuntu", "22.04.3")
    assert message.cpu is not None and message.cpu.model == "Intel(R) Core(TM) i3-8100"
    assert message.hardware is not None and message.hardware.serial == "7XK4MN3"
    assert as_data(message.software) == expected(CASES / "dpkg" / "bookworm-lab.txt")
    assert calls == [list(DPKG_QUERY)]


def test_linux_software_falls_back_to_rpm_then_reports_unsupported() -> None:
    rpm_text = (CASES / "rpm" / "rocky-9.txt").read_text(encoding="utf-8")

    def only_rpm(argv: Sequence[str]) -> str:
        if argv[0] != "rpm":
            raise CommandError("not_found", f"{argv[0]} is not installed")
        return rpm_text

    context, calls = make_context(only_rpm)
    message = InventoryProbe(platform="linux").collect(context)
    assert [call[0] for call in calls] == ["dpkg-query", "rpm"]
    assert message.software is not None and message.software[0].name == "bash"

    context, _ = make_context(None)
    message = InventoryProbe(platform="linux").collect(context)
    assert message.software is None
    assert [(e.probe, e.reason) for e in message.errors] == [("inventory.software", "unsupported")]
    assert_valid_on_wire(message)


def test_software_not_collected_when_disabled() -> None:
    context, calls = make_context(lambda argv: "", collect_software=False)
    message = InventoryProbe(platform="linux").collect(context)
    assert message.software is None and calls == []


def test_broken_parts_become_errors_not_exceptions(tmp_path: Path) -> None:
    # An empty root: no os-release, no cpuinfo, no DMI; dpkg-query times out.
    def hung(argv: Sequence[str]) -> str:
        raise CommandError("timeout", "dpkg-query did not finish in 60 s")

    context, _ = make_context(hung)
    message = InventoryProbe(root=tmp_path, platform="linux").collect(context)
    assert_valid_on_wire(message)
    reasons = {error.probe: error.reason for error in message.errors}
    assert reasons == {
        "inventory.os": "not_found",
        "inventory.cpu": "not_found",
        "inventory.software": "timeout",
    }
    assert message.os is None and message.cpu is None and message.hardware is None
    assert message.memory_bytes  # the parts that work are still there


def windows_responder(uninstall_file: str) -> Responder:
    outputs = {
        OS_SCRIPT: CASES / "windows" / "os-win11.json",
        HARDWARE_SCRIPT: CASES / "windows" / "hardware-win10.json",
        UNINSTALL_SCRIPT: CASES / "windows" / uninstall_file,
    }

    def respond(argv: Sequence[str]) -> str:
        assert argv[0] == "powershell.exe" and "-NonInteractive" in argv
        return outputs[argv[-1]].read_text(encoding="utf-8")

    return respond


def test_windows_inventory_from_recorded_powershell() -> None:
    context, calls = make_context(windows_responder("uninstall-win10.json"))
    message = InventoryProbe(platform="windows").collect(context)

    assert_valid_on_wire(message)
    assert message.errors == []
    assert message.os is not None and message.os.name == "Windows 11"
    assert message.hardware is not None and message.hardware.vendor == "HP"
    assert message.cpu is not None and message.cpu.max_mhz == 3101.0
    assert message.software is not None and len(message.software) == 5
    assert len(calls) == 3  # one PowerShell start per source, hardware and CPU share one


def test_windows_digest_follows_software_changes() -> None:
    def collect(uninstall_file: str) -> InventoryMessage:
        context, _ = make_context(windows_responder(uninstall_file))
        return InventoryProbe(platform="windows").collect(context)

    assert collect("uninstall-win10.json").digest == collect("uninstall-win10.json").digest
    assert collect("uninstall-win10.json").digest != collect("uninstall-single.json").digest


def test_windows_garbage_output_is_a_parse_error() -> None:
    context, _ = make_context(lambda argv: "Get-CimInstance : Access denied")
    message = InventoryProbe(platform="windows").collect(context)
    assert_valid_on_wire(message)
    reasons = {error.probe: error.reason for error in message.errors}
    assert reasons == {
        "inventory.hardware": "parse",
        "inventory.os": "parse",
        "inventory.software": "parse",
    }


def test_huge_software_list_is_truncated_to_fit_the_payload_limit() -> None:
    lines = "".join(f"ii \tpackage-{n:05d}\t1.0-{'x' * 200}\tTeam {n}\n" for n in range(4000))
    context, _ = make_context(lambda argv: lines)
    message = InventoryProbe(platform="linux").collect(context)
    assert_valid_on_wire(message)
    assert message.software is not None and 0 < len(message.software) < 4000
    assert any("truncated" in error.detail for error in message.errors)
