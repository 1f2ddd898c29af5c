"""The asset register: what messages teach it, what people correct in it, and what it counts.

All functions take a Session and flush but never commit: the caller (ingest batch, API
request, import) owns the transaction. Every field change writes an ``AssetHistory`` row.
Bookkeeping columns (``last_seen``, ``first_seen``, ``version``, timestamps) are not
audited: they change on every message and would drown the real history.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any, Final, Literal

from sqlalchemy import Select, bindparam, func, or_, select
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import set_committed_value

from campuswatch.collector.db.bulk import ValuesUpdate
from campuswatch.collector.db.models import (
    ASSET_KINDS,
    ASSET_STATUSES,
    Asset,
    AssetHistory,
    AssetMac,
    Device,
    Site,
)
from campuswatch.collector.register.device_state import message_body, record_latest, touch_devices
from campuswatch.wire.codec import DecodedMessage
from campuswatch.wire.messages import (
    DiscoveredHost,
    DiscoveryMessage,
    HelloMessage,
    InventoryMessage,
    Message,
    StateMessage,
    TelemetryMessage,
    kind_of,
)

# Which status a facilities manager may move an asset to; "retired" is final so that a
# disposed asset cannot quietly come back into the coverage figures.
STATUS_TRANSITIONS: Final[dict[str, frozenset[str]]] = {
    "in_service": frozenset({"in_repair", "lost", "retired"}),
    "in_repair": frozenset({"in_service", "lost", "retired"}),
    "lost": frozenset({"in_service", "in_repair", "retired"}),
    "retired": frozenset(),
}
EDITABLE_FIELDS: Final = (
    "asset_tag",
    "kind",
    "name",
    "vendor",
    "model",
    "serial",
    "macs",
    "device_id",
    "os_name",
    "os_version",
    "firmware_version",
    "site_id",
    "room",
    "owner",
    "status",
    "registered",
    "ignored",
    "purchase_date",
    "warranty_end",
    "security_level",
    "protection_plan_approved_on",
    "notes",
)
_TEXT_LIMITS: Final = {
    "asset_tag": 64,
    "name": 256,
    "vendor": 256,
    "model": 256,
    "serial": 256,
    "device_id": 64,
    "os_name": 256,
    "os_version": 256,
    "firmware_version": 256,
    "site_id": 64,
    "room": 128,
    "owner": 128,
    "notes": 10_000,
}
DATE_FIELDS: Final = ("purchase_date", "warranty_end", "protection_plan_approved_on")
# Placeholder serials that cheap boards ship with; matching on them would merge every
# machine of one model into a single asset.
_JUNK_SERIALS: Final = frozenset(
    {
        "",
        "0",
        "none",
        "null",
        "n/a",
        "na",
        "default string",
        "to be filled by o.e.m.",
        "to be filled by oem",
        "system serial number",
        "0123456789",
        "1234567890",
        "123456789",
        "chassis serial number",
        "not specified",
        "not applicable",
        "invalid",
        "unknown",
        "oem",
        "xxxxxxxxxx",
    }
)
_AGENT_DEVICE_TYPES: Final = frozenset({"pc", "server"})


class AssetError(Exception):
    """Base for register errors the API turns into 4xx answers."""


class AssetNotFound(AssetError):
    pass


class AssetConflict(AssetError):
    """The asset changed since the caller read it (optimistic lock)."""

    def __init__(self, asset_id: int, expected: int, actual: int) -> None:
        super().__init__(f"asset {asset_id} is at version {actual}, edit was based on {expected}")
        self.expected = expected
        self.actual = actual


class AssetValidationError(AssetError):
    """All problems of one edit at once, field → message."""

    def __init__(self, errors: Mapping[str, str]) -> None:
        super().__init__("; ".join(f"{key}: {text}" for key, text in errors.items()))
        self.errors = dict(errors)


@dataclass(frozen=True, slots=True)
class AssetChange:
    """What one message did to one asset; ``unknown_device`` is the rules engine's cue."""

    asset_id: int
    action: Literal["created", "updated", "seen"]
    changed_fields: tuple[str, ...]
    registered: bool
    source: str
    unknown_device: bool = False
    mac: str | None = None
    ip: str | None = None
    ignored: bool = False


# --- small helpers --------------------------------------------------------------------------


def normalize_mac(value: str) -> str | None:
    """``AA-BB-CC-DD-EE-FF`` / ``aabb.ccdd.eeff`` / ``aabbccddeeff`` → ``aa:bb:cc:dd:ee:ff``."""
    compact = re.sub(r"[\s.:-]", "", value.strip().lower())
    if not re.fullmatch(r"[0-9a-f]{12}", compact):
        return None
    return ":".join(compact[i : i + 2] for i in range(0, 12, 2))


def usable_serial(serial: str | None) -> str | None:
    if serial is None:
        return None
    cleaned = serial.strip()
    return None if cleaned.lower() in _JUNK_SERIALS else cleaned


def render_value(value: object) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, date | datetime):
        return value.isoformat()
    if isinstance(value, list):
        return ", ".join(str(item) for item in value)
    return str(value)


def _record(
    session: Session,
    asset: Asset,
    field_name: str,
    old: object,
    new: object,
    actor: str,
    source: str,
) -> None:
    if asset.id is None:
        # A brand-new asset needs its id before a history row can point at it.
        session.add(asset)
        session.flush()
    session.add(
        AssetHistory(
            asset_id=asset.id,
            field=field_name,
            old_value=render_value(old),
            new_value=render_value(new),
            actor=actor,
            source=source,
        )
    )


def ensure_site(session: Session, site_id: str, *, at: datetime | None = None) -> Site:
    """The site, created as an unplaced school if no one has registered it yet.

    A message is never rejected for naming an unknown site: the device is real and its data
    matters; the auto_created flag puts the site on a person's to-do list instead.
    """
    site = session.get(Site, site_id)
    if site is None:
        site = Site(id=site_id, level="school", name=site_id, parent_id=None, auto_created=True)
        if at is not None:
            site.created_at = at
        session.add(site)
        session.flush()
    return site


def site_subtree_ids(session: Session, site_id: str) -> list[str]:
    """``site_id`` and every site below it (recursive query, works on SQLite and PostgreSQL).

    ``UNION``, not ``UNION ALL``: a site already found is not found again, so a cycle in
    the tree (one written before cycles were refused, or by hand) ends the recursion
    instead of growing the result without bound. No depth column for the same reason: it
    would make every lap of a cycle a new row.
    """
    tree = select(Site.id).where(Site.id == site_id).cte("subtree", recursive=True)
    tree = tree.union(select(Site.id).where(Site.parent_id == tree.c.id))
    return list(session.scalars(select(tree.c.id)))


def site_ancestor_ids(session: Session, site_id: str) -> list[str]:
    """``site_id``'s parent, its parent's parent … up to the root (nearest first).

    Stops at a site it has already passed, so a cycle in the database cannot loop it.
    """
    ancestors: list[str] = []
    seen = {site_id}
    current = session.scalar(select(Site.parent_id).where(Site.id == site_id))
    while current is not None and current not in seen:
        ancestors.append(current)
        seen.add(current)
        current = session.scalar(select(Site.parent_id).where(Site.id == current))
    return ancestors


class SiteCycleError(ValueError):
    """A parent that would make a site its own ancestor."""


def check_site_parent(session: Session, site_id: str, parent_id: str | None) -> None:
    """Refuse ``parent_id`` for ``site_id`` when it is the site itself or one below it."""
    if parent_id is None:
        return
    if parent_id == site_id or site_id in site_ancestor_ids(session, parent_id):
        raise SiteCycleError(
            f"parent {parent_id!r} is {site_id!r} itself or below it: "
            "the site tree would have a cycle"
        )


def find_site_cycles(session: Session) -> list[list[str]]:
    """Every cycle of the site tree as stored: each a list of site ids, child before parent,
    starting at its smallest id. Empty for a sound tree.

    Reads the ``(id, parent_id)`` pairs once and walks them in memory: every site has at most
    one parent, so each walk either reaches a root, a site already walked, or closes a loop.
    """
    parents: dict[str, str | None] = {
        site_id: parent_id
        for site_id, parent_id in session.execute(select(Site.id, Site.parent_id))
    }
    done: set[str] = set()
    cycles: list[list[str]] = []
    for start in sorted(parents):
        path: list[str] = []
        on_path: set[str] = set()
        current: str | None = start
        while current is not None and current in parents and current not in done:
            if current in on_path:
                loop = path[path.index(current) :]
                first = loop.index(min(loop))
                cycles.append(loop[first:] + loop[:first])
                break
            path.append(current)
            on_path.add(current)
            current = parents[current]
        done.update(path)
    return cycles


def describe_site_cycle(cycle: Sequence[str]) -> str:
    """``a → b → a``: child to parent, back to where it started."""
    return " → ".join([*cycle, cycle[0]])


def _set_field(
    session: Session,
    asset: Asset,
    field_name: str,
    value: object,
    *,
    actor: str,
    source: str,
    changed: list[str],
) -> None:
    """Automatic update of one field: unknown (None) never erases, manual fields never move."""
    if value is None or field_name in asset.manual_fields:
        return
    old = getattr(asset, field_name)
    if old == value:
        return
    setattr(asset, field_name, value)
    _record(session, asset, field_name, old, value, actor, source)
    changed.append(field_name)


def _attach_mac(
    session: Session, asset: Asset, mac: str, *, actor: str, source: str, changed: list[str]
) -> None:
    """Give ``mac`` to ``asset`` unless a real asset owns it.

    A MAC held by a discovery-only record (never accepted, no agent) is the same machine
    seen earlier from the network: the MAC moves over and an emptied duplicate is deleted,
    so discovery does not leave a ghost twin of every PC.
    """
    entry = session.get(AssetMac, mac)
    if entry is not None and entry.asset_id == asset.id:
        return
    if entry is not None:
        owner = entry.asset
        if owner.registered or owner.device_id is not None or owner.source != "discovery":
            return
        before = owner.mac_list
        owner.macs.remove(entry)
        session.flush()
        _record(session, owner, "macs", before, owner.mac_list, actor, source)
        if not owner.macs:
            _record(session, asset, "merged_asset", None, owner.id, actor, source)
            if asset.first_seen is None or (
                owner.first_seen is not None and owner.first_seen < asset.first_seen
            ):
                asset.first_seen = owner.first_seen
            session.delete(owner)
            session.flush()
    before = asset.mac_list
    asset.macs.append(AssetMac(mac=mac))
    session.flush()
    _record(session, asset, "macs", before, asset.mac_list, actor, source)
    if "macs" not in changed:
        changed.append("macs")


def find_asset(
    session: Session,
    *,
    device_id: str | None = None,
    serial: str | None = None,
    vendor: str | None = None,
    macs: Iterable[str] = (),
) -> Asset | None:
    """Identity resolution: device id, else serial (with vendor when both know it), else MAC."""
    if device_id is not None:
        asset = session.scalar(select(Asset).where(Asset.device_id == device_id))
        if asset is not None:
            return asset
    serial = usable_serial(serial)
    if serial is not None:
        candidates = list(session.scalars(select(Asset).where(Asset.serial == serial)))
        # Serials are only unique within a vendor; when both sides know the vendor, it must
        # agree (case-insensitively: "DELL" vs "Dell Inc." is common, so compare prefixes).
        for candidate in candidates:
            if vendor is None or candidate.vendor is None or _same_vendor(vendor, candidate.vendor):
                return candidate
    for mac in macs:
        entry = session.get(AssetMac, mac)
        if entry is not None:
            return entry.asset
    return None


def _same_vendor(left: str, right: str) -> bool:
    first = left.strip().lower().split()[:1]
    second = right.strip().lower().split()[:1]
    return first == second


# --- messages --------------------------------------------------------------------------------


def _update_device(session: Session, decoded: DecodedMessage) -> tuple[Device, bool]:
    """Refresh the device row; the bool says whether this is the newest message of its kind.

    A store-and-forward backlog or a retained message can arrive after a newer one; an older
    message still proves the device alive but must not overwrite newer state.
    """
    message = decoded.message
    device = session.get(Device, message.device_id)
    if device is None:
        device = Device(device_id=message.device_id, site_id=message.site)
        session.add(device)
    if device.last_seen is None or decoded.received_at > device.last_seen:
        device.last_seen = decoded.received_at
    device.site_id = message.site
    session.flush()  # device_latest refers to the row
    if not record_latest(session, [decoded]):
        return device, False
    device.clock_skew_s = decoded.clock_skew_s
    if isinstance(message, StateMessage):
        online = message.status == "online"
        if device.online != online:
            device.online = online
            device.status_changed_at = decoded.received_at  # a will's ts is its connect time
    elif isinstance(message, HelloMessage):
        device.hello = message_body(message)
        device.software_version = message.software_version
        device.device_type = message.device_type
        if message.identity is not None:
            device.fingerprint = message.identity.fingerprint
    elif isinstance(message, InventoryMessage | TelemetryMessage):
        device.device_type = message.device_type
    return device, True


@dataclass(slots=True)
class _Facts:
    """What one message says about its sender's asset."""

    kind: str | None = None
    name: str | None = None
    vendor: str | None = None
    model: str | None = None
    serial: str | None = None
    os_name: str | None = None
    os_version: str | None = None
    firmware_version: str | None = None
    macs: list[str] = field(default_factory=list)


def _facts(message: Message, device: Device) -> _Facts:
    facts = _Facts(kind=device.device_type)
    if isinstance(message, HelloMessage):
        facts.kind = message.device_type
        facts.vendor, facts.model = message.vendor, message.model
        facts.serial = usable_serial(message.serial)
        facts.firmware_version = message.firmware_version
        facts.macs = [message.mac] if message.mac else []
    elif isinstance(message, InventoryMessage):
        facts.kind = message.device_type
        facts.name = message.hostname
        if message.os is not None:
            facts.os_name, facts.os_version = message.os.name, message.os.version
        if message.hardware is not None:
            facts.vendor, facts.model = message.hardware.vendor, message.hardware.model
            facts.serial = usable_serial(message.hardware.serial)
        facts.firmware_version = message.firmware_version
        facts.macs = sorted({iface.mac for iface in message.interfaces if iface.mac})
    if facts.kind is not None and facts.kind not in ASSET_KINDS:
        facts.kind = "other"
    return facts


def _sender_source(device: Device) -> str:
    return "agent" if device.device_type in _AGENT_DEVICE_TYPES else "device"


def _apply_sender(
    session: Session, decoded: DecodedMessage, device: Device, newest: bool
) -> AssetChange | None:
    message = decoded.message
    actor = f"message:{message.id}"
    facts = _facts(message, device)
    source = _sender_source(device)
    asset = session.get(Asset, device.asset_id) if device.asset_id is not None else None
    if asset is None or asset.status == "retired":
        asset = find_asset(
            session,
            device_id=message.device_id,
            serial=facts.serial,
            vendor=facts.vendor,
            macs=facts.macs,
        )
    changed: list[str] = []
    created = asset is None
    if asset is None:
        asset = Asset(
            kind=facts.kind or "other",
            source=source,
            site_id=message.site,
            device_id=message.device_id,
            registered=False,
            manual_fields=[],
            first_seen=decoded.received_at,
        )
        session.add(asset)
        session.flush()
        changed.append("created")
    elif asset.device_id != message.device_id:
        # Same hardware under a new device id (re-imaged, or first agent on a discovered
        # host): the record follows the machine, not the id.
        old_device_id = asset.device_id
        asset.device_id = message.device_id
        _record(session, asset, "device_id", old_device_id, message.device_id, actor, source)
        changed.append("device_id")
    if asset.last_seen is None or decoded.received_at > asset.last_seen:
        asset.last_seen = decoded.received_at
    device.asset_id = asset.id
    if newest:
        for field_name in (
            "name",
            "vendor",
            "model",
            "serial",
            "os_name",
            "os_version",
            "firmware_version",
        ):
            value = getattr(facts, field_name)
            _set_field(
                session, asset, field_name, value, actor=actor, source=source, changed=changed
            )
        if facts.kind is not None and facts.kind != "other":
            _set_field(
                session, asset, "kind", facts.kind, actor=actor, source=source, changed=changed
            )
        if "site_id" not in asset.manual_fields:
            _set_field(
                session, asset, "site_id", message.site, actor=actor, source=source, changed=changed
            )
        if "macs" not in asset.manual_fields:
            for mac in facts.macs:
                _attach_mac(session, asset, mac, actor=actor, source=source, changed=changed)
    if not changed:
        return None
    return AssetChange(
        asset_id=asset.id,
        action="created" if created else "updated",
        changed_fields=tuple(name for name in changed if name != "created"),
        registered=asset.registered,
        source=asset.source,
        mac=facts.macs[0] if facts.macs else None,
    )


def _is_unknown_host(asset: Asset) -> bool:
    """Seen only by network sweeps, and no person has registered or ignored it."""
    return (
        asset.source == "discovery"
        and asset.device_id is None
        and not asset.registered
        and not asset.ignored
    )


_SWEEP_LOOKUP_CHUNK: Final = 500
"""MACs looked up per statement: well inside SQLite's bound-parameter limit."""


def _assets_by_mac(session: Session, macs: Sequence[str]) -> dict[str, Asset]:
    """The asset holding each of ``macs`` that one does, a statement per 500 MACs."""
    found: dict[str, Asset] = {}
    for start in range(0, len(macs), _SWEEP_LOOKUP_CHUNK):
        chunk = macs[start : start + _SWEEP_LOOKUP_CHUNK]
        query = select(AssetMac.mac, Asset).join(AssetMac.asset).where(AssetMac.mac.in_(chunk))
        found.update((mac, asset) for mac, asset in session.execute(query))
    return found


def _apply_sweep(
    session: Session, decoded: DecodedMessage, message: DiscoveryMessage
) -> list[AssetChange]:
    """Every host a network sweep saw: known ones are sighted, unknown ones created.

    A district's scanners report about as many hosts every few minutes as it has devices,
    so the hosts are read, created and sighted together (a statement per 500 hosts), not
    with a lookup and a flush each.
    """
    hosts: dict[str, DiscoveredHost] = {}
    for host in message.hosts:
        mac = normalize_mac(host.mac) if host.mac else None
        # A host without a MAC (routed, or ARP not answered) cannot be identified.
        if mac is not None and mac not in hosts:
            hosts[mac] = host
    known = _assets_by_mac(session, list(hosts))
    actor = f"message:{message.id}"
    sightings: dict[int, Asset] = {}
    created: dict[str, Asset] = {}
    changes: dict[str, AssetChange] = {}
    for mac, host in hosts.items():
        asset = known.get(mac)
        if asset is None:
            created[mac] = _discovered_asset(session, decoded, host, mac)
            continue
        if asset.last_seen is None or decoded.received_at > asset.last_seen:
            sightings[asset.id] = asset
        changes[mac] = _sighting(session, asset, host, mac, actor)
    if created:
        session.flush()  # the new assets' ids, in one flush
    for mac, asset in created.items():
        host = hosts[mac]
        _record(session, asset, "created", None, f"{mac} at {host.ip}", actor, "discovery")
        changes[mac] = AssetChange(
            asset_id=asset.id,
            action="created",
            changed_fields=("kind", "name", "vendor", "macs"),
            registered=False,
            source="discovery",
            unknown_device=True,
            mac=mac,
            ip=host.ip,
        )
    if sightings:
        # A sighting is not an edit: one UPDATE for the sweep that leaves ``version`` alone,
        # so a person editing a host the sweep saw is not refused as a conflict.
        _TOUCH_ASSET.execute(
            session.connection(),
            [{"asset_id": key, "seen": decoded.received_at} for key in sorted(sightings)],
        )
        for asset in sightings.values():
            set_committed_value(asset, "last_seen", decoded.received_at)
    return [changes[mac] for mac in hosts]


def _sighting(
    session: Session, asset: Asset, host: DiscoveredHost, mac: str, actor: str
) -> AssetChange:
    """A known host seen again: its blanks filled, and the register's verdict on it."""
    changed: list[str] = []
    # Network scans know little and guess some of it (OUI vendor, hostname): they only
    # fill blanks and never overwrite what an agent or a person said.
    if asset.vendor is None:
        _set_field(
            session, asset, "vendor", host.vendor, actor=actor, source="discovery", changed=changed
        )
    if asset.name is None:
        _set_field(
            session, asset, "name", host.hostname, actor=actor, source="discovery", changed=changed
        )
    # Every sighting carries the register's verdict, so an "unknown device" alert
    # resolves at the next sweep after a person registers or ignores the host.
    return AssetChange(
        asset_id=asset.id,
        action="updated" if changed else "seen",
        changed_fields=tuple(changed),
        registered=asset.registered,
        source=asset.source,
        unknown_device=_is_unknown_host(asset),
        ignored=asset.ignored,
        mac=mac,
        ip=host.ip,
    )


def _discovered_asset(
    session: Session, decoded: DecodedMessage, host: DiscoveredHost, mac: str
) -> Asset:
    """A host no asset holds: a new unregistered asset, flushed by the caller."""
    kind = host.guessed_type if host.guessed_type in ASSET_KINDS else "other"
    asset = Asset(
        kind=kind or "other",
        name=host.hostname,
        vendor=host.vendor,
        source="discovery",
        site_id=decoded.message.site,
        registered=False,
        manual_fields=[],
        first_seen=decoded.received_at,
        last_seen=decoded.received_at,
    )
    asset.macs.append(AssetMac(mac=mac))
    session.add(asset)
    return asset


def apply_message(session: Session, decoded: DecodedMessage) -> list[AssetChange]:
    """Teach the register what one validated message says.

    Updates the sender's device row and asset (created on first contact, unregistered until
    a person accepts it) and, for discovery sweeps, every host seen. Hosts matching no asset
    come back as ``unknown_device`` changes so the rules engine can alert.
    """
    message = decoded.message
    ensure_site(session, message.site, at=decoded.received_at)
    device, newest = _update_device(session, decoded)
    session.flush()
    changes: list[AssetChange] = []
    sender_change = _apply_sender(session, decoded, device, newest)
    if sender_change is not None:
        changes.append(sender_change)
    if isinstance(message, DiscoveryMessage):
        changes.extend(_apply_sweep(session, decoded, message))
    session.flush()
    return changes


# --- manual edits ---------------------------------------------------------------------------


_DAY_FIRST: Final = re.compile(r"(\d{1,2})[/.-](\d{1,2})[/.-](\d{4})")


def _parse_date(value: object) -> date | None:
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    if isinstance(value, str):
        text = value.strip()
        # Day first, as Vietnamese (and British) people write it: 05/01/2024 is 5 January.
        day_first = _DAY_FIRST.fullmatch(text)
        if day_first is not None:
            day, month, year = (int(part) for part in day_first.groups())
            return date(year, month, day)
        return date.fromisoformat(text)
    raise ValueError("not a date")


def validate_changes(
    session: Session, asset: Asset | None, changes: Mapping[str, object]
) -> tuple[dict[str, object], dict[str, str]]:
    """Clean values and a field → error map; ``asset`` None means a new asset.

    Shared by the edit API and the spreadsheet import so both accept exactly the same input.
    """
    clean: dict[str, object] = {}
    errors: dict[str, str] = {}
    for key, raw in changes.items():
        if key not in EDITABLE_FIELDS:
            errors[key] = "not an editable field"
            continue
        try:
            clean[key] = _clean_value(session, asset, key, raw)
        except ValueError as exc:
            errors[key] = str(exc)
    return clean, errors


def _clean_value(session: Session, asset: Asset | None, key: str, raw: object) -> object:
    if isinstance(raw, str):
        raw = raw.strip()
        if raw == "":
            raw = None
    if key in DATE_FIELDS:
        try:
            return _parse_date(raw)
        except ValueError:
            raise ValueError(f"{raw!r} is not a date (use DD/MM/YYYY or YYYY-MM-DD)") from None
    if key == "security_level":
        if raw is None:
            return None
        try:
            level = int(str(raw))
        except ValueError:
            raise ValueError(f"{raw!r} is not a whole number") from None
        if not 1 <= level <= 5:
            raise ValueError(f"security level {level} outside 1-5 (Decree 85/2016)")
        return level
    if key in ("registered", "ignored"):
        if isinstance(raw, bool):
            return raw
        text = str(raw).lower() if raw is not None else ""
        if text in {"true", "yes", "1", "x", "có", "co"}:
            return True
        if text in {"false", "no", "0", "", "không", "khong"}:
            return False
        raise ValueError(f"{raw!r} is not yes/no")
    if key == "status":
        if raw not in ASSET_STATUSES:
            raise ValueError(f"unknown status {raw!r}; use one of {', '.join(ASSET_STATUSES)}")
        if (
            asset is not None
            and raw != asset.status
            and raw not in STATUS_TRANSITIONS[asset.status]
        ):
            raise ValueError(f"cannot change status from {asset.status} to {raw}")
        return raw
    if key == "kind":
        if raw not in ASSET_KINDS:
            raise ValueError(f"unknown kind {raw!r}")
        return raw
    if key == "macs":
        return _clean_macs(session, asset, raw)
    if raw is not None and not isinstance(raw, str):
        raw = str(raw)
    if raw is not None and len(raw) > _TEXT_LIMITS[key]:
        raise ValueError(f"longer than {_TEXT_LIMITS[key]} characters")
    if raw is not None and "\x00" in raw:
        raise ValueError("contains a NUL character")  # PostgreSQL cannot store one
    if key == "site_id" and raw is not None and session.get(Site, raw) is None:
        raise ValueError(f"unknown site {raw!r}")
    if key in {"asset_tag", "device_id"} and raw is not None:
        column = Asset.asset_tag if key == "asset_tag" else Asset.device_id
        holder = session.scalar(select(Asset.id).where(column == raw))
        if holder is not None and (asset is None or holder != asset.id):
            raise ValueError(f"{raw!r} already belongs to asset {holder}")
    return raw


def _clean_macs(session: Session, asset: Asset | None, raw: object) -> list[str]:
    if raw is None:
        return []
    items = re.split(r"[\s,;]+", raw) if isinstance(raw, str) else list(raw)  # type: ignore[call-overload]
    macs: list[str] = []
    for item in items:
        if item == "":
            continue
        mac = normalize_mac(str(item))
        if mac is None:
            raise ValueError(f"{item!r} is not a MAC address")
        entry = session.get(AssetMac, mac)
        if entry is not None and (asset is None or entry.asset_id != asset.id):
            raise ValueError(f"MAC {mac} already belongs to asset {entry.asset_id}")
        if mac not in macs:
            macs.append(mac)
    return sorted(macs)


def apply_manual_changes(
    session: Session,
    asset: Asset,
    clean: Mapping[str, object],
    *,
    actor: str,
    source: str,
    mark_manual: Iterable[str] | None = None,
) -> list[str]:
    """Write validated values, audit each change, pin the fields against automatic updates.

    ``mark_manual`` limits which changed fields are pinned (default: all of them).
    """
    changed: list[str] = []
    for key, value in clean.items():
        if key == "macs":
            assert isinstance(value, list)
            old_macs = asset.mac_list
            if old_macs == value:
                continue
            asset.macs = [entry for entry in asset.macs if entry.mac in value]
            session.flush()
            for mac in value:
                if mac not in asset.mac_list:
                    asset.macs.append(AssetMac(mac=mac))
            _record(session, asset, "macs", old_macs, value, actor, source)
            changed.append(key)
            continue
        old = getattr(asset, key)
        if old == value:
            continue
        setattr(asset, key, value)
        _record(session, asset, key, old, value, actor, source)
        changed.append(key)
    pin = set(changed if mark_manual is None else mark_manual) & set(changed)
    # Lifecycle and notes are only ever set by people; pinning them would be noise.
    pin -= {"status", "registered", "notes"}
    if pin - set(asset.manual_fields):
        asset.manual_fields = sorted(set(asset.manual_fields) | pin)
    session.flush()
    return changed


def edit_asset(
    session: Session,
    asset_id: int,
    changes: Mapping[str, object],
    actor: str,
    expected_version: int | None,
) -> Asset:
    """A facilities manager's edit: validated, audited, pinned, optimistic-locked."""
    asset = session.get(Asset, asset_id)
    if asset is None:
        raise AssetNotFound(f"no asset {asset_id}")
    if expected_version is not None and expected_version != asset.version:
        raise AssetConflict(asset_id, expected_version, asset.version)
    clean, errors = validate_changes(session, asset, changes)
    if errors:
        raise AssetValidationError(errors)
    apply_manual_changes(session, asset, clean, actor=actor, source="manual")
    return asset


def create_asset(session: Session, values: Mapping[str, object], actor: str) -> Asset:
    """A manually entered asset (e.g. an information system); registered unless told not."""
    clean, errors = validate_changes(session, None, values)
    if errors:
        raise AssetValidationError(errors)
    asset = Asset(
        kind=str(clean.get("kind") or "other"),
        source="manual",
        registered=True,
        manual_fields=[],
    )
    session.add(asset)
    session.flush()
    _record(session, asset, "created", None, asset.kind, actor, "manual")
    apply_manual_changes(session, asset, clean, actor=actor, source="manual")
    return asset


# --- queries --------------------------------------------------------------------------------


def _filtered(
    query: Select[Any],
    session: Session,
    *,
    site_id: str | None,
    kind: str | None,
    status: str | None,
    registered: bool | None,
    source: str | None,
    search: str | None,
    review: str | None = None,
) -> Select[Any]:
    if site_id is not None:
        query = query.where(Asset.site_id.in_(site_subtree_ids(session, site_id)))
    if kind is not None:
        query = query.where(Asset.kind == kind)
    if status is not None:
        query = query.where(Asset.status == status)
    if registered is not None:
        query = query.where(Asset.registered == registered)
    if source is not None:
        query = query.where(Asset.source == source)
    if review is not None:
        query = query.where(review_condition(review))
    if search:
        pattern = f"%{search.strip()}%"
        mac = normalize_mac(search)
        mac_match = select(AssetMac.asset_id).where(
            AssetMac.mac == mac if mac else AssetMac.mac.ilike(pattern)
        )
        query = query.where(
            or_(
                Asset.name.ilike(pattern),
                Asset.asset_tag.ilike(pattern),
                Asset.serial.ilike(pattern),
                Asset.vendor.ilike(pattern),
                Asset.model.ilike(pattern),
                Asset.device_id.ilike(pattern),
                Asset.room.ilike(pattern),
                Asset.id.in_(mac_match),
            )
        )
    return query


def list_assets(
    session: Session,
    *,
    site_id: str | None = None,
    kind: str | None = None,
    status: str | None = None,
    registered: bool | None = None,
    source: str | None = None,
    search: str | None = None,
    review: str | None = None,
    page: int = 1,
    page_size: int = 50,
) -> tuple[list[Asset], int]:
    """One page of assets (ordered by id) and the total matching count."""
    page = max(page, 1)
    page_size = min(max(page_size, 1), 1000)

    def narrowed(query: Select[Any]) -> Select[Any]:
        return _filtered(
            query,
            session,
            site_id=site_id,
            kind=kind,
            status=status,
            registered=registered,
            source=source,
            search=search,
            review=review,
        )

    total = int(session.scalar(narrowed(select(func.count(Asset.id)))) or 0)
    rows_query = narrowed(select(Asset)).order_by(Asset.id)
    rows = list(session.scalars(rows_query.offset((page - 1) * page_size).limit(page_size)))
    return rows, total


# Where an asset stands with the facilities manager: the register page's filter and badge.
REVIEW_STATES: Final = ("registered", "to_confirm", "unknown", "ignored")
"""``registered``: accepted. ``to_confirm``: reports as a device or agent, nobody accepted it
yet. ``unknown``: only network sweeps see it (no agent, no device id) and nobody accepted or
ignored it: the rogue hotspot. ``ignored``: looked at and let be (a visitor's phone)."""


def review_state(asset: Asset) -> str:
    if asset.registered:
        return "registered"
    if asset.ignored:
        return "ignored"
    return "unknown" if _is_unknown_host(asset) else "to_confirm"


def review_condition(review: str) -> Any:
    """The SQL condition of one of ``REVIEW_STATES``; ``discovered`` = not yet decided
    (to confirm or unknown) and still in use."""
    # A retired asset has left the school: nothing about it is left to decide.
    undecided = Asset.registered.is_(False) & Asset.ignored.is_(False) & (Asset.status != "retired")
    sweep_only = (Asset.source == "discovery") & Asset.device_id.is_(None)
    conditions: dict[str, Any] = {
        "registered": Asset.registered.is_(True),
        "ignored": Asset.registered.is_(False) & Asset.ignored.is_(True),
        "discovered": undecided,
        "to_confirm": undecided & ~sweep_only,
        "unknown": undecided & sweep_only,
    }
    if review not in conditions:
        raise ValueError(f"unknown review state {review!r}")
    return conditions[review]


def display_name(asset: Asset) -> str:
    """The one name every page shows for an asset and for its device.

    What people call it (the name, which agents fill from the hostname and a person may
    correct) before what machines call it: the tag, the device id, the model, a MAC.
    """
    for candidate in (asset.name, asset.asset_tag, asset.device_id, asset.model):
        if candidate:
            return candidate
    macs = asset.mac_list
    return macs[0] if macs else f"#{asset.id}"


def device_names(session: Session, device_ids: Iterable[str | None]) -> dict[str, str]:
    """device id → the display name of its asset, for the devices a page lists; a device
    without an asset (or whose asset has no better name) keeps its id."""
    wanted = sorted({device_id for device_id in device_ids if device_id})
    if not wanted:
        return {}
    names = {device_id: device_id for device_id in wanted}
    for asset in session.scalars(select(Asset).where(Asset.device_id.in_(wanted))):
        if asset.device_id is not None:
            names[asset.device_id] = display_name(asset)
    return names


@dataclass(frozen=True, slots=True)
class Confirmation:
    """One asset of a bulk confirmation and what the facilities manager typed for it;
    None leaves a field as it is."""

    asset_id: int
    room: str | None = None
    asset_tag: str | None = None
    owner: str | None = None


def confirm_assets(
    session: Session,
    confirmations: Sequence[Confirmation],
    actor: str,
    *,
    ignore: bool = False,
) -> list[Asset]:
    """Accept discovered assets into the register in one go (room, tag, owner), or mark
    them ignored (not school equipment). All or nothing: one bad row and nothing changes.

    Raises ``AssetNotFound`` for a missing id and ``AssetValidationError`` keyed
    ``"<asset_id>.<field>"`` with every problem at once (a tag used twice in the batch too).
    """
    assets: list[Asset] = []
    planned: list[dict[str, object]] = []
    errors: dict[str, str] = {}
    tags: dict[str, int] = {}
    for item in confirmations:
        asset = session.get(Asset, item.asset_id)
        if asset is None:
            raise AssetNotFound(f"no asset {item.asset_id}")
        changes: dict[str, object] = (
            {"ignored": True, "registered": False}
            if ignore
            else {"registered": True, "ignored": False}
        )
        if item.room is not None and item.room.strip():
            changes["room"] = item.room
        if item.owner is not None and item.owner.strip():
            changes["owner"] = item.owner
        if item.asset_tag is not None and item.asset_tag.strip():
            tag = item.asset_tag.strip()
            changes["asset_tag"] = tag
            first = tags.setdefault(tag, item.asset_id)
            if first != item.asset_id:
                errors[f"{item.asset_id}.asset_tag"] = f"{tag!r} is also given to asset {first}"
        clean, field_errors = validate_changes(session, asset, changes)
        for key, text in field_errors.items():
            errors.setdefault(f"{item.asset_id}.{key}", text)
        assets.append(asset)
        planned.append(clean)
    if errors:
        raise AssetValidationError(errors)
    for asset, clean in zip(assets, planned, strict=True):
        apply_manual_changes(session, asset, clean, actor=actor, source="manual")
    return assets


def asset_history(session: Session, asset_id: int) -> list[AssetHistory]:
    query = (
        select(AssetHistory)
        .where(AssetHistory.asset_id == asset_id)
        .order_by(AssetHistory.at, AssetHistory.id)
    )
    return list(session.scalars(query))


def digital_record_coverage(session: Session, site_id: str | None = None) -> tuple[int, int]:
    """(registered, total) assets in the subtree; retired ones are no longer facilities.

    The district plan's "≥ 80 % of facilities managed by digital records" is registered/total.
    """
    base = select(func.count(Asset.id)).where(Asset.status != "retired")
    if site_id is not None:
        base = base.where(Asset.site_id.in_(site_subtree_ids(session, site_id)))
    total = int(session.scalar(base) or 0)
    registered = int(session.scalar(base.where(Asset.registered.is_(True))) or 0)
    return registered, total


def information_systems_classified(session: Session, site_id: str | None = None) -> tuple[int, int]:
    """(classified, total) information systems: a security level AND an approved plan."""
    base = select(func.count(Asset.id)).where(
        Asset.kind == "information_system", Asset.status != "retired"
    )
    if site_id is not None:
        base = base.where(Asset.site_id.in_(site_subtree_ids(session, site_id)))
    total = int(session.scalar(base) or 0)
    classified = int(
        session.scalar(
            base.where(
                Asset.security_level.is_not(None),
                Asset.protection_plan_approved_on.is_not(None),
            )
        )
        or 0
    )
    return classified, total


# --- bulk path for routine messages ---------------------------------------------------------

ROUTINE_KINDS: Final = frozenset({"state", "av", "net", "health", "telemetry", "event"})
"""Kinds that never change an asset's facts: only the device's latest state and last-seen."""


def apply_routine_batch(session: Session, batch: Sequence[DecodedMessage]) -> list[DecodedMessage]:
    """Apply routine messages from already-known devices with a few statements per batch.

    The per-message path (``apply_message``) costs several round trips; a district sends
    thousands of health/net/av messages a second, so those go here. Returns the messages
    that still need ``apply_message``: other kinds, first contact, a device that moved site.
    """
    device_ids = {decoded.message.device_id for decoded in batch}
    # Only devices whose asset exists: the others need the full path to (re)create it.
    known: dict[str, tuple[str, int]] = {
        device_id: (site_id, asset_id)
        for device_id, site_id, asset_id in session.execute(
            _KNOWN_DEVICES, {"device_ids": list(device_ids)}
        )
        if asset_id is not None  # the inner join already ensures it
    }
    routine: list[DecodedMessage] = []
    remaining: list[DecodedMessage] = []
    last_seen: dict[int, datetime] = {}
    for decoded in batch:
        message = decoded.message
        site_and_asset = known.get(message.device_id)
        if (
            site_and_asset is None
            or site_and_asset[0] != message.site
            or kind_of(message) not in ROUTINE_KINDS
        ):
            remaining.append(decoded)
            continue
        routine.append(decoded)
        asset_id = site_and_asset[1]
        seen = last_seen.get(asset_id)
        if seen is None or decoded.received_at > seen:
            last_seen[asset_id] = decoded.received_at
    if not routine:
        return remaining
    touch_devices(session, routine, record_latest(session, routine))
    # One UPDATE … FROM for the batch, not the ORM's row-by-row UPDATE (the version counter
    # forces that on assets): a sighting is not an edit, so it leaves ``version`` alone and
    # cannot make a person's concurrent edit fail; the WHERE keeps last_seen monotonic when
    # two collectors share the load, and key order keeps their row locks from deadlocking.
    _TOUCH_ASSET.execute(
        session.connection(),
        [{"asset_id": key, "seen": value} for key, value in sorted(last_seen.items())],
    )
    return remaining


_KNOWN_DEVICES: Final = (
    select(Device.device_id, Device.site_id, Device.asset_id)
    .join(Asset, Asset.id == Device.asset_id)
    .where(Device.device_id.in_(bindparam("device_ids", expanding=True)))
)

_TOUCH_ASSET: Final = ValuesUpdate(
    Asset,
    {"asset_id": "id", "seen": "last_seen"},
    # Only last_seen: not version, not updated_at (a sighting is not an edit).
    "last_seen = v.seen",
    "assets.id = v.asset_id AND (assets.last_seen IS NULL OR assets.last_seen < v.seen)",
)
