"""The OCSF and ECS documents against the schemas their owners publish (schema_checks.py)."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest

from campuswatch.collector.forward.json_formats import (
    ECS_VERSION,
    OCSF_VERSION,
    render_ecs,
    render_ocsf,
)
from campuswatch.collector.signals import AlertNotification
from tests.collector.forward.samples import av_disabled
from tests.collector.forward.schema_checks import ecs_definitions, ecs_problems, ocsf_problems

LEAST: dict[str, Any] = {
    "device_id": None, "hostname": None, "ip": None, "mac": None, "school_id": None,
    "district_id": None, "province_id": None, "description": "", "tags": (), "labels": {},
}  # fmt: skip

NOTIFICATIONS: dict[str, Callable[[], AlertNotification]] = {
    "opened": lambda: av_disabled(),
    "repeated": lambda: av_disabled(event="repeated", occurrences=9),
    "acknowledged by a user with a note": lambda: av_disabled(
        event="acknowledged", state="acknowledged", actor="soc.hn", note="on it"
    ),
    "silenced": lambda: av_disabled(event="updated", state="silenced", level="low"),
    "escalated to critical": lambda: av_disabled(event="escalated", level="critical"),
    "resolved with a link": lambda: av_disabled(
        event="resolved", state="resolved", url="https://campuswatch.example/alerts/4711"
    ),
    "reopened, IPv6 and dotted labels": lambda: av_disabled(
        event="reopened", ip="fd00::57", labels={"os.name": "Windows 11", "room": "A1"}
    ),
    "site-level with the least information": lambda: av_disabled(**LEAST, level="info"),
    "a device known only by its address": lambda: av_disabled(
        **{**LEAST, "ip": "10.20.1.99"}, level="medium"
    ),
    "an unregistered host known only by its MAC": lambda: av_disabled(
        **{**LEAST, "mac": "00-1a-2b-3c-4d-99"}, level="high"
    ),
}


@pytest.fixture(params=sorted(NOTIFICATIONS), ids=str)
def notification(request: pytest.FixtureRequest) -> AlertNotification:
    return NOTIFICATIONS[request.param]()


@pytest.mark.parametrize("language", ["en", "vi"])
def test_ocsf_document_is_valid_in_the_release_it_names(
    notification: AlertNotification, language: str
) -> None:
    doc = render_ocsf(notification, language=language)
    assert doc["metadata"]["version"] == OCSF_VERSION
    assert ocsf_problems(doc) == []


def test_ocsf_declares_the_host_profile_exactly_when_it_uses_its_attributes(
    notification: AlertNotification,
) -> None:
    doc = render_ocsf(notification)
    uses_host = "device" in doc or "actor" in doc
    assert ("host" in doc["metadata"].get("profiles", [])) == uses_host
    if uses_host:  # without the declaration the host attributes are not the class's
        undeclared = copy.deepcopy(doc)
        undeclared["metadata"]["profiles"].remove("host")
        assert any("unexpected" in p for p in ocsf_problems(undeclared))


def test_ocsf_document_names_its_device_whenever_it_has_one() -> None:
    # OCSF device: at least one of ip, uid, name, hostname, … besides its type.
    assert "device" not in render_ocsf(av_disabled(**LEAST))
    by_address = render_ocsf(av_disabled(**{**LEAST, "ip": "10.20.1.99"}))
    assert by_address["device"]["ip"] == "10.20.1.99"
    assert by_address["metadata"]["profiles"] == ["host"]
    # An unregistered host seen on the LAN: its MAC is all that identifies it.
    by_mac = render_ocsf(av_disabled(**{**LEAST, "mac": "00-1a-2b-3c-4d-99"}))
    assert by_mac["device"]["mac"] == by_mac["device"]["uid"] == "00:1A:2B:3C:4D:99"


def test_ocsf_resource_is_the_device_or_else_the_site() -> None:
    assert render_ocsf(av_disabled())["resources"] == [
        {"type": "device", "uid": "pc-lab1-07", "name": "PC-LAB1-07"}
    ]
    by_name = render_ocsf(av_disabled(**{**LEAST, "hostname": "PC-LAB1-07"}))
    assert by_name["resources"] == [{"type": "device", "name": "PC-LAB1-07"}]
    site_level = render_ocsf(av_disabled(**LEAST))
    assert site_level["resources"] == [{"type": "site", "uid": "thcs-ndc-lab1"}]


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    *parents, last = path.split(".")

    def mutate(doc: dict[str, Any]) -> None:
        target = doc
        for part in parents:
            target = target[part]
        target[last] = value

    return mutate


def _delete(path: str) -> Callable[[dict[str, Any]], None]:
    *parents, last = path.split(".")

    def mutate(doc: dict[str, Any]) -> None:
        target = doc
        for part in parents:
            target = target[part]
        del target[last]

    return mutate


OCSF_BREAKAGES: dict[str, tuple[Callable[[dict[str, Any]], None], str]] = {
    "unknown attribute": (_set("school", "thcs-ndc"), "school"),
    "unknown attribute in an object": (_set("device.room", "A1"), "room"),
    "time as a string": (_set("time", "1763950530123"), "time"),
    "missing required finding uid": (_delete("finding_info.uid"), "uid"),
    "missing metadata.product": (_delete("metadata.product"), "product"),
    "severity id outside the enum": (_set("severity_id", 42), "severity_id"),
    "severity caption of another id": (_set("severity", "Critical"), "severity"),
    "status caption of another id": (_set("status", "Closed"), "status"),
    "type_uid of another activity": (_set("type_uid", 200403), "type_uid"),
    "device with only its type": (_set("device", {"type_id": 0, "type": "Unknown"}), "device"),
    "mac that is not one": (_set("device.mac", "00:1A:2B"), "mac"),
    "profile the class lacks": (_set("metadata.profiles", ["host", "school"]), "school"),
    "unpackaged release": (_set("metadata.version", "9.9.9"), "9.9.9"),
}


@pytest.mark.parametrize("breakage", sorted(OCSF_BREAKAGES), ids=str)
def test_ocsf_check_fails_on_a_broken_document(breakage: str) -> None:
    mutate, named = OCSF_BREAKAGES[breakage]
    doc = render_ocsf(av_disabled(actor="soc.hn"))
    assert ocsf_problems(doc) == []
    mutate(doc)
    problems = ocsf_problems(doc)
    assert problems, f"{breakage}: accepted"
    assert any(named in p for p in problems), problems


@pytest.mark.parametrize("release", ["1.2.0", "1.3.0", "1.4.0", "1.5.0", "1.6.0", "1.7.0"])
def test_ocsf_document_is_also_valid_in_later_releases(release: str) -> None:
    """We emit 1.1.0 (docs/forwarding.md says why); moving up must stay a one-constant change."""
    doc = render_ocsf(av_disabled(actor="soc.hn", note="on it", url="https://cw.example/a/1"))
    doc["metadata"]["version"] = release
    assert ocsf_problems(doc) == []


@pytest.mark.parametrize("language", ["en", "vi"])
def test_ecs_document_is_valid_in_the_ecs_version_it_names(
    notification: AlertNotification, language: str
) -> None:
    doc = render_ecs(notification, language=language)
    assert ecs_problems(doc) == []


def test_ecs_definitions_are_of_the_version_we_emit() -> None:
    version, fields = ecs_definitions()
    assert version == ECS_VERSION
    assert fields["host.ip"]["type"] == "ip" and fields["event.severity"]["type"] == "long"


ECS_BREAKAGES: dict[str, tuple[Callable[[dict[str, Any]], None], str]] = {
    "unknown field in an ECS field set": (_set("host.room", "A1"), "host.room"),
    "unknown top-level field": (_set("school_id", "thcs-ndc"), "school_id"),
    "severity as a string": (_set("event.severity", "8"), "event.severity"),
    "severity as a boolean": (_set("event.severity", True), "event.severity"),
    "ip that is not one": (_set("host.ip", ["PC-LAB1-07"]), "host.ip"),
    "ip not in an array": (_set("host.ip", "10.20.1.57"), "host.ip"),
    "mac in colon notation": (_set("host.mac", ["00:1A:2B:3C:4D:5E"]), "host.mac"),
    "kind outside the allowed values": (_set("event.kind", "finding"), "event.kind"),
    "type not expected with the category": (_set("event.type", ["creation"]), "event.type"),
    "date without a time zone": (_set("event.start", "2025-11-24T02:10:00"), "event.start"),
    "date that is not one": (_set("@timestamp", "yesterday"), "@timestamp"),
    "nested label": (_set("labels.room", {"floor": "1"}), "labels"),
    "label key with a dot": (_set("labels", {"os.name": "win"}), "labels"),
    "another ECS version": (_set("ecs.version", "8.0.0"), "ecs.version"),
    "missing @timestamp": (_delete("@timestamp"), "@timestamp"),
    "tags not an array": (_set("tags", "antivirus"), "tags"),
    "hostname as an array": (_set("host.hostname", ["PC-LAB1-07"]), "host.hostname"),
}


@pytest.mark.parametrize("breakage", sorted(ECS_BREAKAGES), ids=str)
def test_ecs_check_fails_on_a_broken_document(breakage: str) -> None:
    mutate, named = ECS_BREAKAGES[breakage]
    doc = render_ecs(av_disabled(actor="soc.hn"))
    assert ecs_problems(doc) == []
    mutate(doc)
    problems = ecs_problems(doc)
    assert problems, f"{breakage}: accepted"
    assert any(named in p for p in problems), problems
