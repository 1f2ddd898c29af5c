"""The alert API speaks the analyst's language: every alert carries its texts in each
language the rules are written in, and the search finds it by any of them."""

from __future__ import annotations

from campuswatch.wire import AvMessage, encode_message
from tests.collector.conftest import RunningCollector
from tests.collector.test_ingest_e2e import SITE, lab_pc_messages, publish
from tests.support.mosquitto import MosquittoBroker
from tests.support.waiting import wait_until


def test_an_alert_is_listed_with_its_vietnamese_texts_and_found_by_them(
    mosquitto: MosquittoBroker, collector: RunningCollector
) -> None:
    for topic, payload in lab_pc_messages():
        publish(mosquitto, topic, payload)
    no_av = AvMessage(device_id="pc-lab1-08", site=SITE, status="no_av")
    publish(mosquitto, f"cw/v1/{SITE}/pc-lab1-08/av", encode_message(no_av))
    wait_until(lambda: collector.get("/api/v1/alerts", device_id="pc-lab1-08")["total"] >= 1)

    found = collector.get("/api/v1/alerts", search="PHẦN MỀM DIỆT VIRUS", device_id="pc-lab1-08")
    assert found["total"] == 1
    [alert] = found["items"]
    assert alert["texts"]["vi"]["title"] == "Chưa cài phần mềm diệt virus"
    assert "pc-lab1-08" in alert["texts"]["vi"]["summary"]
    assert alert["texts"]["en"]["title"] == alert["rule_title"]
    unaccented = collector.get("/api/v1/alerts", search="chua cai", device_id="pc-lab1-08")
    assert unaccented["total"] == 1
    detail = collector.get(f"/api/v1/alerts/{alert['id']}")
    assert detail["texts"] == alert["texts"]
