"""A stable device id from hardware facts, and noticing a cloned disk image.

The id is derived (not random) from the SMBIOS UUID, the OS machine id and the permanent
MAC addresses, so re-imaging a PC keeps its id and its history (no duplicate hosts after a
re-install). The facts are also kept in ``identity.json`` in the state dir; when an agent
starts on a machine whose facts no longer match that file — a lab PC cloned from a golden
image with the state dir copied — it takes a new id and says so in ``hello``
(``origin="reidentified"``, ``previous_device_id``), so the collector can link the two.
"""

from __future__ import annotations

import hashlib
import logging
import os
import sys
from pathlib import Path

import msgspec
import psutil

from campuswatch.wire.messages import IdentityInfo

log = logging.getLogger(__name__)
IDENTITY_FILE = "identity.json"
_VIRTUAL_NIC_PREFIXES = ("lo", "docker", "veth", "br-", "virbr", "vmnet", "tun", "tap", "wg")


class HardwareFacts(msgspec.Struct, frozen=True):
    product_uuid: str | None = None
    machine_id: str | None = None
    macs: tuple[str, ...] = msgspec.field(default_factory=tuple)

    def fingerprint(self) -> str:
        parts = [self.product_uuid, self.machine_id, sorted(self.macs)]
        texts = [self.product_uuid or "", self.machine_id or "", *self.macs]
        if all(text.isascii() and text.isprintable() for text in texts):
            # msgspec writes printable ASCII exactly as json.dumps did (the collector compares
            # fingerprints across versions), without loading the stdlib json on every PC.
            encoded = msgspec.json.encode(parts)
        else:
            import json  # json escaped DEL and non-ASCII bytes; msgspec writes them raw

            encoded = json.dumps(parts, separators=(",", ":")).encode()
        return hashlib.sha256(encoded).hexdigest()

    def is_same_machine(self, other: HardwareFacts) -> bool:
        """Tolerant match: a replaced network card must not look like a new PC."""
        if self.product_uuid and other.product_uuid:
            return self.product_uuid == other.product_uuid
        if self.macs and other.macs:
            return bool(set(self.macs) & set(other.macs))
        if self.is_empty() and other.is_empty():
            # Nothing to compare: the random id in the state dir is all there is; taking a
            # new one on every start would make a new device of every restart.
            return True
        return self.machine_id is not None and self.machine_id == other.machine_id

    def is_empty(self) -> bool:
        return not (self.product_uuid or self.machine_id or self.macs)


def _read_text(path: str) -> str | None:
    try:
        value = Path(path).read_text(encoding="ascii", errors="ignore").strip()
    except OSError:
        return None
    return value or None


# SMBIOS UUIDs that vendors ship unset; they identify nothing.
_PLACEHOLDER_UUIDS = {
    "00000000-0000-0000-0000-000000000000",
    "ffffffff-ffff-ffff-ffff-ffffffffffff",
    "03000200-0400-0500-0006-000700080009",
}


def _physical_macs() -> tuple[str, ...]:
    macs: set[str] = set()
    for name, addresses in psutil.net_if_addrs().items():
        if name.startswith(_VIRTUAL_NIC_PREFIXES):
            continue
        if sys.platform.startswith("linux") and not Path(f"/sys/class/net/{name}/device").exists():
            continue  # virtual interface (bridge, bond, veth): its MAC is not hardware
        for address in addresses:
            if address.family == psutil.AF_LINK and address.address:
                mac = address.address.lower().replace("-", ":")
                if mac != "00:00:00:00:00:00" and len(mac) == 17:
                    macs.add(mac)
    return tuple(sorted(macs))


def _windows_machine_guid() -> str | None:
    try:
        import winreg  # type: ignore[import-not-found,unused-ignore]

        with winreg.OpenKey(  # type: ignore[attr-defined,unused-ignore]
            winreg.HKEY_LOCAL_MACHINE,  # type: ignore[attr-defined,unused-ignore]
            r"SOFTWARE\Microsoft\Cryptography",
        ) as key:
            value, _ = winreg.QueryValueEx(key, "MachineGuid")  # type: ignore[attr-defined,unused-ignore]
            return str(value)
    except OSError:
        return None


def read_hardware_facts(root: Path = Path("/")) -> HardwareFacts:
    """This machine's facts; ``root`` lets tests stand in a recorded ``/sys`` and ``/etc``.

    Windows: the SMBIOS UUID is not read (it needs WMI, a PowerShell start), so the id rests
    on MachineGuid, which sysprep renews, and the MACs. Linux: the SMBIOS UUID is readable by
    root only (the packaged service runs as root); a user-run agent falls back like a VM
    without one, to the OS machine id and the MACs.
    """
    if os.name == "nt":
        return HardwareFacts(None, _windows_machine_guid(), _physical_macs())
    product_uuid = _read_text(str(root / "sys/class/dmi/id/product_uuid"))
    if product_uuid and product_uuid.lower() in _PLACEHOLDER_UUIDS:
        product_uuid = None
    machine_id = _read_text(str(root / "etc/machine-id")) or _read_text(
        str(root / "var/lib/dbus/machine-id")
    )
    return HardwareFacts(
        product_uuid.lower() if product_uuid else None, machine_id, _physical_macs()
    )


def derive_device_id(facts: HardwareFacts, prefix: str = "pc") -> str:
    basis = facts.product_uuid or facts.machine_id or ",".join(facts.macs)
    if not basis:
        # Nothing stable to derive from: fall back to a random id kept in the state dir.
        basis = os.urandom(16).hex()
    digest = hashlib.sha256(f"campuswatch:{basis}:{','.join(facts.macs)}".encode()).hexdigest()
    return f"{prefix}-{digest[:16]}"


class Identity(msgspec.Struct, frozen=True):
    device_id: str
    info: IdentityInfo


def resolve_identity(
    state_dir: Path,
    facts: HardwareFacts,
    *,
    configured_device_id: str | None = None,
) -> Identity:
    """Load, create or re-derive this machine's identity and persist it."""
    fingerprint = facts.fingerprint()
    path = state_dir / IDENTITY_FILE
    stored: dict[str, object] | None = None
    try:
        loaded = msgspec.json.decode(path.read_bytes())
        stored = loaded if isinstance(loaded, dict) else None
    except FileNotFoundError:
        stored = None
    except (OSError, ValueError) as exc:
        log.warning("identity file %s unreadable (%s); deriving a new one", path, exc)

    if configured_device_id:
        identity = Identity(
            configured_device_id, IdentityInfo(fingerprint=fingerprint, origin="configured")
        )
    elif stored is None or not isinstance(stored.get("device_id"), str):
        identity = Identity(
            derive_device_id(facts), IdentityInfo(fingerprint=fingerprint, origin="new")
        )
    else:
        previous_id = str(stored["device_id"])
        raw_facts = stored.get("facts") if isinstance(stored.get("facts"), dict) else {}
        assert isinstance(raw_facts, dict)
        previous_facts = HardwareFacts(
            raw_facts.get("product_uuid"),
            raw_facts.get("machine_id"),
            tuple(raw_facts.get("macs") or ()),
        )
        if previous_facts.is_same_machine(facts):
            identity = Identity(previous_id, IdentityInfo(fingerprint=fingerprint, origin="stable"))
        else:
            new_id = derive_device_id(facts)
            if new_id == previous_id:  # identical derivation basis: make the clone distinct
                new_id = derive_device_id(HardwareFacts(os.urandom(16).hex(), None, facts.macs))
            log.warning(
                "hardware differs from the identity in %s (cloned disk image?): "
                "device id %s replaces %s",
                path,
                new_id,
                previous_id,
            )
            identity = Identity(
                new_id,
                IdentityInfo(
                    fingerprint=fingerprint,
                    origin="reidentified",
                    previous_device_id=previous_id,
                    note="machine fingerprint changed since the state dir was written",
                ),
            )
    _save(state_dir, identity, facts)
    return identity


def reidentify(state_dir: Path, facts: HardwareFacts, previous_id: str, *, note: str) -> Identity:
    """Take a new id on purpose: the collector found ``previous_id`` in use by another machine.

    The new id is derived from random bits (the hardware facts gave the clash), kept in the
    state dir like any other, and announced in ``hello`` as ``reidentified``.
    """
    new_id = derive_device_id(HardwareFacts(os.urandom(16).hex(), None, facts.macs))
    identity = Identity(
        new_id,
        IdentityInfo(
            fingerprint=facts.fingerprint(),
            origin="reidentified",
            previous_device_id=previous_id,
            note=note[:200],
        ),
    )
    _save(state_dir, identity, facts)
    return identity


def _save(state_dir: Path, identity: Identity, facts: HardwareFacts) -> None:
    state_dir.mkdir(parents=True, exist_ok=True)
    path = state_dir / IDENTITY_FILE
    temporary = path.with_suffix(".tmp")
    encoded = msgspec.json.encode(
        {"device_id": identity.device_id, "facts": msgspec.structs.asdict(facts)}
    )
    temporary.write_bytes(msgspec.json.format(encoded, indent=2))
    os.replace(temporary, path)
