"""Each SOC destination reads alerts in its own language (``language`` option, default en)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from pydantic import ValidationError

from campuswatch.collector.forward.base import Destination, OutboxItem
from campuswatch.collector.forward.cef import render_cef
from campuswatch.collector.forward.json_formats import render_ecs, render_ocsf
from campuswatch.collector.forward.mqtt_destination import MqttDestination
from campuswatch.collector.forward.settings import ForwardingSettings, build_destination
from campuswatch.collector.forward.syslog import SyslogDestination
from campuswatch.collector.forward.webhook import WebhookDestination
from campuswatch.collector.signals import AlertNotification
from tests.collector.forward.cef_parser import parse_cef
from tests.collector.forward.samples import OPENED_AT, av_disabled

TEXTS = {
    "en": {
        "title": "Real-time protection off",
        "summary": "Real-time protection off on pc-lab1-07 at thcs-ndc-lab1",
        "description": "The antivirus runs but does not scan files as they are opened.",
    },
    "vi": {
        "title": "Bảo vệ thời gian thực đã tắt",
        "summary": "Bảo vệ thời gian thực đã tắt trên pc-lab1-07 tại thcs-ndc-lab1",
        "description": "Phần mềm diệt virus vẫn chạy nhưng không quét tệp khi tệp được mở.",
    },
}


def notification() -> AlertNotification:
    return av_disabled(
        rule_title=TEXTS["en"]["title"],
        summary=TEXTS["en"]["summary"],
        description=TEXTS["en"]["description"],
        texts=TEXTS,
    )


Build = Callable[[str | None], dict[str, Destination]]


@pytest.fixture
def destinations(tmp_path: Path) -> Iterator[Build]:
    """The three destination types from one settings file; closed after the test (the MQTT
    one keeps reconnecting to its broker otherwise)."""
    built: list[Destination] = []

    def build(language: str | None) -> dict[str, Destination]:
        made = _from_settings(tmp_path, language)
        built.extend(made.values())
        return made

    yield build
    for destination in built:
        destination.close()


def _from_settings(tmp_path: Path, language: str | None) -> dict[str, Destination]:
    chosen = "" if language is None else f"\n        language: {language}"
    path = tmp_path / "forwarding.yaml"
    path.write_text(
        f"""
destinations:
  - name: provincial-soc
    type: syslog
    options:
        host: 127.0.0.1
        transport: udp{chosen}
  - name: soc-webhook
    type: webhook
    options:
        url: http://127.0.0.1:9/in
        document_format: ocsf{chosen}
  - name: ioc-wall
    type: mqtt
    options:
        broker_url: mqtt://127.0.0.1:1883{chosen}
""",
        encoding="utf-8",
    )
    settings = ForwardingSettings.from_file(path)
    return {entry.name: build_destination(entry) for entry in settings.destinations}


def test_a_destination_set_to_vi_sends_vietnamese_cef_ocsf_and_ecs(destinations: Build) -> None:
    built = destinations("vi")
    syslog, webhook, mqtt = built["provincial-soc"], built["soc-webhook"], built["ioc-wall"]
    assert isinstance(syslog, SyslogDestination) and isinstance(webhook, WebhookDestination)
    assert isinstance(mqtt, MqttDestination)
    n = notification()

    cef = parse_cef(syslog.render_body(n))
    assert cef.extension["msg"] == TEXTS["vi"]["summary"]
    assert cef.header["name"] == TEXTS["vi"]["title"]

    body, _ = webhook.render_body([OutboxItem(1, "soc-webhook", n, 0, OPENED_AT)])
    [ocsf] = json.loads(body)
    assert ocsf["message"] == TEXTS["vi"]["summary"]
    assert ocsf["finding_info"]["title"] == TEXTS["vi"]["title"]
    assert ocsf["finding_info"]["desc"] == TEXTS["vi"]["description"]

    ecs = json.loads(mqtt.render(n))
    assert ecs["message"] == TEXTS["vi"]["summary"]
    assert ecs["rule"]["name"] == TEXTS["vi"]["title"]
    assert ecs["rule"]["description"] == TEXTS["vi"]["description"]


@pytest.mark.parametrize("language", [None, "en"])
def test_destinations_send_english_by_default(destinations: Build, language: str | None) -> None:
    built = destinations(language)
    n = notification()
    syslog = built["provincial-soc"]
    assert isinstance(syslog, SyslogDestination)
    cef = parse_cef(syslog.render_body(n))
    assert cef.extension["msg"] == TEXTS["en"]["summary"]
    assert cef.header["name"] == TEXTS["en"]["title"]


def test_an_alert_from_before_two_language_rules_is_sent_in_english() -> None:
    n = av_disabled(summary="Real-time protection off on pc-lab1-07", texts={})
    assert parse_cef(render_cef(n, language="vi")).extension["msg"] == n.summary
    assert render_ecs(n, language="vi")["message"] == n.summary
    assert render_ocsf(n, language="vi")["finding_info"]["title"] == n.rule_title


def test_an_unknown_language_is_refused(destinations: Build) -> None:
    with pytest.raises(ValidationError, match="language"):
        destinations("fr")
