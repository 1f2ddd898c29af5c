"""An unknown host found by a network sweep is alerted; a facilities manager registers or
ignores it through the API and the alert resolves at the next sweep."""

from __future__ import annotations

from typing import Any

import pytest

from campuswatch.wire import encode_message
from campuswatch.wire.messages import DiscoveredHost, DiscoveryMessage
from tests.collector.conftest import RunningCollector
from tests.collector.test_ingest_e2e import SITE, publish
from tests.support.mosquitto import MosquittoBroker
from tests.support.waiting import wait_until

pytestmark = pytest.mark.e2e
UNKNOWN_DEVICE_RULE = "6ac7b3dd-5155-537f-8be2-3b60b59a85df"
PHONE, CAMERA = "de:ad:be:ef:00:02", "de:ad:be:ef:00:03"


def sweep(mosquitto: MosquittoBroker) -> None:
    message = DiscoveryMessage(
        device_id="scanner-01",
        site=SITE,
        subnet="10.1.0.0/24",
        hosts=[
            DiscoveredHost(ip="10.1.0.60", mac=PHONE, vendor="Apple", hostname="iPhone-co-Lan"),
            DiscoveredHost(ip="10.1.0.61", mac=CAMERA, vendor="Hikvision"),
        ],
    )
    publish(mosquitto, f"cw/v1/{SITE}/scanner-01/discovery", encode_message(message))


def unknown_device_alerts(collector: RunningCollector, state: str) -> list[dict[str, Any]]:
    page = collector.get("/api/v1/alerts", rule_id=UNKNOWN_DEVICE_RULE, state=state)
    items: list[dict[str, Any]] = page["items"]
    return items


def asset_with_mac(collector: RunningCollector, mac: str) -> Any:
    [asset] = [
        a for a in collector.get("/api/v1/assets", source="discovery")["items"] if mac in a["macs"]
    ]
    return asset


def test_registering_or_ignoring_a_discovered_host_resolves_its_alert(
    mosquitto: MosquittoBroker, collector: RunningCollector
) -> None:
    sweep(mosquitto)
    wait_until(lambda: len(unknown_device_alerts(collector, "open")) == 2)
    # What the sweep saw reaches the alert through the register's verdict (issue 14).
    summaries = sorted(alert["summary"] for alert in unknown_device_alerts(collector, "open"))
    assert summaries == [
        f"Unknown device {PHONE} (Apple) named iPhone-co-Lan at 10.1.0.60 on the {SITE} network",
        f"Unknown device {CAMERA} (Hikvision) at 10.1.0.61 on the {SITE} network",
    ]

    phone, camera = asset_with_mac(collector, PHONE), asset_with_mac(collector, CAMERA)
    for asset, change in ((phone, {"ignored": True}), (camera, {"registered": True})):
        response = collector.api.patch(f"/api/v1/assets/{asset['id']}", json={"changes": change})
        assert response.status_code == 200, response.text
    assert asset_with_mac(collector, PHONE)["ignored"] is True

    sweep(mosquitto)
    wait_until(lambda: len(unknown_device_alerts(collector, "resolved")) == 2)
    assert unknown_device_alerts(collector, "open") == []
