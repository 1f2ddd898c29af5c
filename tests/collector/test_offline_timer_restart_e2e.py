"""A device's Last Will arrives shortly before the collector restarts: the restarted one
still raises "device offline" when the rule's time is up. mosquitto_pub as the broker's
will, real collectors on one register; the rule's 10 minutes shortened to seconds."""

from __future__ import annotations

from pathlib import Path

from campuswatch.collector.alerting import SHIPPED_RULES
from campuswatch.wire import HelloMessage, encode_message
from campuswatch.wire.messages import StateMessage
from tests.collector.conftest import CollectorFactory
from tests.collector.test_ingest_e2e import publish
from tests.support.mosquitto import MosquittoBroker
from tests.support.waiting import wait_until

SITE = "thcs-restart"
PROJECTOR = "proj-room-12"
FOR_S = 3
DEVICE_OFFLINE_RULE = "09ea54ae-ab8f-5bb0-9eda-ff3d9eb2fd3a"


def short_offline_rule(directory: Path) -> Path:
    """The shipped "device offline" rule with ``for: 3s``, and a test case to match."""
    directory.mkdir()
    rule = (SHIPPED_RULES / "devices" / "device_offline.yaml").read_text(encoding="utf-8")
    assert "    for: 10m\n" in rule
    (directory / "device_offline.yaml").write_text(
        rule.replace("    for: 10m\n", f"    for: {FOR_S}s\n"), encoding="utf-8"
    )
    (directory / "device_offline.test.yaml").write_text(
        """description: offline for longer than the rule's time fires; back online resolves
steps:
  - at: 0s
    message:
      {kind: hello, site: s1, device_id: proj-01, device_type: projector,
       software: fw, software_version: "1.0"}
  - at: 1s
    message: {kind: state, site: s1, device_id: proj-01, status: offline, reason: will}
  - at: 10s
  - at: 20s
    message: {kind: state, site: s1, device_id: proj-01, status: online, reason: connected}
expect:
  - subject: {site: s1, device: proj-01}
    statuses: [firing, resolved]
""",
        encoding="utf-8",
    )
    return directory


def test_a_will_just_before_a_restart_still_raises_device_offline(
    mosquitto: MosquittoBroker, collector_factory: CollectorFactory, tmp_path: Path
) -> None:
    rules = short_offline_rule(tmp_path / "rules")
    data_dir = tmp_path / "collector"
    # The first collector never ticks: the will arrives, then it stops before its timer.
    first = collector_factory(rules_dir=rules, data_dir=data_dir, housekeeping_interval_s=300)
    hello = HelloMessage(device_id=PROJECTOR, site=SITE, device_type="projector",
                         software="fw", software_version="2.1")  # fmt: skip
    will = StateMessage(device_id=PROJECTOR, site=SITE, status="offline", reason="will")
    publish(mosquitto, f"cw/v1/{SITE}/{PROJECTOR}/hello", encode_message(hello), retain=True)
    publish(mosquitto, f"cw/v1/{SITE}/{PROJECTOR}/state", encode_message(will), retain=True)
    path = f"/api/v1/devices/{PROJECTOR}"
    wait_until(lambda: first.get("/api/v1/devices", site_id=SITE)["total"] == 1)
    wait_until(lambda: first.get(path)["online"] is False)
    first.service.stop()

    # Restarted: the broker's retained will is a duplicate now, only the register knows.
    again = collector_factory(rules_dir=rules, data_dir=data_dir, housekeeping_interval_s=0.2)
    alerts = wait_until(
        lambda: again.get("/api/v1/alerts", device_id=PROJECTOR)["items"], timeout_s=30
    )
    assert [(alert["state"], alert["rule_id"]) for alert in alerts] == [
        ("firing", DEVICE_OFFLINE_RULE)
    ]
    assert again.service.ingestor.stats.stored_total == 0  # nothing new reached it
