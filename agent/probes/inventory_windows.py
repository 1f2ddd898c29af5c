"""PowerShell scripts and parsers for the Windows inventory (CIM classes, uninstall keys).

Each script selects only the properties the inventory needs, so owner, registered user and
logged-on user names never leave PowerShell (the product's personal-data rule); the parsers
ignore those fields as well in case a script is changed.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from typing import Any, Final

from campuswatch.agent.probes.inventory_linux import (
    chassis_name,
    dedupe_sorted,
    meaningful,
    short_text,
)
from campuswatch.wire.messages import HardwareInfo, OsInfo, SoftwareItem

OS_SCRIPT: Final = (
    "$os = Get-CimInstance Win32_OperatingSystem; "
    "$cv = Get-ItemProperty 'HKLM:\\SOFTWARE\\Microsoft\\Windows NT\\CurrentVersion' "
    "-ErrorAction SilentlyContinue; "
    "[pscustomobject]@{Caption=$os.Caption; Version=$os.Version; BuildNumber=$os.BuildNumber; "
    "OSArchitecture=$os.OSArchitecture; DisplayVersion=$cv.DisplayVersion; UBR=$cv.UBR; "
    "EditionID=$cv.EditionID} | ConvertTo-Json -Compress"
)

HARDWARE_SCRIPT: Final = (
    "[pscustomobject]@{"
    "ComputerSystem=(Get-CimInstance Win32_ComputerSystem | "
    "Select-Object Manufacturer,Model,PCSystemType); "
    "BIOS=(Get-CimInstance Win32_BIOS | "
    "Select-Object Manufacturer,SMBIOSBIOSVersion,SerialNumber,ReleaseDate); "
    "Product=(Get-CimInstance Win32_ComputerSystemProduct | "
    "Select-Object Vendor,Name,IdentifyingNumber,UUID); "
    "Enclosure=(Get-CimInstance Win32_SystemEnclosure | Select-Object ChassisTypes); "
    "Processor=(Get-CimInstance Win32_Processor | Select-Object Name,MaxClockSpeed)"
    "} | ConvertTo-Json -Depth 4 -Compress"
)

UNINSTALL_SCRIPT: Final = (
    "Get-ItemProperty "
    "'HKLM:\\Software\\Microsoft\\Windows\\CurrentVersion\\Uninstall\\*', "
    "'HKLM:\\Software\\WOW6432Node\\Microsoft\\Windows\\CurrentVersion\\Uninstall\\*' "
    "-ErrorAction SilentlyContinue | "
    "Select-Object DisplayName,DisplayVersion,Publisher | ConvertTo-Json -Compress"
)

# PCSystemType when the enclosure reports nothing useful (Win32_ComputerSystem docs).
_PC_SYSTEM_TYPES: Final[dict[int, str]] = {
    1: "desktop",
    2: "laptop",
    3: "workstation",
    4: "enterprise server",
    5: "soho server",
    6: "appliance pc",
    7: "performance server",
    8: "slate",
}

_CAPTION = re.compile(r"^(?:Microsoft\s+)?(Windows(?:\s+Server)?\s+\S+)\s*(.*)$", re.IGNORECASE)
_JSON_DATE = re.compile(r"^/Date\((-?\d+)(?:[+-]\d{4})?\)/$")
_WMI_DATE = re.compile(r"^(\d{4})(\d{2})(\d{2})\d{6}")


def load_json_objects(json_text: str) -> list[dict[str, Any]]:
    """ConvertTo-Json prints one object bare and several as a list; empty output is no object.

    Raises ValueError on text that is not JSON so the caller reports a parse error.
    """
    text = json_text.strip().lstrip("\ufeff")
    if not text:
        return []
    data = json.loads(text)
    candidates = data if isinstance(data, list) else [data]
    return [item for item in candidates if isinstance(item, dict)]


def _first_object(value: object) -> dict[str, Any]:
    if isinstance(value, list):
        value = next((item for item in value if isinstance(item, dict)), None)
    return value if isinstance(value, dict) else {}


def _wmi_date(value: object) -> str | None:
    """ReleaseDate arrives as "/Date(ms)/" (PowerShell 5.1), an object with "value",
    an ISO string (PowerShell 7) or a DMTF string (Get-WmiObject); the wire wants ISO dates."""
    if isinstance(value, dict):
        value = value.get("value") or value.get("DateTime")
    text = short_text(value)
    if text is None:
        return None
    if match := _JSON_DATE.match(text):
        return datetime.fromtimestamp(int(match.group(1)) / 1000, UTC).date().isoformat()
    if match := _WMI_DATE.match(text):
        return "-".join(match.groups())
    if re.match(r"^\d{4}-\d{2}-\d{2}", text):
        return text[:10]
    return text


def parse_windows_os(json_text: str) -> OsInfo | None:
    """Win32_OperatingSystem (+ CurrentVersion registry values) → OsInfo."""
    objects = load_json_objects(json_text)
    if not objects:
        return None
    data = objects[0]
    caption = short_text(data.get("Caption"))
    if caption is None:
        return None
    name, edition = caption, None
    if match := _CAPTION.match(caption):
        name, edition = match.group(1), short_text(match.group(2))
    build = short_text(data.get("BuildNumber"))
    ubr = data.get("UBR")
    if build and isinstance(ubr, int) and not isinstance(ubr, bool):
        build = f"{build}.{ubr}"  # 19045.4291: the patch level vulnerability rules compare
    return OsInfo(
        name=name,
        version=short_text(data.get("DisplayVersion")) or short_text(data.get("Version")),
        build=build,
        kernel=short_text(data.get("Version")),
        edition=edition or short_text(data.get("EditionID")),
        arch=short_text(data.get("OSArchitecture")),
    )


def parse_windows_system(json_text: str) -> HardwareInfo | None:
    """The HARDWARE_SCRIPT object (ComputerSystem, BIOS, Product, Enclosure) → HardwareInfo."""
    objects = load_json_objects(json_text)
    if not objects:
        return None
    data = objects[0]
    system = _first_object(data.get("ComputerSystem"))
    bios = _first_object(data.get("BIOS"))
    product = _first_object(data.get("Product"))
    enclosure = _first_object(data.get("Enclosure"))
    chassis_types = enclosure.get("ChassisTypes")
    if not isinstance(chassis_types, list):
        chassis_types = [chassis_types]
    chassis = next(
        (
            name
            for name in map(chassis_name, chassis_types)
            if name not in (None, "other", "unknown")
        ),
        None,
    )
    if chassis is None and isinstance(system.get("PCSystemType"), int):
        chassis = _PC_SYSTEM_TYPES.get(system["PCSystemType"])
    uuid = meaningful(product.get("UUID"))
    hardware = HardwareInfo(
        vendor=meaningful(system.get("Manufacturer")) or meaningful(product.get("Vendor")),
        model=meaningful(system.get("Model")) or meaningful(product.get("Name")),
        serial=meaningful(bios.get("SerialNumber")) or meaningful(product.get("IdentifyingNumber")),
        uuid=uuid.lower() if uuid else None,
        bios_vendor=meaningful(bios.get("Manufacturer")),
        bios_version=meaningful(bios.get("SMBIOSBIOSVersion")),
        bios_date=_wmi_date(bios.get("ReleaseDate")),
        chassis=chassis,
    )
    return None if hardware == HardwareInfo() else hardware


def parse_windows_cpu(json_text: str) -> tuple[str | None, float | None]:
    """(model, max MHz) of the first Win32_Processor in the HARDWARE_SCRIPT output."""
    objects = load_json_objects(json_text)
    processor = _first_object(objects[0].get("Processor")) if objects else {}
    speed = processor.get("MaxClockSpeed")
    max_mhz = float(speed) if isinstance(speed, int | float) and speed > 0 else None
    return short_text(processor.get("Name")), max_mhz


def parse_windows_uninstall(json_text: str) -> list[SoftwareItem]:
    """Uninstall registry entries; those without DisplayName are updates and components."""
    items: list[SoftwareItem] = []
    for entry in load_json_objects(json_text):
        name = short_text(entry.get("DisplayName"))
        if name is None:
            continue
        items.append(
            SoftwareItem(
                name=name,
                version=short_text(entry.get("DisplayVersion")),
                publisher=short_text(entry.get("Publisher")),
            )
        )
    return dedupe_sorted(items)
