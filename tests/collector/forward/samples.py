"""Alert notifications used across the forwarding tests."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from typing import Any

from campuswatch.collector.signals import AlertNotification

OPENED_AT = datetime(2025, 11, 24, 2, 15, 30, 123000, tzinfo=UTC)


def av_disabled(**overrides: Any) -> AlertNotification:
    """The "antivirus real-time protection off" alert on a lab PC of a Hanoi school."""
    base = AlertNotification(
        alert_id=4711,
        event="opened",
        event_id="0193a5c2-7a1e-7c3d-9f00-00000000a001",
        fingerprint="av.realtime_off:thcs-ndc:pc-lab1-07",
        rule_id="av.realtime_off",
        rule_title="Antivirus real-time protection disabled",
        level="high",
        state="firing",
        site_id="thcs-ndc-lab1",
        summary="Bảo vệ thời gian thực của Windows Defender đã tắt trên PC-LAB1-07",
        at=OPENED_AT,
        first_seen=datetime(2025, 11, 24, 2, 10, 0, tzinfo=UTC),
        last_seen=datetime(2025, 11, 24, 2, 15, 0, tzinfo=UTC),
        occurrences=3,
        school_id="thcs-nguyen-du-cau-giay",
        district_id="cau-giay",
        province_id="ha-noi",
        device_id="pc-lab1-07",
        hostname="PC-LAB1-07",
        ip="10.20.1.57",
        mac="00-1a-2b-3c-4d-5e",
        tags=("antivirus", "windows"),
        labels={"room": "Phòng máy 1"},
        description="Real-time protection is off; malware can run unnoticed.",
        runbook_en="Turn real-time protection back on.",
        runbook_vi="Bật lại bảo vệ thời gian thực.",
        collector_id="collector-cau-giay",
    )
    return dataclasses.replace(base, **overrides)
