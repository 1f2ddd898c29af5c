"""A problem that keeps being reported, and one resolved by hand while it still holds, as the
SOC sees them: mosquitto_pub in, the shipped rules, CEF at an independent syslog receiver."""

from __future__ import annotations

import itertools
from pathlib import Path

from campuswatch.wire import AvMessage, AvProduct, encode_message
from tests.collector.conftest import CollectorFactory
from tests.collector.forward.cef_parser import CefEvent, parse_cef
from tests.collector.forward.receivers import SyslogReceiver
from tests.collector.test_alert_pipeline_e2e import cef_lines, forwarding_config
from tests.collector.test_ingest_e2e import DEVICE, SITE, lab_pc_messages, publish
from tests.support.mosquitto import MosquittoBroker
from tests.support.waiting import wait_until

UPDATE_INTERVAL_S = 2.0
REPORTS = 8


def realtime_off() -> bytes:
    product = AvProduct(name="Microsoft Defender Antivirus", source="defender",
                        enabled=True, realtime_protection=False)  # fmt: skip
    return encode_message(
        AvMessage(device_id=DEVICE, site=SITE, status="at_risk", products=[product])
    )


def events(receiver: SyslogReceiver) -> list[CefEvent]:
    return [parse_cef(line) for line in cef_lines(receiver.inbox.snapshot())]


def test_repeats_reach_the_siem_as_rate_limited_updates_and_a_manual_resolve_reopens(
    mosquitto: MosquittoBroker, collector_factory: CollectorFactory, tmp_path: Path
) -> None:
    receiver = SyslogReceiver("tcp")
    receiver.start()
    collector = collector_factory(
        forwarding_config=forwarding_config(tmp_path, receiver.port),
        alert_group_wait_s=0,
        alert_update_interval_s=UPDATE_INTERVAL_S,
        housekeeping_interval_s=0.2,
    )
    for topic, payload in lab_pc_messages():  # real-time protection off
        publish(mosquitto, topic, payload)
    receiver.inbox.wait_for(lambda items: len(items) >= 1, timeout_s=60)
    [opened] = events(receiver)
    assert (opened.extension["act"], opened.extension["cnt"]) == ("opened", "1")
    alert_id = opened.extension["externalId"]

    # The PC keeps reporting the same problem: each report is counted.
    for _ in range(REPORTS):
        publish(mosquitto, f"cw/v1/{SITE}/{DEVICE}/av", realtime_off())
    path = f"/api/v1/alerts/{alert_id}"
    wait_until(lambda: collector.get(path)["occurrences"] == 1 + REPORTS, 60)

    def updated() -> list[CefEvent]:
        return [event for event in events(receiver) if event.extension["act"] == "updated"]

    wait_until(lambda: any(e.extension["cnt"] == str(1 + REPORTS) for e in updated()), 60)
    counts = [int(event.extension["cnt"]) for event in updated()]
    assert counts == sorted(counts) and counts[-1] == 1 + REPORTS
    last = updated()[-1].extension
    assert int(last["end"]) > int(last["start"]) == int(opened.extension["start"])
    # Never more often than the update interval.
    sent_at = [int(event.extension["rt"]) for event in [opened, *updated()]]
    gaps = [later - earlier for earlier, later in itertools.pairwise(sent_at)]
    assert all(gap >= UPDATE_INTERVAL_S * 1000 for gap in gaps), gaps

    # Resolved by hand while real-time protection is still off: the next report reopens it.
    response = collector.api.post(f"{path}/actions", json={"action": "resolve", "note": "ok?"})
    assert response.status_code == 200, response.text
    wait_until(lambda: any(e.extension["act"] == "resolved" for e in events(receiver)), 60)
    publish(mosquitto, f"cw/v1/{SITE}/{DEVICE}/av", realtime_off())
    wait_until(lambda: any(e.extension["act"] == "reopened" for e in events(receiver)), 60)
    reopened = [e for e in events(receiver) if e.extension["act"] == "reopened"][-1]
    assert reopened.extension["externalId"] == alert_id
    assert collector.get(path)["state"] == "firing"
