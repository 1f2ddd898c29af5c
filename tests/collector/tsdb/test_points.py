from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from campuswatch.collector.tsdb.points import Point, points_from_message, sanitize_field_name
from campuswatch.wire.messages import (
    AvMessage,
    AvProduct,
    CommandMessage,
    DiscoveryMessage,
    DiskUse,
    DnsCheck,
    EventMessage,
    GatewayCheck,
    HealthMessage,
    HelloMessage,
    InventoryMessage,
    Message,
    NetMessage,
    StateMessage,
    TelemetryMessage,
)

TS = datetime(2024, 5, 1, 8, 0, tzinfo=UTC)
RECEIVED = TS + timedelta(seconds=2)
ENVELOPE: dict[str, Any] = {"site": "school-1", "device_id": "pc-07", "ts": TS}
BASE_TAGS = {"site": "school-1", "device": "pc-07"}


def by_measurement(points: list[Point]) -> dict[str, list[Point]]:
    grouped: dict[str, list[Point]] = {}
    for point in points:
        grouped.setdefault(point.measurement, []).append(point)
    return grouped


def test_av_message_gives_product_points_and_one_hot_status() -> None:
    message = AvMessage(
        **ENVELOPE,
        status="at_risk",
        products=[
            AvProduct(
                name="Windows Defender",
                source="defender",
                enabled=True,
                running=True,
                realtime_protection=False,
                signatures_up_to_date=False,
                signature_age_hours=73.5,
                threats_found=2,
            ),
            AvProduct(name="ClamAV", source="clamav"),  # nothing known: only `protected`
        ],
    )
    grouped = by_measurement(points_from_message(message, RECEIVED))
    defender, clam = grouped["campus_av"]
    assert defender.tags == {**BASE_TAGS, "product": "Windows Defender", "source": "defender"}
    assert defender.fields == {
        "protected": 0,
        "enabled": 1,
        "running": 1,
        "realtime": 0,
        "sig_up_to_date": 0,
        "sig_age_hours": 73.5,
        "threats_found": 2,
    }
    assert defender.time == TS
    assert clam.fields == {"protected": 0}
    (status,) = grouped["campus_av_status"]
    assert status.tags == BASE_TAGS
    assert status.fields == {"protected": 0, "at_risk": 1, "no_av": 0, "error": 0}


def test_av_without_products_still_counts_for_coverage() -> None:
    points = points_from_message(AvMessage(**ENVELOPE, status="no_av"), RECEIVED)
    assert [p.measurement for p in points] == ["campus_av_status"]
    assert points[0].fields == {"protected": 0, "at_risk": 0, "no_av": 1, "error": 0}


def test_net_message_fields_and_dns_summary() -> None:
    message = NetMessage(
        **ENVELOPE,
        uplink_type="fibre",
        gateway=GatewayCheck(reachable=True, rtt_ms=1.5),
        dns=[
            DnsCheck(name="a", ok=True, resolve_ms=10),
            DnsCheck(name="b", ok=True, resolve_ms=30),
            DnsCheck(name="c", ok=True, resolve_ms=20),
            DnsCheck(name="d", ok=False, error="timeout"),
        ],
        internet_ok=True,
        latency_ms=25.0,
        loss_pct=0.0,
    )
    (point,) = points_from_message(message, RECEIVED)
    assert point.measurement == "campus_net"
    assert point.tags == {**BASE_TAGS, "uplink": "fibre"}
    assert point.fields == {
        "internet_ok": 1,
        "latency_ms": 25.0,
        "loss_pct": 0.0,
        "gateway_rtt_ms": 1.5,
        "gateway_reachable": 1,
        "dns_ok_ratio": 0.75,
        "dns_resolve_ms": 20.0,
    }


def test_health_and_disks() -> None:
    message = HealthMessage(
        **ENVELOPE,
        cpu_pct=12.5,
        queue_depth=0,
        disks=[
            DiskUse(mountpoint="C:\\", used_pct=80.0, free_bytes=10),
            DiskUse(mountpoint="/data", used_pct=1.0, free_bytes=999),
        ],
    )
    grouped = by_measurement(points_from_message(message, RECEIVED))
    assert grouped["campus_health"][0].fields == {"cpu_pct": 12.5, "queue_depth": 0}
    assert [(p.tags["mount"], p.fields) for p in grouped["campus_disk"]] == [
        ("C:\\", {"used_pct": 80.0, "free_bytes": 10}),
        ("/data", {"used_pct": 1.0, "free_bytes": 999}),
    ]


def test_health_with_no_numbers_gives_no_point() -> None:
    assert points_from_message(HealthMessage(**ENVELOPE), RECEIVED) == []


def test_telemetry_sanitises_keys_maps_known_states_and_drops_the_rest() -> None:
    message = TelemetryMessage(
        **ENVELOPE,
        device_type="env_sensor",
        values={"Temp °C": 21.5, "CO2-ppm": 800.0, "9volt": 9.1, "": 1.0, "nan": float("nan")},
        states={"Power": "ON", "door": "closed", "input": "HDMI1", "Temp °C": "on"},
    )
    (point,) = points_from_message(message, RECEIVED)
    assert point.measurement == "campus_telemetry"
    assert point.tags == {**BASE_TAGS, "device_type": "env_sensor"}
    assert point.fields == {
        "temp_c": 21.5,
        "co2_ppm": 800.0,
        "v_9volt": 9.1,
        "power": 1,
        "door": 0,
    }


@pytest.mark.parametrize(
    ("raw", "clean"),
    [("Temp °C", "temp_c"), ("a.b-c", "a_b_c"), ("__x__", "x"), ("°", ""), ("1a", "v_1a")],
)
def test_sanitize_field_name(raw: str, clean: str) -> None:
    assert sanitize_field_name(raw) == clean


def test_state_and_event() -> None:
    online = points_from_message(StateMessage(**ENVELOPE, status="online"), RECEIVED)
    offline = points_from_message(StateMessage(**ENVELOPE, status="offline"), RECEIVED)
    assert [(p.measurement, p.fields) for p in online + offline] == [
        ("campus_state", {"online": 1}),
        ("campus_state", {"online": 0}),
    ]
    event = EventMessage(**ENVELOPE, event_type="door.forced", severity="high", message="x")
    (point,) = points_from_message(event, RECEIVED)
    assert point.tags == {**BASE_TAGS, "event_type": "door.forced", "severity": "high"}
    assert point.fields == {"count": 1}


@pytest.mark.parametrize(
    "message",
    [
        HelloMessage(**ENVELOPE, device_type="pc", software="a", software_version="1"),
        InventoryMessage(**ENVELOPE, digest="0" * 64),
        DiscoveryMessage(**ENVELOPE, subnet="10.0.0.0/24"),
        CommandMessage(**ENVELOPE, command="rescan"),
    ],
)
def test_kinds_without_time_series(message: Message) -> None:
    assert points_from_message(message, RECEIVED) == []


def test_no_message_id_in_tags_and_future_device_clock_is_clamped() -> None:
    message = StateMessage(
        site="s", device_id="d", ts=RECEIVED + timedelta(minutes=5), status="online"
    )
    (point,) = points_from_message(message, RECEIVED)
    assert message.id not in point.tags.values()
    assert point.time == RECEIVED


def test_backlog_sample_keeps_device_time() -> None:
    old = TS - timedelta(days=2)
    message = StateMessage(site="s", device_id="d", ts=old, status="online")
    assert points_from_message(message, RECEIVED)[0].time == old
