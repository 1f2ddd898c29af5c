"""Messages from a plain mosquitto_pub end up as devices, assets, history and series."""

from __future__ import annotations

import json
import subprocess
import threading
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import func, select

from campuswatch.collector.db.models import ProcessedMessage
from campuswatch.wire import AvMessage, AvProduct, HelloMessage, encode_message
from campuswatch.wire.ids import new_message_id
from campuswatch.wire.messages import (
    HardwareInfo,
    HealthMessage,
    InterfaceInfo,
    InventoryMessage,
    OsInfo,
    StateMessage,
)
from tests.collector.conftest import CollectorFactory, RunningCollector
from tests.support import required
from tests.support.mosquitto import MosquittoBroker
from tests.support.waiting import wait_until

SITE = "hcm-q1-thcs-a"
DEVICE = "pc-lab1-07"


def publish(broker: MosquittoBroker, topic: str, payload: bytes, retain: bool = False) -> None:
    """Publish exactly as an outsider would: the mosquitto_pub command."""
    mosquitto_pub = required.program("mosquitto_pub", "mosquitto-clients")
    command = [mosquitto_pub, "-p", str(broker.port), "-q", "1", "-t", topic, "-s"]
    if retain:
        command.append("-r")
    subprocess.run(command, input=payload, check=True, timeout=10)


def lab_pc_messages() -> list[tuple[str, bytes]]:
    hello = HelloMessage(
        device_id=DEVICE,
        site=SITE,
        device_type="pc",
        software="campuswatch-agent",
        software_version="0.1.0",
        vendor="Dell Inc.",
        model="OptiPlex 3080",
        serial="5CD1234XYZ",
    )
    inventory = InventoryMessage(
        device_id=DEVICE,
        site=SITE,
        digest="a" * 64,
        hostname="LAB1-PC07",
        os=OsInfo(name="Windows 11 Education", version="10.0.22631"),
        hardware=HardwareInfo(vendor="Dell Inc.", model="OptiPlex 3080", serial="5CD1234XYZ"),
        interfaces=[InterfaceInfo(name="Ethernet", mac="00:1a:2b:3c:4d:5e", ipv4=["10.1.1.7"])],
    )
    av = AvMessage(
        device_id=DEVICE,
        site=SITE,
        status="at_risk",
        products=[
            AvProduct(
                name="Microsoft Defender Antivirus",
                source="defender",
                enabled=True,
                realtime_protection=False,
                signatures_up_to_date=True,
                signature_age_hours=5.0,
            )
        ],
    )
    state = StateMessage(device_id=DEVICE, site=SITE, status="online", reason="connected")
    return [
        (f"cw/v1/{SITE}/{DEVICE}/{kind}", encode_message(message))
        for kind, message in (
            ("hello", hello),
            ("state", state),
            ("inventory", inventory),
            ("av", av),
        )
    ]


def test_mosquitto_pub_messages_become_device_asset_history_and_series(
    mosquitto: MosquittoBroker, collector: RunningCollector
) -> None:
    for topic, payload in lab_pc_messages():
        publish(mosquitto, topic, payload)
    device = wait_until(
        lambda: (
            collector.api.get(f"/api/v1/devices/{DEVICE}").json()
            if collector.api.get(f"/api/v1/devices/{DEVICE}").status_code == 200
            and "av" in collector.api.get(f"/api/v1/devices/{DEVICE}").json()["latest"]
            else None
        )
    )
    assert device["site_id"] == SITE
    assert device["status"] == "online"
    assert device["av_status"] == "at_risk"
    assets = collector.get("/api/v1/assets", search="5CD1234XYZ")
    assert assets["total"] == 1
    asset = assets["items"][0]
    assert asset["device_id"] == DEVICE
    assert asset["macs"] == ["00:1a:2b:3c:4d:5e"]
    assert asset["os_name"] == "Windows 11 Education"
    history = collector.get(f"/api/v1/assets/{asset['id']}/history")
    assert {row["field"] for row in history} >= {"os_name", "serial"}
    assert all(row["actor"].startswith("message:") for row in history)
    collector.service.tsdb.wait_until_drained(10)
    store = collector.service.api_context.timeseries
    series = store.query("campus_av", "sig_age_hours", {"device": DEVICE}, start=0)
    assert [value for _, value in series] == [5.0]
    site = next(s for s in collector.get("/api/v1/sites") if s["id"] == SITE)
    assert site["online"] == 1


def test_bad_payloads_are_counted_by_reason_and_kept_as_dead_letters(
    mosquitto: MosquittoBroker, collector: RunningCollector
) -> None:
    good = HealthMessage(device_id=DEVICE, site=SITE, cpu_pct=12.5)
    future = HealthMessage(
        device_id=DEVICE, site=SITE, ts=datetime.now(UTC) + timedelta(days=2), cpu_pct=1.0
    )
    wrong_type = json.loads(encode_message(good))
    wrong_type["cpu_pct"] = "high"
    bad = {
        "json": (f"cw/v1/{SITE}/{DEVICE}/health", b"{not json"),
        "schema": (f"cw/v1/{SITE}/{DEVICE}/health", json.dumps(wrong_type).encode()),
        "identity": (f"cw/v1/{SITE}/pc-other/health", encode_message(good)),
        "topic": (f"cw/v1/{SITE}/{DEVICE}/firmware", encode_message(good)),
        "future": (f"cw/v1/{SITE}/{DEVICE}/health", encode_message(future)),
        "oversize": (f"cw/v1/{SITE}/{DEVICE}/health", b"x" * (600 * 1024)),
    }
    for topic, payload in bad.values():
        publish(mosquitto, topic, payload)
    publish(mosquitto, f"cw/v1/{SITE}/{DEVICE}/health", encode_message(good))
    stats = collector.service.ingestor.stats
    wait_until(lambda: stats.stored_total >= 1 and sum(stats.rejected_total.values()) >= 6)
    assert {reason: stats.rejected_total[reason] for reason in bad} == dict.fromkeys(bad, 1)
    letters = collector.get("/api/v1/dead-letters", page_size=50)
    assert letters["total"] == 6
    assert {row["reason"] for row in letters["items"]} == set(bad)
    metrics = collector.api.get("/metrics").text
    assert 'campuswatch_ingest_rejected_total{reason="identity"} 1.0' in metrics


def test_a_redelivered_message_changes_nothing(
    mosquitto: MosquittoBroker, collector: RunningCollector
) -> None:
    message = HealthMessage(device_id=DEVICE, site=SITE, cpu_pct=40.0)
    for _ in range(3):
        publish(mosquitto, f"cw/v1/{SITE}/{DEVICE}/health", encode_message(message))
    stats = collector.service.ingestor.stats
    wait_until(lambda: stats.stored_total + stats.duplicates_total >= 3)
    assert (stats.stored_total, stats.duplicates_total) == (1, 2)
    collector.service.tsdb.wait_until_drained(10)
    store = collector.service.api_context.timeseries
    assert len(store.query("campus_health", "cpu_pct", {"device": DEVICE}, start=0)) == 1


def test_the_collector_asks_for_no_more_unacknowledged_messages_than_it_can_queue(
    collector_factory: CollectorFactory,
) -> None:
    # Beyond its queue, paho's thread would block handing a message over instead of reading
    # the socket and sending the acknowledgements of stored batches
    # (tests/wire/test_mqtt_flow_control.py shows the broker keeping to it).
    collector = collector_factory(max_pending_messages=300)
    assert collector.service.ingestor.connection.receive_maximum == 300


def test_messages_of_a_batch_being_stored_count_as_waiting_until_handled(
    mosquitto: MosquittoBroker, collector_factory: CollectorFactory
) -> None:
    """``pending`` (and its gauge) counts the batch in hand too: a batch that takes long
    (a slow or restarting database) must not read as nothing waiting; ``wait_idle`` says
    when everything received has been stored, acknowledged and evaluated."""
    collector = collector_factory()
    ingestor = collector.service.ingestor
    entered, release = threading.Event(), threading.Event()

    class SlowSink:
        name = "slow"

        def handle(self, session: Any, batch: Any, context: Any) -> None:
            entered.set()
            release.wait(30)

    ingestor.sinks.append(SlowSink())
    for n in range(3):
        message = HealthMessage(device_id=f"{DEVICE}-{n}", site=SITE, cpu_pct=40.0)
        publish(mosquitto, f"cw/v1/{SITE}/{DEVICE}-{n}/health", encode_message(message))
    try:
        assert entered.wait(10)
        wait_until(lambda: ingestor.stats.received_total + ingestor.pending >= 3)
        assert ingestor.pending >= 1
        assert not ingestor.wait_idle(0.05)
        gauge = collector.api.get("/metrics").text
        assert "campuswatch_ingest_queue_messages 0.0" not in gauge
    finally:
        release.set()
    assert ingestor.wait_idle(10)
    assert (ingestor.pending, ingestor.stats.stored_total) == (0, 3)


def test_collector_restart_loses_nothing_published_while_it_was_down(
    mosquitto: MosquittoBroker, collector_factory: CollectorFactory
) -> None:
    first = collector_factory(collector_id="restart-test")
    first.service.stop()
    ids = []
    for n in range(20):
        message = HealthMessage(device_id=DEVICE, site=SITE, uptime_s=float(n))
        ids.append(message.id)
        publish(mosquitto, f"cw/v1/{SITE}/{DEVICE}/health", encode_message(message))
    second = collector_factory(
        collector_id="restart-test", data_dir=first.service.settings.data_dir
    )
    stats = second.service.ingestor.stats
    wait_until(lambda: stats.stored_total >= 20)
    with second.service.sessions() as session:
        stored = session.scalar(
            select(func.count())
            .select_from(ProcessedMessage)
            .where(ProcessedMessage.message_id.in_(ids))
        )
    assert stored == 20


@pytest.mark.e2e
def test_series_reach_victoriametrics(
    mosquitto: MosquittoBroker, collector_factory: CollectorFactory, victoriametrics: Any
) -> None:
    port = victoriametrics.url.rsplit(":", 1)[1]
    collector = collector_factory(tsdb=f"victoriametrics://127.0.0.1:{port}")
    for topic, payload in lab_pc_messages():
        publish(mosquitto, topic, payload)
    wait_until(lambda: collector.service.ingestor.stats.stored_total >= 4)
    assert collector.service.tsdb.wait_until_drained(20)
    # Samples younger than VictoriaMetrics' -search.latencyOffset are not yet visible.
    exported = wait_until(
        lambda: victoriametrics.export('campus_av_sig_age_hours{device="pc-lab1-07"}')
    )
    assert [series["values"] for series in exported] == [[5.0]]


@pytest.mark.e2e
def test_register_on_postgresql(
    mosquitto: MosquittoBroker, collector_factory: CollectorFactory, fresh_postgres_url: str
) -> None:
    collector = collector_factory(db=fresh_postgres_url)
    for topic, payload in lab_pc_messages():
        publish(mosquitto, topic, payload)
    wait_until(lambda: collector.service.ingestor.stats.stored_total >= 4)
    assets = collector.get("/api/v1/assets", search="LAB1-PC07")
    assert assets["total"] == 1


def test_unique_ids_even_for_identical_bodies() -> None:
    assert new_message_id() != new_message_id()
