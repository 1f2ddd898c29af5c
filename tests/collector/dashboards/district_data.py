"""An hour of simulator-like traffic from a small district, as wire messages and points.

Shaped so every dashboard panel has something to show for the whole district and for the
one school the tests select (``FOCUS_SCHOOL``): that school has a PC in each AV state,
serious events, sensors, a projector and a camera. A school in another district whose id
shares a prefix (``hcm-q10-…``) checks that the district filter is not a bare prefix.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Final, Literal

from campuswatch.collector.tsdb.points import Point, points_from_message
from campuswatch.wire.messages import (
    AvMessage,
    AvProduct,
    DiskUse,
    DnsCheck,
    EventMessage,
    GatewayCheck,
    HealthMessage,
    Message,
    NetMessage,
    ProbeError,
    Severity,
    StateMessage,
    TelemetryMessage,
    UplinkType,
)

FOCUS_DISTRICT: Final = "hcm-q1"
FOCUS_SCHOOL: Final = "hcm-q1-thcs-a"
SCHOOLS: Final[dict[str, UplinkType]] = {
    FOCUS_SCHOOL: "fibre",
    "hcm-q1-th-b": "fibre",
    "hcm-q1-thpt-c": "4g",
    "hcm-q10-thcs-d": "fibre",
}
DISTRICTS: Final = frozenset({"hcm-q1", "hcm-q10"})
# This school's link is down for the last 20 minutes: the wall must show it offline.
OFFLINE_SCHOOL: Final = "hcm-q1-thpt-c"
PCS_PER_SCHOOL: Final = 4
DURATION: Final = timedelta(hours=1)

AvStatus = Literal["protected", "at_risk", "no_av", "error"]
# PC number → status in the focus school (one of each); elsewhere all but pc-04 protected.
FOCUS_STATUSES: Final[tuple[AvStatus, ...]] = ("protected", "at_risk", "no_av", "error")


def _av_status(site: str, pc: int) -> AvStatus:
    if site == FOCUS_SCHOOL:
        return FOCUS_STATUSES[pc]
    return "at_risk" if pc == PCS_PER_SCHOOL - 1 else "protected"


def _av_message(site: str, pc: int, ts: datetime) -> AvMessage:
    status = _av_status(site, pc)
    device = f"pc-{pc + 1:02d}"
    if status == "no_av":
        return AvMessage(site=site, device_id=device, ts=ts, status=status)
    if status == "error":
        failure = ProbeError(probe="av", reason="timeout", detail="Get-MpComputerStatus timed out")
        return AvMessage(site=site, device_id=device, ts=ts, status=status, errors=[failure])
    healthy = status == "protected"
    # Signature ages spread over fresh, a day and stale so the histogram has a shape.
    age_hours = (2.0 + 30.0 * pc) if healthy else 200.0
    products = [
        AvProduct(
            name="Microsoft Defender Antivirus",
            source="defender",
            enabled=True,
            running=True,
            realtime_protection=healthy,
            signatures_up_to_date=healthy,
            signature_age_hours=age_hours,
            threats_found=pc % 2,
        )
    ]
    if pc == 0:
        products.append(
            AvProduct(
                name="ClamAV",
                source="clamav",
                enabled=True,
                running=True,
                realtime_protection=True,
                signatures_up_to_date=True,
                signature_age_hours=5.0,
                threats_found=0,
            )
        )
    return AvMessage(site=site, device_id=device, ts=ts, status=status, products=products)


def _net_message(site: str, pc: int, minute: int, ts: datetime) -> NetMessage:
    internet_ok = not (site == OFFLINE_SCHOOL and minute >= 40)
    return NetMessage(
        site=site,
        device_id=f"pc-{pc + 1:02d}",
        ts=ts,
        uplink_type=SCHOOLS[site],
        gateway=GatewayCheck(address="192.168.1.1", reachable=True, rtt_ms=1.0 + pc * 0.5),
        dns=[
            DnsCheck(name="moet.gov.vn", ok=internet_ok, resolve_ms=20.0 if internet_ok else None),
            DnsCheck(name="google.com", ok=internet_ok, resolve_ms=12.0 if internet_ok else None),
        ],
        internet_ok=internet_ok,
        latency_ms=(30.0 + minute % 7 + pc) if internet_ok else None,
        loss_pct=0.0 if internet_ok else 100.0,
        link_speed_mbps=1000.0,
        throughput_mbps=(85.0 + minute % 5) if internet_ok and pc == 0 else None,
    )


def _health_message(site: str, pc: int, minute: int, ts: datetime) -> HealthMessage:
    return HealthMessage(
        site=site,
        device_id=f"pc-{pc + 1:02d}",
        ts=ts,
        cpu_pct=float(10 + (minute * 7 + pc * 13) % 80),
        memory_pct=float(40 + (minute + pc) % 30),
        disks=[
            DiskUse(mountpoint="C:", used_pct=60.0 + pc * 10, free_bytes=50_000_000_000),
            DiskUse(mountpoint="D:", used_pct=20.0, free_bytes=400_000_000_000),
        ],
        uptime_s=3600.0 * 5 + minute * 60,
        load1=0.5,
        agent_rss_bytes=30_000_000,
        agent_cpu_pct=0.4,
        queue_depth=0,
        queue_dropped_total=0,
    )


def _telemetry(site: str, minute: int, ts: datetime) -> list[TelemetryMessage]:
    return [
        TelemetryMessage(
            site=site,
            device_id="room-101-air",
            ts=ts,
            device_type="env_sensor",
            values={
                "co2_ppm": 600.0 + minute * 12,
                "temperature_c": 27.0 + minute / 30,
                "humidity_pct": 70.0 - minute / 10,
            },
        ),
        TelemetryMessage(
            site=site,
            device_id="room-101-projector",
            ts=ts,
            device_type="projector",
            values={
                "lamp_hours": 2100.0 + minute / 60,
                "temperature_c": 35.0 + minute / 4,
                "power": 0.0 if minute < 15 else 1.0,
            },
            states={"power": "standby" if minute < 15 else "on", "input_source": "hdmi1"},
        ),
        TelemetryMessage(
            site=site,
            device_id="gate-camera",
            ts=ts,
            device_type="camera",
            values={"recording": 1.0, "stream_up": 1.0, "storage_free_pct": 30.0 - minute / 6},
            states={"stream": "up"},
        ),
        TelemetryMessage(
            site=site,
            device_id="room-101-plug",
            ts=ts,
            device_type="smart_plug",
            values={"power_w": 3.0 if minute < 15 else 280.0, "energy_kwh": 12.0 + minute / 200},
            states={"load": "projector"},
        ),
    ]


def _events(site: str, start: datetime) -> list[EventMessage]:
    spec: list[tuple[int, str, str, Severity]] = [
        (5, "pc-02", "av.threat_found", "high"),
        (18, "gate-camera", "camera.tamper", "critical"),
        (25, "pc-03", "probe.failed", "low"),
        (33, "pc-02", "av.threat_found", "high"),
        (47, "room-101-projector", "projector.lamp_warning", "medium"),
        (55, "pc-04", "probe.failed", "low"),
    ]
    return [
        EventMessage(
            site=site,
            device_id=device,
            ts=start + timedelta(minutes=minute, seconds=17),
            event_type=event_type,
            severity=severity,
            message=f"{event_type} on {device}",
        )
        for minute, device, event_type, severity in spec
    ]


def district_messages(now: datetime) -> Iterator[Message]:
    """Messages of the hour before ``now``, timestamped like agents and sensors send them."""
    start = now - DURATION
    for site in SCHOOLS:
        devices = [f"pc-{pc + 1:02d}" for pc in range(PCS_PER_SCHOOL)]
        for device in [*devices, "room-101-air", "room-101-projector", "gate-camera"]:
            yield StateMessage(
                site=site, device_id=device, ts=start + timedelta(seconds=30), status="online"
            )
        yield StateMessage(
            site=site,
            device_id="pc-04",
            ts=start + timedelta(minutes=50),
            status="offline",
            reason="shutdown",
        )
        for minute in range(int(DURATION.total_seconds() // 60)):
            for pc in range(PCS_PER_SCHOOL):
                # Devices are not in lock-step: a few seconds apart, as real agents are.
                ts = start + timedelta(minutes=minute, seconds=3 + pc * 7)
                yield _net_message(site, pc, minute, ts)
                yield _health_message(site, pc, minute, ts)
                if minute % 5 == 0:
                    yield _av_message(site, pc, ts)
            yield from _telemetry(site, minute, start + timedelta(minutes=minute, seconds=30))
        yield from _events(site, start)


def district_points(now: datetime) -> list[Point]:
    return [
        point
        for message in district_messages(now)
        for point in points_from_message(message, received_at=now)
    ]
