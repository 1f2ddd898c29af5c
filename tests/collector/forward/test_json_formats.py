from __future__ import annotations

import json
from typing import Any

import pytest

from campuswatch.collector.forward.json_formats import OCSF_VERSION, render_ecs, render_ocsf
from campuswatch.collector.signals import AlertEventType
from tests.collector.forward.samples import av_disabled
from tests.collector.forward.schema_checks import ocsf_problems


def assert_valid_detection_finding(doc: dict[str, Any]) -> None:
    """Valid against the published OCSF schema (schema_checks.py), and as we emit it."""
    assert ocsf_problems(doc) == []
    assert doc["class_uid"] == 2004
    assert doc["metadata"]["version"] == OCSF_VERSION
    assert doc["time"] > 10**12  # milliseconds
    json.dumps(doc)  # JSON-serialisable as it stands


def test_ecs_document_for_av_disabled() -> None:
    doc = render_ecs(av_disabled(), version="0.1.0")
    assert doc["@timestamp"] == "2025-11-24T02:15:30.123Z"
    assert doc["event"]["kind"] == "alert"
    assert doc["event"]["action"] == "opened"
    assert doc["event"]["severity"] == 8
    assert doc["event"]["id"] == "0193a5c2-7a1e-7c3d-9f00-00000000a001"
    assert doc["rule"] == {
        "id": "av.realtime_off",
        "name": "Antivirus real-time protection disabled",
        "description": "Real-time protection is off; malware can run unnoticed.",
        "ruleset": "campuswatch",
    }
    assert doc["host"] == {
        "id": "pc-lab1-07",
        "name": "PC-LAB1-07",
        "hostname": "PC-LAB1-07",
        "ip": ["10.20.1.57"],
        "mac": ["00-1A-2B-3C-4D-5E"],
    }
    assert doc["observer"]["vendor"] == "CampusWatch"
    assert doc["observer"]["version"] == "0.1.0"
    assert doc["labels"]["school_id"] == "thcs-nguyen-du-cau-giay"
    assert doc["labels"]["district_id"] == "cau-giay"
    assert doc["labels"]["province_id"] == "ha-noi"
    assert doc["labels"]["room"] == "Phòng máy 1"
    assert doc["message"].startswith("Bảo vệ thời gian thực")
    assert doc["tags"] == ["antivirus", "windows"]
    assert doc["ecs"]["version"].startswith("8.")
    # Still firing: end is when it was last observed (ECS: "or when the activity was last
    # observed"), so repeated triggers show in the SIEM.
    assert (doc["event"]["start"], doc["event"]["end"]) == (
        "2025-11-24T02:10:00.000Z", "2025-11-24T02:15:00.000Z",
    )  # fmt: skip
    assert doc["campuswatch"]["alert"]["occurrences"] == 3
    assert "user" not in doc


def test_ecs_label_keys_have_no_dots_and_identity_wins() -> None:
    doc = render_ecs(av_disabled(labels={"os.name": "win", "school_id": "forged"}))
    assert doc["labels"]["os_name"] == "win"
    assert doc["labels"]["school_id"] == "thcs-nguyen-du-cau-giay"


def test_ecs_acknowledgement_names_the_user_and_resolution_sets_end() -> None:
    ack = render_ecs(av_disabled(event="acknowledged", state="acknowledged", actor="soc.hn"))
    assert ack["user"] == {"name": "soc.hn"}
    resolved = render_ecs(av_disabled(event="resolved", state="resolved"))
    assert resolved["event"]["end"] == "2025-11-24T02:15:00.000Z"


@pytest.mark.parametrize(
    ("event", "state", "activity", "status"),
    [
        ("opened", "firing", 1, 1),
        ("repeated", "firing", 2, 1),
        ("acknowledged", "acknowledged", 2, 2),
        ("escalated", "silenced", 2, 3),
        ("resolved", "resolved", 3, 4),
        ("reopened", "firing", 2, 1),
    ],
)
def test_ocsf_activity_and_status(
    event: AlertEventType, state: str, activity: int, status: int
) -> None:
    doc = render_ocsf(av_disabled(event=event, state=state))
    assert_valid_detection_finding(doc)
    assert doc["activity_id"] == activity
    assert doc["status_id"] == status


def test_ocsf_document_for_av_disabled() -> None:
    doc = render_ocsf(av_disabled(), version="0.1.0")
    assert_valid_detection_finding(doc)
    assert doc["severity_id"] == 4  # high
    assert doc["time"] == 1763950530123
    assert doc["finding_info"]["uid"] == "av.realtime_off:thcs-ndc:pc-lab1-07"
    assert doc["finding_info"]["analytic"]["uid"] == "av.realtime_off"
    assert doc["finding_info"]["created_time"] == 1763950200000
    assert doc["metadata"]["product"] == {
        "name": "CampusWatch Collector",
        "vendor_name": "CampusWatch",
        "version": "0.1.0",
    }
    assert doc["metadata"]["uid"] == "0193a5c2-7a1e-7c3d-9f00-00000000a001"
    assert doc["device"]["ip"] == "10.20.1.57"
    assert doc["device"]["mac"] == "00:1A:2B:3C:4D:5E"
    assert "school_id:thcs-nguyen-du-cau-giay" in doc["metadata"]["labels"]
    assert doc["unmapped"]["province_id"] == "ha-noi"


def test_ocsf_with_the_least_information_is_still_valid() -> None:
    n = av_disabled(
        device_id=None, hostname=None, ip=None, mac=None, school_id=None, description="",
        tags=(), labels={}, district_id=None, province_id=None, level="info",
    )  # fmt: skip
    doc = render_ocsf(n)
    assert_valid_detection_finding(doc)
    assert doc["severity_id"] == 1
    assert doc["finding_info"]["desc"] == n.summary
