"""The register's PostgreSQL restarts while messages stream in: nothing lost, nothing twice.

A message is acknowledged to the broker only once it is stored, so while the database is
away the collector must keep the batch it could not store and try it again, not drop it
(MQTT redelivers an unacknowledged message only after a reconnect, and the broker stops
sending once its in-flight window is full). The outage must show on ``/healthz`` and
``/metrics``. The server is a private cluster: the shared one on 5432 is never restarted.
A batch whose connection dies between the sinks and the commit is tried again, and the
rules still see each of its messages once.
"""

from __future__ import annotations

import functools
import signal
import sqlite3
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from campuswatch.collector.db.models import ProcessedMessage
from campuswatch.collector.ingest import BatchContext
from campuswatch.localports import free_port
from campuswatch.wire import HealthMessage, encode_message
from campuswatch.wire.codec import DecodedMessage
from campuswatch.wire.messages import AvMessage, StateMessage
from campuswatch.wire.mqtt import MqttConnection
from tests.collector.conftest import CollectorFactory
from tests.collector.test_ingest_e2e import DEVICE, lab_pc_messages, publish
from tests.support.collector_process import start_collector_process
from tests.support.mosquitto import MosquittoBroker
from tests.support.postgres import PrivatePostgres
from tests.support.waiting import wait_until

MESSAGES = 2400
RATE_PER_S = 150
DEVICES = 100
SITE = "school-pg"


def start_collector(
    broker: MosquittoBroker, db_url: str, data_dir: Path, port: int, log: Path
) -> subprocess.Popen[bytes]:
    return start_collector_process(
        broker.url, data_dir, port, collector_id="pg-outage-test", db_url=db_url, log=log
    )


class Publisher(threading.Thread):
    """QoS 1 health reports at a steady rate, as a school's agents would send them."""

    def __init__(self, broker: MosquittoBroker) -> None:
        super().__init__(name="publisher", daemon=True)
        self.connection = MqttConnection("pg-outage-pub", broker.address, max_inflight=200)
        self.published = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.connection.start()
            assert self.connection.wait_connected(10), "publisher could not connect"
            started = time.monotonic()
            for n in range(MESSAGES):
                device = f"pc-{n % DEVICES:03d}"
                message = HealthMessage(device_id=device, site=SITE, uptime_s=float(n))
                topic = f"cw/v1/{SITE}/{device}/health"
                # A message id once paho has taken it; None while not connected.
                send = functools.partial(self.connection.publish, topic, encode_message(message))
                wait_until(send, message="the publisher connected to the broker")
                self.published = n + 1
                ahead = started + self.published / RATE_PER_S - time.monotonic()
                if ahead > 0:
                    time.sleep(ahead)  # the publishing rate: part of the scenario
        except BaseException as exc:  # reported by the test, not lost in a thread
            self.error = exc


def wait_for(what: str, predicate: Callable[[], Any], timeout_s: float = 120.0) -> Any:
    return wait_until(predicate, timeout_s, message=what, interval_s=0.2)


def stored(cluster: PrivatePostgres, devices: str = "pc-%") -> int:
    with cluster.connect() as connection:  # type: ignore[attr-defined]
        row = connection.execute(
            "SELECT COUNT(*) FROM processed_messages WHERE device_id LIKE %s", (devices,)
        ).fetchone()
    return int(row[0])


def metric(text: str, name: str) -> float:
    """The value of the first sample of ``name`` (with labels: exactly those)."""
    for line in text.splitlines():
        if line.startswith(name + " ") or ("{" not in name and line.startswith(name + "{")):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} not in /metrics")


@pytest.mark.slow
@pytest.mark.e2e
@pytest.mark.parametrize("stop_mode", ["fast", "immediate"])
def test_postgres_restart_mid_stream_loses_nothing_and_stores_nothing_twice(
    mosquitto: MosquittoBroker, private_postgres: PrivatePostgres, tmp_path: Path, stop_mode: str
) -> None:
    data_dir = tmp_path / "data"
    port = free_port()
    log = tmp_path / "collector.log"
    collector = start_collector(mosquitto, private_postgres.url, data_dir, port, log)
    api = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30)
    publisher = Publisher(mosquitto)

    def alive() -> None:
        assert collector.poll() is None, f"collector died:\n{log.read_text()[-4000:]}"

    try:
        # Subscribed (broker ok) before anything is published, and the database up.
        wait_for("/healthz ok", lambda: api.get("/healthz").status_code == 200)
        publisher.start()
        wait_for("a quarter stored", lambda: stored(private_postgres) >= MESSAGES // 4)

        private_postgres.stop(stop_mode)
        published_at_stop = publisher.published
        # The outage is visible: the health check names the database and ingest's retries.
        health = wait_for(
            "/healthz to report the outage",
            lambda: (
                (response := api.get("/healthz")).status_code == 503
                and response.json()["checks"]["ingest"] != "ok"
                and response.json()
            ),
        )
        assert health["status"] == "degraded"
        assert health["checks"]["database"].startswith("error")
        assert "retrying" in health["checks"]["ingest"]
        metrics = api.get("/metrics")
        assert metrics.status_code == 200, "/metrics must not fail with the database"
        assert metric(metrics.text, "campuswatch_ingest_store_failing") == 1
        assert metric(metrics.text, "campuswatch_ingest_store_failures_total") >= 1
        # Messages keep arriving while the database is away.
        wait_for(
            "more messages published during the outage",
            lambda: publisher.published >= published_at_stop + 2 * RATE_PER_S,
        )
        alive()

        private_postgres.start()
        publisher.join(120)
        assert publisher.error is None, publisher.error
        assert publisher.published == MESSAGES
        wait_for("every message stored", lambda: stored(private_postgres) >= MESSAGES)
        wait_for("/healthz ok again", lambda: api.get("/healthz").status_code == 200)
        alive()
        metrics = api.get("/metrics")
        assert metric(metrics.text, "campuswatch_ingest_store_failing") == 0
        stored_metric = 'campuswatch_ingest_messages_stored_total{kind="health"}'
        assert metric(metrics.text, stored_metric) == MESSAGES  # a retried batch counts once
        # Processed past the point: a marker sent after the last report is stored after
        # anything still on its way to the collector (a duplicate would be in the counts).
        marker = StateMessage(device_id="marker", site=f"{SITE}-marker", status="online")
        topic = f"cw/v1/{SITE}-marker/marker/state"
        assert publisher.connection.publish(topic, encode_message(marker)) is not None
        wait_for("the marker stored", lambda: stored(private_postgres, "marker") == 1)
        assert stored(private_postgres) == MESSAGES
        with private_postgres.connect() as connection:  # type: ignore[attr-defined]
            devices = connection.execute(
                "SELECT COUNT(*) FROM devices WHERE site_id = %s AND last_seen IS NOT NULL",
                (SITE,),
            ).fetchone()
        assert devices[0] == DEVICES
    finally:
        publisher.connection.stop()
        api.close()
        collector.send_signal(signal.SIGTERM)
        collector.wait(30)
    # Exactly once in the time series too: one uptime sample per message, every value there.
    with sqlite3.connect(data_dir / "timeseries.db") as series:
        values = [
            row[0]
            for row in series.execute(
                "SELECT s.value FROM samples s JOIN series r ON r.id = s.series_id "
                "WHERE r.measurement = 'campus_health' AND r.field = 'uptime_s'"
            )
        ]
    assert len(values) == MESSAGES
    assert set(values) == {float(n) for n in range(MESSAGES)}


class ConnectionKiller:
    """A last sink that ends its own database session once, on the first batch with an
    ``av`` message: what a server restart does to a transaction between the sinks and the
    commit, so the commit fails after the rules have already looked at the batch."""

    name = "connection-killer"

    def __init__(self) -> None:
        self.killed = 0

    def handle(
        self, session: Session, batch: Sequence[DecodedMessage], context: BatchContext
    ) -> None:
        if self.killed or not any(isinstance(item.message, AvMessage) for item in batch):
            return
        self.killed += 1
        session.execute(text("SELECT pg_terminate_backend(pg_backend_pid())"))


@pytest.mark.e2e
def test_a_batch_whose_connection_dies_before_commit_is_retried_and_its_alert_still_raised(
    mosquitto: MosquittoBroker, collector_factory: CollectorFactory, fresh_postgres_url: str
) -> None:
    collector = collector_factory(db=fresh_postgres_url, alert_group_wait_s=0)
    service = collector.service
    killer = ConnectionKiller()
    service.ingestor.sinks.append(killer)
    messages = lab_pc_messages()  # its Defender has real-time protection off
    for topic, payload in messages:
        publish(mosquitto, topic, payload)
    stats = service.ingestor.stats
    wait_until(lambda: stats.stored_total >= len(messages) and stats.failing_since is None)
    assert killer.killed == 1
    assert stats.store_failures_total >= 1
    # The rules saw the av message once, after the batch was stored, and raised its alert.
    alerts = wait_until(lambda: collector.get("/api/v1/alerts", device_id=DEVICE)["items"])
    assert [alert["rule_title"] for alert in alerts] == ["Real-time protection off"]
    assert service.alerting.engine is not None
    assert service.alerting.engine.stats()["messages_processed"] == len(messages)
    with service.sessions() as session:
        stored = session.scalar(select(func.count()).select_from(ProcessedMessage))
    assert stored == len(messages)
