"""Typed messages, one per topic kind (schema version 1).

Every message carries the envelope fields ``v``, ``id``, ``ts``, ``device_id`` and ``site``
plus a ``kind`` tag equal to the topic's last level, then the kind's body. Fields that a
device cannot know are ``None`` rather than a guessed value: "unknown" and "off" must never
look alike to a rule. Unknown fields are ignored so that a newer agent can add optional
fields inside v1 without breaking older collectors; a breaking change bumps ``v``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Final, Literal

import msgspec
from msgspec import Meta

from campuswatch.wire.ids import new_message_id, utc_now
from campuswatch.wire.topics import IDENTIFIER_PATTERN

SCHEMA_VERSION: Final = 1

Identifier = Annotated[str, Meta(pattern=IDENTIFIER_PATTERN, description="site or device id")]
MessageId = Annotated[
    str,
    Meta(
        pattern=r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\Z",
        description="UUID (v7 from CampusWatch senders), unique per message",
    ),
]
UtcTime = Annotated[datetime, Meta(tz=True, description="RFC 3339 time with a zone")]
ShortText = Annotated[str, Meta(max_length=256)]
LongText = Annotated[str, Meta(max_length=4096)]
Percent = Annotated[float, Meta(ge=0, le=100)]
# Upper bounds far above anything real, so an absurd value (``uptime_s: 1e30``) is refused
# here instead of breaking a page, a report or a time-series write downstream; 2**53 keeps
# integers exact as the floats the time-series store and JSON readers turn them into.
NonNegative = Annotated[float, Meta(ge=0, le=1e12)]
Count = Annotated[int, Meta(ge=0, le=2**53)]
Bytes = Annotated[int, Meta(ge=0, le=2**53, description="at most 2**53 (8 PiB)")]
Seconds = Annotated[float, Meta(ge=0, le=100 * 366 * 86400, description="at most 100 years")]
Reading = Annotated[float, Meta(ge=-1e15, le=1e15)]
# Collections bounded too: the payload limit bounds memory, these bound the work (rows,
# points) one message can cause.
MAX_ITEMS: Final = 64
MacAddress = Annotated[
    str, Meta(pattern=r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}\Z", description="lower-case, colon form")
]

DeviceType = Literal[
    "pc",
    "server",
    "projector",
    "interactive_panel",
    "camera",
    "env_sensor",
    "access_point",
    "smart_plug",
    "access_controller",
    "scanner",
    "other",
]
UplinkType = Literal["fibre", "4g", "5g", "adsl", "satellite", "other", "unknown"]
Severity = Literal["info", "low", "medium", "high", "critical"]


class ProbeError(msgspec.Struct, frozen=True, kw_only=True):
    """Why part or all of a probe could not be collected."""

    probe: ShortText
    reason: Literal["timeout", "not_found", "parse", "permission", "failed", "unsupported"]
    detail: LongText = ""


class _Envelope(msgspec.Struct, kw_only=True, tag_field="kind"):
    v: Annotated[int, Meta(ge=1)] = SCHEMA_VERSION
    id: MessageId = msgspec.field(default_factory=new_message_id)
    ts: UtcTime = msgspec.field(default_factory=utc_now)
    device_id: Identifier
    site: Identifier


# --- state / hello -------------------------------------------------------------------------


class StateMessage(_Envelope, tag="state"):
    """Retained availability; the ``offline`` form is registered as the MQTT Last Will."""

    status: Literal["online", "offline"]
    reason: Literal["connected", "shutdown", "will", "restart"] | None = None


class IdentityInfo(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """How the device id came about; the collector uses it to spot cloned disk images."""

    fingerprint: Annotated[str, Meta(pattern=r"^[0-9a-f]{64}\Z")]
    origin: Literal["new", "stable", "reidentified", "configured"]
    previous_device_id: Identifier | None = None
    note: ShortText = ""


class HelloMessage(_Envelope, tag="hello"):
    """Retained birth message: who the sender is and what it can do."""

    device_type: DeviceType
    software: ShortText
    software_version: ShortText
    vendor: ShortText | None = None
    model: ShortText | None = None
    serial: ShortText | None = None
    mac: MacAddress | None = None
    firmware_version: ShortText | None = None
    platform: ShortText | None = None
    capabilities: Annotated[list[ShortText], Meta(max_length=MAX_ITEMS)] = msgspec.field(
        default_factory=list
    )
    intervals_s: Annotated[dict[ShortText, NonNegative], Meta(max_length=MAX_ITEMS)] = (
        msgspec.field(default_factory=dict)
    )
    identity: IdentityInfo | None = None


# --- inventory -----------------------------------------------------------------------------


class OsInfo(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    name: ShortText
    version: ShortText | None = None
    build: ShortText | None = None
    kernel: ShortText | None = None
    edition: ShortText | None = None
    arch: ShortText | None = None


class CpuInfo(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    model: ShortText | None = None
    cores: Count | None = None
    threads: Count | None = None
    max_mhz: NonNegative | None = None


class HardwareInfo(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    vendor: ShortText | None = None
    model: ShortText | None = None
    serial: ShortText | None = None
    uuid: ShortText | None = None
    bios_vendor: ShortText | None = None
    bios_version: ShortText | None = None
    bios_date: ShortText | None = None
    chassis: ShortText | None = None


class DiskInfo(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    device: ShortText
    mountpoint: ShortText
    fstype: ShortText | None = None
    total_bytes: Bytes | None = None


class InterfaceInfo(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    name: ShortText
    mac: MacAddress | None = None
    ipv4: Annotated[list[ShortText], Meta(max_length=MAX_ITEMS)] = msgspec.field(
        default_factory=list
    )
    ipv6: Annotated[list[ShortText], Meta(max_length=MAX_ITEMS)] = msgspec.field(
        default_factory=list
    )
    speed_mbps: NonNegative | None = None
    up: bool | None = None


class SoftwareItem(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    name: ShortText
    version: ShortText | None = None
    publisher: ShortText | None = None


class InventoryMessage(_Envelope, tag="inventory"):
    """Full hardware/software inventory; sent at start and whenever ``digest`` changes."""

    digest: Annotated[str, Meta(pattern=r"^[0-9a-f]{64}\Z", description="sha256 of the body")]
    hostname: ShortText | None = None
    device_type: DeviceType = "pc"
    os: OsInfo | None = None
    cpu: CpuInfo | None = None
    memory_bytes: Bytes | None = None
    hardware: HardwareInfo | None = None
    firmware_version: ShortText | None = None
    disks: Annotated[list[DiskInfo], Meta(max_length=MAX_ITEMS)] = msgspec.field(
        default_factory=list
    )
    interfaces: Annotated[list[InterfaceInfo], Meta(max_length=256)] = msgspec.field(
        default_factory=list
    )
    boot_time: UtcTime | None = None
    software: Annotated[list[SoftwareItem], Meta(max_length=20_000)] | None = None
    errors: Annotated[list[ProbeError], Meta(max_length=MAX_ITEMS)] = msgspec.field(
        default_factory=list
    )


# --- antivirus -----------------------------------------------------------------------------


class AvProduct(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """One antivirus product as the OS or the product itself reports it."""

    name: ShortText
    source: Literal["security_center", "defender", "clamav", "other"]
    enabled: bool | None = None
    running: bool | None = None
    realtime_protection: bool | None = None
    signatures_up_to_date: bool | None = None
    signature_version: ShortText | None = None
    signature_time: UtcTime | None = None
    signature_age_hours: NonNegative | None = None
    engine_version: ShortText | None = None
    product_version: ShortText | None = None
    mode: Literal["active", "passive", "edr_block", "disabled", "unknown"] | None = None
    tamper_protection: bool | None = None
    managed: bool | None = None
    last_quick_scan: UtcTime | None = None
    last_full_scan: UtcTime | None = None
    last_update: UtcTime | None = None
    threats_found: Count | None = None
    raw_state: ShortText | None = None


class AvMessage(_Envelope, tag="av"):
    """Antivirus status. ``status`` is the one-word answer the coverage KPI counts."""

    status: Literal["protected", "at_risk", "no_av", "error"]
    products: Annotated[list[AvProduct], Meta(max_length=MAX_ITEMS)] = msgspec.field(
        default_factory=list
    )
    errors: Annotated[list[ProbeError], Meta(max_length=MAX_ITEMS)] = msgspec.field(
        default_factory=list
    )


# --- connectivity --------------------------------------------------------------------------


class GatewayCheck(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    address: ShortText | None = None
    reachable: bool | None = None
    rtt_ms: NonNegative | None = None
    loss_pct: Percent | None = None


class DnsCheck(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    name: ShortText
    ok: bool
    resolve_ms: NonNegative | None = None
    error: ShortText | None = None


class TargetCheck(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    url: ShortText
    ok: bool
    status_code: Annotated[int, Meta(ge=0, le=999)] | None = None
    latency_ms: NonNegative | None = None
    error: ShortText | None = None


class NetMessage(_Envelope, tag="net"):
    """Connectivity seen from this device: gateway, DNS, HTTP(S) targets, link."""

    uplink_type: UplinkType = "unknown"
    gateway: GatewayCheck | None = None
    dns: Annotated[list[DnsCheck], Meta(max_length=MAX_ITEMS)] = msgspec.field(default_factory=list)
    targets: Annotated[list[TargetCheck], Meta(max_length=MAX_ITEMS)] = msgspec.field(
        default_factory=list
    )
    internet_ok: bool | None = None
    loss_pct: Percent | None = None
    latency_ms: NonNegative | None = None
    link_speed_mbps: NonNegative | None = None
    throughput_mbps: NonNegative | None = None
    errors: Annotated[list[ProbeError], Meta(max_length=MAX_ITEMS)] = msgspec.field(
        default_factory=list
    )


# --- health --------------------------------------------------------------------------------


class DiskUse(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    mountpoint: ShortText
    used_pct: Percent
    free_bytes: Bytes


class HealthMessage(_Envelope, tag="health"):
    cpu_pct: Percent | None = None
    memory_pct: Percent | None = None
    memory_used_bytes: Bytes | None = None
    disks: Annotated[list[DiskUse], Meta(max_length=MAX_ITEMS)] = msgspec.field(
        default_factory=list
    )
    uptime_s: Seconds | None = None
    load1: NonNegative | None = None
    agent_rss_bytes: Bytes | None = None
    agent_cpu_pct: NonNegative | None = None
    queue_depth: Count | None = None
    queue_dropped_total: Count | None = None
    errors: Annotated[list[ProbeError], Meta(max_length=MAX_ITEMS)] = msgspec.field(
        default_factory=list
    )


# --- smart devices -------------------------------------------------------------------------


class TelemetryMessage(_Envelope, tag="telemetry"):
    """Sensor and device readings: numbers in ``values``, enumerations in ``states``."""

    device_type: DeviceType
    values: Annotated[dict[Annotated[str, Meta(max_length=64)], Reading], Meta(max_length=256)] = (
        msgspec.field(default_factory=dict)
    )
    states: Annotated[
        dict[Annotated[str, Meta(max_length=64)], ShortText], Meta(max_length=256)
    ] = msgspec.field(default_factory=dict)


class EventMessage(_Envelope, tag="event"):
    """Something that happened once: door forced, tamper, threat found, probe failed."""

    event_type: Annotated[str, Meta(pattern=r"^[a-z][a-z0-9_.]{0,63}\Z")]
    severity: Severity = "info"
    message: LongText = ""
    attributes: Annotated[
        dict[Annotated[str, Meta(max_length=64)], ShortText], Meta(max_length=MAX_ITEMS)
    ] = msgspec.field(default_factory=dict)


class DiscoveredHost(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    ip: ShortText
    mac: MacAddress | None = None
    vendor: ShortText | None = None
    hostname: ShortText | None = None
    open_ports: Annotated[list[Annotated[int, Meta(ge=1, le=65535)]], Meta(max_length=1024)] = (
        msgspec.field(default_factory=list)
    )
    guessed_type: DeviceType | None = None
    method: Literal["arp_sweep", "arp_passive", "dhcp_passive", "other"] = "arp_sweep"


class DiscoveryMessage(_Envelope, tag="discovery"):
    """What a network scanner saw on one subnet in one sweep."""

    subnet: ShortText
    # A /20, the largest subnet the scanner sweeps (docs/discovery.md).
    hosts: Annotated[list[DiscoveredHost], Meta(max_length=4096)] = msgspec.field(
        default_factory=list
    )
    complete: bool = True


class CommandMessage(_Envelope, tag="cmd"):
    """A command down to a device on ``cw/v1/{site}/{device_id}/cmd``."""

    command: Literal["refresh_inventory", "run_probes", "rescan", "reboot", "identify"]
    args: Annotated[
        dict[Annotated[str, Meta(max_length=64)], ShortText], Meta(max_length=MAX_ITEMS)
    ] = msgspec.field(default_factory=dict)
    issued_by: ShortText | None = None


Message = (
    StateMessage
    | HelloMessage
    | InventoryMessage
    | AvMessage
    | NetMessage
    | HealthMessage
    | TelemetryMessage
    | EventMessage
    | DiscoveryMessage
    | CommandMessage
)

KIND_TYPES: Final[dict[str, type[Message]]] = {
    "state": StateMessage,
    "hello": HelloMessage,
    "inventory": InventoryMessage,
    "av": AvMessage,
    "net": NetMessage,
    "health": HealthMessage,
    "telemetry": TelemetryMessage,
    "event": EventMessage,
    "discovery": DiscoveryMessage,
    "cmd": CommandMessage,
}


def kind_of(message: Message) -> str:
    tag = type(message).__struct_config__.tag
    assert isinstance(tag, str)
    return tag
