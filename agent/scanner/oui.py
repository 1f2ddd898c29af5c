"""MAC vendor lookup from IEEE OUI prefixes.

Two formats are read: the IEEE registry's ``oui.txt`` (Debian ``ieee-data`` installs it at
/usr/share/ieee-data/oui.txt) and the compact ``OUI<TAB>vendor<TAB>hint`` subset shipped
beside this module. The subset also carries a device-type hint for vendors that make one
kind of thing (Hikvision → camera), which the full registry cannot tell.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final, get_args

from campuswatch.wire.messages import DeviceType

log = logging.getLogger(__name__)

SHIPPED_TABLE: Final = Path(__file__).with_name("oui_schools.tsv")
SYSTEM_TABLES: Final = (Path("/usr/share/ieee-data/oui.txt"), Path("/usr/share/misc/oui.txt"))
_IEEE_LINE = re.compile(
    r"^\s*([0-9A-Fa-f]{2})-([0-9A-Fa-f]{2})-([0-9A-Fa-f]{2})\s+\(hex\)\s+(.*?)\s*$"
)
_COMPACT_PREFIX = re.compile(r"^[0-9A-Fa-f]{6}$")
_DEVICE_TYPES: Final = frozenset(get_args(DeviceType))


@dataclass(frozen=True, slots=True)
class Vendor:
    name: str
    hint: DeviceType | None = None


def normalise_mac(value: str) -> str | None:
    """``AA-BB-CC-DD-EE-FF``, ``aabb.ccdd.eeff`` or ``aabbccddeeff`` → ``aa:bb:cc:dd:ee:ff``."""
    digits = re.sub(r"[^0-9A-Fa-f]", "", value)
    if len(digits) != 12 or len(re.sub(r"[0-9A-Fa-f:.\-\s]", "", value)) != 0:
        return None
    digits = digits.lower()
    return ":".join(digits[i : i + 2] for i in range(0, 12, 2))


def is_locally_administered(mac: str) -> bool:
    """Randomised (phones' private Wi-Fi addresses) or virtual: the OUI means nothing."""
    return bool(int(mac[:2], 16) & 0x02)


def parse_ieee(lines: Iterable[str]) -> Iterator[tuple[str, Vendor]]:
    for line in lines:
        match = _IEEE_LINE.match(line)
        if match and match.group(4):
            yield "".join(match.group(1, 2, 3)).upper(), Vendor(match.group(4)[:256])


def parse_compact(lines: Iterable[str]) -> Iterator[tuple[str, Vendor]]:
    for line in lines:
        if not line.strip() or line.startswith("#"):
            continue
        cells = line.rstrip("\r\n").split("\t")
        if len(cells) < 2 or not _COMPACT_PREFIX.match(cells[0]) or not cells[1].strip():
            continue
        hint = cells[2].strip() if len(cells) > 2 else ""
        yield (
            cells[0].upper(),
            Vendor(cells[1].strip()[:256], hint if hint in _DEVICE_TYPES else None),  # type: ignore[arg-type]
        )


class OuiTable:
    def __init__(self, entries: dict[str, Vendor] | None = None) -> None:
        self.entries: dict[str, Vendor] = dict(entries or {})

    def __len__(self) -> int:
        return len(self.entries)

    def load(self, path: Path) -> int:
        """Add a file in either format; a missing or unreadable file adds nothing."""
        try:
            text = path.read_text(encoding="utf-8", errors="replace")
        except OSError as exc:
            log.warning("cannot read OUI table %s: %s", path, exc.strerror)
            return 0
        lines = text.splitlines()
        parser = parse_ieee if any("(hex)" in line for line in lines[:50]) else parse_compact
        added = 0
        for prefix, vendor in parser(lines):
            known = self.entries.get(prefix)
            # The registry names the company; keep the subset's short name and hint if we had it.
            if known is None or (known.hint is None and vendor.hint is not None):
                self.entries[prefix] = vendor
                added += 1
        return added

    def lookup(self, mac: str) -> Vendor | None:
        normalised = normalise_mac(mac)
        if normalised is None or is_locally_administered(normalised):
            return None
        return self.entries.get(normalised.replace(":", "")[:6].upper())


def default_table(extra: Path | None = None) -> OuiTable:
    """The shipped subset, then the system registry, then a user's file (later ones fill gaps)."""
    table = OuiTable()
    for path in (SHIPPED_TABLE, *SYSTEM_TABLES, *([extra] if extra else [])):
        if path == extra or path.exists():
            table.load(path)
    return table
