"""Parsers for the Linux inventory sources: os-release, DMI, /proc/cpuinfo, dpkg-query, rpm.

Pure functions over text or a directory so they are tested on recorded files; the probe in
``inventory.py`` decides what to read and turns failures into ``ProbeError``s.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Final

from campuswatch.wire.messages import HardwareInfo, OsInfo, SoftwareItem

SHORT_TEXT_MAX: Final = 256

# Vendors ship boards with these placeholders in DMI/SMBIOS; reporting them as a serial
# number would make hundreds of lab PCs look like one device in the asset register.
PLACEHOLDER_VALUES: Final = frozenset(
    {
        "",
        "0",
        "00000000",
        "0123456789",
        "1234567890",
        "default string",
        "not applicable",
        "not available",
        "not specified",
        "n/a",
        "na",
        "none",
        "o.e.m.",
        "oem",
        "system manufacturer",
        "system product name",
        "system serial number",
        "system version",
        "to be filled by o.e.m.",
        "type1productconfigid",
        "03000200-0400-0500-0006-000700080009",
        "00000000-0000-0000-0000-000000000000",
        "ffffffff-ffff-ffff-ffff-ffffffffffff",
    }
)

# SMBIOS "System Enclosure or Chassis Types" (DSP0134 7.4.1); Linux DMI and Windows
# Win32_SystemEnclosure.ChassisTypes both report these numbers.
CHASSIS_TYPES: Final[dict[int, str]] = {
    1: "other",
    2: "unknown",
    3: "desktop",
    4: "low-profile desktop",
    5: "pizza box",
    6: "mini tower",
    7: "tower",
    8: "portable",
    9: "laptop",
    10: "notebook",
    11: "hand held",
    12: "docking station",
    13: "all in one",
    14: "sub notebook",
    15: "space-saving",
    16: "lunch box",
    17: "main server chassis",
    23: "rack mount chassis",
    24: "sealed-case pc",
    30: "tablet",
    31: "convertible",
    32: "detachable",
    33: "iot gateway",
    34: "embedded pc",
    35: "mini pc",
    36: "stick pc",
}

_DMI_DATE = re.compile(r"^(\d{1,2})/(\d{1,2})/(\d{4})$")


def short_text(value: object) -> str | None:
    """Trim to the wire's ShortText bound; blank or placeholder-free text only."""
    if value is None:
        return None
    text = " ".join(str(value).split())
    return text[:SHORT_TEXT_MAX] if text else None


def meaningful(value: object) -> str | None:
    """Like ``short_text`` but also drops vendor placeholder strings."""
    text = short_text(value)
    if text is None or text.lower() in PLACEHOLDER_VALUES:
        return None
    return text


def chassis_name(type_number: object) -> str | None:
    try:
        number = int(str(type_number).strip())
    except ValueError:
        return None
    return CHASSIS_TYPES.get(number)


def parse_os_release(text: str) -> OsInfo | None:
    """Parse os-release(5). ``build`` is the point release when VERSION is finer than VERSION_ID
    (Ubuntu "22.04.3"); vulnerability rules need it more than the marketing name."""
    fields: dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, raw_value = line.split("=", 1)
        try:
            parts = shlex.split(raw_value)
            value = parts[0] if len(parts) == 1 else " ".join(parts)
        except ValueError:
            value = raw_value.strip().strip("\"'")
        fields[key.strip()] = value
    name = short_text(fields.get("NAME") or fields.get("ID"))
    if name is None:
        return None
    version_id = short_text(fields.get("VERSION_ID"))
    build = short_text(fields.get("BUILD_ID"))
    version_words = (fields.get("VERSION") or "").split()
    if build is None and version_id and version_words:
        first_word = version_words[0]
        if first_word != version_id and first_word.startswith(version_id):
            build = short_text(first_word)
    return OsInfo(
        name=name,
        version=version_id,
        build=build,
        edition=short_text(fields.get("VARIANT")),
    )


def parse_debian_version(text: str) -> str | None:
    """/etc/debian_version holds the point release ("12.5") that os-release leaves out."""
    value = text.strip()
    return short_text(value) if re.fullmatch(r"\d+(\.\d+)+", value) else None


def parse_cpuinfo_model(text: str) -> str | None:
    """CPU model: "model name" on x86, "Model"/"Hardware"/"cpu model" on ARM and MIPS boards."""
    found: dict[str, str] = {}
    for line in text.splitlines():
        key, separator, value = line.partition(":")
        if separator:
            found.setdefault(key.strip().lower(), value.strip())
    for key in ("model name", "cpu model", "model", "hardware", "processor"):
        value = found.get(key, "")
        # "model" on x86 is a number and "processor" an index: neither names the CPU.
        if value and not value.isdigit():
            return short_text(value)
    return None


def _read_dmi(directory: Path, name: str) -> str | None:
    try:
        return meaningful((directory / name).read_text(encoding="utf-8", errors="replace"))
    except OSError:
        # product_serial and product_uuid are root-only: an ordinary user simply lacks them.
        return None


def _iso_dmi_date(value: str | None) -> str | None:
    if value is None:
        return None
    match = _DMI_DATE.match(value)
    if not match:
        return value
    month, day, year = match.groups()
    return f"{year}-{int(month):02d}-{int(day):02d}"


def parse_dmi(directory: Path) -> HardwareInfo | None:
    """Read /sys/class/dmi/id; an unreadable or placeholder file is None, never an error."""
    hardware = HardwareInfo(
        vendor=_read_dmi(directory, "sys_vendor"),
        model=_read_dmi(directory, "product_name"),
        serial=_read_dmi(directory, "product_serial"),
        uuid=(_read_dmi(directory, "product_uuid") or "").lower() or None,
        bios_vendor=_read_dmi(directory, "bios_vendor"),
        bios_version=_read_dmi(directory, "bios_version"),
        bios_date=_iso_dmi_date(_read_dmi(directory, "bios_date")),
        chassis=chassis_name(_read_dmi(directory, "chassis_type")),
    )
    return None if hardware == HardwareInfo() else hardware


def _publisher_without_email(maintainer: str) -> str | None:
    # "Debian Python Team <team+python@tracker.debian.org>": the address adds nothing a
    # facilities manager needs and is personal data when the maintainer is one person.
    return short_text(re.sub(r"<[^>]*>", "", maintainer))


def dedupe_sorted(items: list[SoftwareItem]) -> list[SoftwareItem]:
    """One entry per (name, version, publisher), sorted so the digest is stable."""
    unique = {(item.name, item.version or "", item.publisher or ""): item for item in items}
    return [unique[key] for key in sorted(unique, key=lambda k: (k[0].lower(), k))]


def parse_dpkg_query(text: str) -> list[SoftwareItem]:
    """Lines of ``[status\\t]package\\tversion\\tmaintainer``; only installed packages count."""
    items: list[SoftwareItem] = []
    for line in text.splitlines():
        columns = line.split("\t")
        if len(columns) == 4:
            status, columns = columns[0], columns[1:]
            # Status-Abbrev is three letters (want, state, error); state "i" is installed,
            # "c" (removed, config files left) and others are not software on the PC.
            if len(status) < 2 or status[1] != "i":
                continue
        if len(columns) != 3:
            continue
        name = short_text(columns[0])
        if name is None:
            continue
        items.append(
            SoftwareItem(
                name=name,
                version=short_text(columns[1]),
                publisher=_publisher_without_email(columns[2]),
            )
        )
    return dedupe_sorted(items)


def parse_rpm(text: str) -> list[SoftwareItem]:
    """Lines of ``name\\tversion-release\\tvendor`` from ``rpm -qa --qf``."""
    items: list[SoftwareItem] = []
    for line in text.splitlines():
        columns = line.split("\t")
        if len(columns) != 3:
            continue
        name = short_text(columns[0])
        # gpg-pubkey "packages" are imported signing keys, not installed software.
        if name is None or name == "gpg-pubkey":
            continue
        vendor = columns[2].strip()
        items.append(
            SoftwareItem(
                name=name,
                version=short_text(columns[1]),
                publisher=None if vendor == "(none)" else _publisher_without_email(vendor),
            )
        )
    return dedupe_sorted(items)
