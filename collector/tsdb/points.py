"""Wire messages → time-series points, under the naming scheme Grafana dashboards rely on.

The scheme is documented in docs/timeseries.md; change a name here and a dashboard breaks,
so names are constants and a test pins each one. Tags are bounded in cardinality (site,
device, product, uplink, mount, …) and never carry message ids, free text or timestamps.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from statistics import median
from typing import Final

from campuswatch.wire.messages import (
    AvMessage,
    EventMessage,
    HealthMessage,
    Message,
    NetMessage,
    StateMessage,
    TelemetryMessage,
)

FieldValue = float | int | bool

MEASUREMENT_AV: Final = "campus_av"
MEASUREMENT_AV_STATUS: Final = "campus_av_status"
MEASUREMENT_NET: Final = "campus_net"
MEASUREMENT_HEALTH: Final = "campus_health"
MEASUREMENT_DISK: Final = "campus_disk"
MEASUREMENT_TELEMETRY: Final = "campus_telemetry"
MEASUREMENT_STATE: Final = "campus_state"
MEASUREMENT_EVENT: Final = "campus_event"

AV_STATUSES: Final = ("protected", "at_risk", "no_av", "error")

# Telemetry states are free strings; only these well-known on/off words become 0/1 fields.
# Anything else is dropped: a string as a tag would multiply series per distinct value.
_TRUE_STATES: Final = frozenset({"on", "true", "yes", "open", "online", "running", "ok", "up"})
_FALSE_STATES: Final = frozenset(
    {"off", "false", "no", "closed", "offline", "stopped", "standby", "down"}
)
_FIELD_NAME_BAD_CHARS: Final = re.compile(r"[^a-z0-9_]+")
# Tag values are bounded so one misbehaving device cannot create huge series keys.
_MAX_TAG_VALUE_CHARS: Final = 64


@dataclass(frozen=True, slots=True)
class Point:
    """One sample row: what line protocol calls a point (measurement, tags, fields, time)."""

    measurement: str
    tags: dict[str, str]
    fields: dict[str, FieldValue]
    time: datetime


def sanitize_field_name(name: str) -> str:
    """Lower-case, ``[a-z0-9_]`` only, runs of anything else folded into one ``_``."""
    cleaned = _FIELD_NAME_BAD_CHARS.sub("_", name.strip().lower()).strip("_")
    if not cleaned:
        return ""
    if cleaned[0].isdigit():
        cleaned = "v_" + cleaned
    return cleaned


def _tag_value(value: str) -> str:
    # Empty tag values are invalid in line protocol; "unknown" keeps the series addressable.
    value = value.strip()[:_MAX_TAG_VALUE_CHARS]
    return value or "unknown"


def _numeric_fields(values: Mapping[str, FieldValue | None]) -> dict[str, FieldValue]:
    """Keep real numbers only: None is "unknown", and NaN/inf are not storable anywhere."""
    kept: dict[str, FieldValue] = {}
    for name, value in values.items():
        if value is None:
            continue
        if isinstance(value, float) and not math.isfinite(value):
            continue
        kept[name] = value
    return kept


def _as_flag(value: bool | None) -> int | None:
    # 0/1 integers rather than booleans so sum()/avg() work in PromQL, InfluxQL and SQL alike.
    return None if value is None else int(value)


def _base_tags(message: Message) -> dict[str, str]:
    return {"site": _tag_value(message.site), "device": _tag_value(message.device_id)}


def _point(
    measurement: str,
    tags: dict[str, str],
    values: Mapping[str, FieldValue | None],
    time: datetime,
) -> list[Point]:
    fields = _numeric_fields(values)
    if not fields:
        return []
    return [Point(measurement=measurement, tags=tags, fields=fields, time=time)]


def _av_points(message: AvMessage, time: datetime) -> list[Point]:
    points: list[Point] = []
    status_flags = {status: int(message.status == status) for status in AV_STATUSES}
    protected = status_flags["protected"]
    seen_products: set[tuple[str, str]] = set()
    for product in message.products:
        tags = _base_tags(message)
        tags["product"] = _tag_value(product.name)
        tags["source"] = product.source
        key = (tags["product"], tags["source"])
        if key in seen_products:
            # Two rows for one series at one instant would overwrite each other; keep the first.
            continue
        seen_products.add(key)
        points += _point(
            MEASUREMENT_AV,
            tags,
            {
                "protected": protected,
                "enabled": _as_flag(product.enabled),
                "running": _as_flag(product.running),
                "realtime": _as_flag(product.realtime_protection),
                "sig_up_to_date": _as_flag(product.signatures_up_to_date),
                "sig_age_hours": product.signature_age_hours,
                "threats_found": product.threats_found,
            },
            time,
        )
    points += _point(MEASUREMENT_AV_STATUS, _base_tags(message), dict(status_flags), time)
    return points


def _net_points(message: NetMessage, time: datetime) -> list[Point]:
    tags = _base_tags(message)
    tags["uplink"] = message.uplink_type
    gateway = message.gateway
    dns_ok_ratio = (
        sum(1 for check in message.dns if check.ok) / len(message.dns) if message.dns else None
    )
    resolve_times = [c.resolve_ms for c in message.dns if c.ok and c.resolve_ms is not None]
    return _point(
        MEASUREMENT_NET,
        tags,
        {
            "internet_ok": _as_flag(message.internet_ok),
            "latency_ms": message.latency_ms,
            "loss_pct": message.loss_pct,
            "gateway_rtt_ms": gateway.rtt_ms if gateway else None,
            "gateway_reachable": _as_flag(gateway.reachable) if gateway else None,
            "link_speed_mbps": message.link_speed_mbps,
            "throughput_mbps": message.throughput_mbps,
            "dns_ok_ratio": dns_ok_ratio,
            "dns_resolve_ms": float(median(resolve_times)) if resolve_times else None,
        },
        time,
    )


def _health_points(message: HealthMessage, time: datetime) -> list[Point]:
    points = _point(
        MEASUREMENT_HEALTH,
        _base_tags(message),
        {
            "cpu_pct": message.cpu_pct,
            "memory_pct": message.memory_pct,
            "uptime_s": message.uptime_s,
            "load1": message.load1,
            "agent_rss_bytes": message.agent_rss_bytes,
            "agent_cpu_pct": message.agent_cpu_pct,
            "queue_depth": message.queue_depth,
            "queue_dropped_total": message.queue_dropped_total,
        },
        time,
    )
    seen_mounts: set[str] = set()
    for disk in message.disks:
        tags = _base_tags(message)
        tags["mount"] = _tag_value(disk.mountpoint)
        if tags["mount"] in seen_mounts:
            continue
        seen_mounts.add(tags["mount"])
        points += _point(
            MEASUREMENT_DISK,
            tags,
            {"used_pct": disk.used_pct, "free_bytes": disk.free_bytes},
            time,
        )
    return points


def _telemetry_points(message: TelemetryMessage, time: datetime) -> list[Point]:
    tags = _base_tags(message)
    tags["device_type"] = message.device_type
    fields: dict[str, FieldValue | None] = {}
    for key, value in message.values.items():
        name = sanitize_field_name(key)
        if name and name not in fields:
            fields[name] = float(value)
    for key, state in message.states.items():
        name = sanitize_field_name(key)
        word = state.strip().lower()
        if not name or name in fields:
            continue
        if word in _TRUE_STATES:
            fields[name] = 1
        elif word in _FALSE_STATES:
            fields[name] = 0
    return _point(MEASUREMENT_TELEMETRY, tags, fields, time)


def _state_points(message: StateMessage, time: datetime) -> list[Point]:
    return _point(
        MEASUREMENT_STATE, _base_tags(message), {"online": int(message.status == "online")}, time
    )


def _event_points(message: EventMessage, time: datetime) -> list[Point]:
    tags = _base_tags(message)
    tags["event_type"] = message.event_type
    tags["severity"] = message.severity
    return _point(MEASUREMENT_EVENT, tags, {"count": 1}, time)


def points_from_message(message: Message, received_at: datetime) -> list[Point]:
    """The points one message contributes; inventory, hello, discovery and cmd give none.

    Samples are stamped with the device's own ``ts``: a backlog replayed after an outage must
    land where it happened, not at replay time. A device clock ahead of ``received_at`` is
    clamped to ``received_at`` (a sample "from the future" would hide later real samples in
    "latest value" queries), and a naive ``ts`` falls back to ``received_at``.
    """
    time = message.ts
    if time.tzinfo is None or (received_at.tzinfo is not None and time > received_at):
        time = received_at
    if isinstance(message, AvMessage):
        return _av_points(message, time)
    if isinstance(message, NetMessage):
        return _net_points(message, time)
    if isinstance(message, HealthMessage):
        return _health_points(message, time)
    if isinstance(message, TelemetryMessage):
        return _telemetry_points(message, time)
    if isinstance(message, StateMessage):
        return _state_points(message, time)
    if isinstance(message, EventMessage):
        return _event_points(message, time)
    return []
