"""A collector killed with SIGKILL mid-stream loses nothing and stores nothing twice."""

from __future__ import annotations

import functools
import signal
import sqlite3
import subprocess
from datetime import timedelta
from pathlib import Path

import pytest

from campuswatch.localports import free_port
from campuswatch.wire import HealthMessage, encode_message
from campuswatch.wire.ids import utc_now
from campuswatch.wire.mqtt import MqttConnection
from tests.support.collector_process import start_collector_process, wait_until_healthy
from tests.support.mosquitto import MosquittoBroker
from tests.support.waiting import wait_until

MESSAGES = 3000


def start_collector(broker: MosquittoBroker, data_dir: Path, port: int) -> subprocess.Popen[bytes]:
    return start_collector_process(broker.url, data_dir, port, collector_id="kill-test")


def count(db: Path, sql: str) -> int:
    with sqlite3.connect(db) as connection:
        return int(connection.execute(sql).fetchone()[0])


@pytest.mark.slow
def test_sigkill_mid_stream_then_restart_stores_every_message_once(
    mosquitto: MosquittoBroker, tmp_path: Path
) -> None:
    data_dir = tmp_path / "data"
    port = free_port()
    collector = start_collector(mosquitto, data_dir, port)
    wait_until_healthy(port)
    acked: list[int] = []
    publisher = MqttConnection(
        "kill-test-pub", mosquitto.address, max_inflight=200, on_published=acked.append
    )
    publisher.start()
    assert publisher.wait_connected(10)
    ids = []
    first = utc_now() - timedelta(minutes=1)
    for n in range(MESSAGES):
        device = f"pc-{n % 100:03d}"
        # One millisecond apart: the store keeps one sample per series and millisecond, and
        # this loop makes messages far faster than any device would.
        at = first + timedelta(milliseconds=n)
        message = HealthMessage(device_id=device, site="school-k", uptime_s=float(n), ts=at)
        ids.append(message.id)
        topic, payload = f"cw/v1/school-k/{device}/health", encode_message(message)
        wait_until(functools.partial(publisher.publish, topic, payload))  # None: not connected
        if n == MESSAGES // 3:
            collector.send_signal(signal.SIGKILL)  # no goodbye, no flush
            collector.wait(10)
    # Every message with the broker before the publisher leaves (stop drops what is in flight).
    wait_until(lambda: len(acked) >= MESSAGES, 120, message="the broker acknowledged every message")
    publisher.stop()
    collector = start_collector(mosquitto, data_dir, port)
    register = data_dir / "register.db"
    series = data_dir / "timeseries.db"
    samples_sql = (
        "SELECT COUNT(*) FROM samples s JOIN series r ON r.id = s.series_id "
        "WHERE r.measurement = 'campus_health' AND r.field = 'uptime_s'"
    )
    try:
        stored = wait_until(
            lambda: (
                (n := count(register, "SELECT COUNT(*) FROM processed_messages")) >= MESSAGES and n
            ),
            120,
            interval_s=0.5,
            message="every message in the register",
        )
        assert stored == MESSAGES
        # Every acked point is written or spooled; a spooled one reaches the store when the
        # buffer drains it, which a loaded machine can delay: wait for it, not a fixed time.
        wait_until(
            lambda: count(series, samples_sql) >= MESSAGES,
            120,
            interval_s=0.5,
            message="every sample in the time series",
        )
    finally:
        collector.send_signal(signal.SIGTERM)
        collector.wait(30)
    # Exactly once in the time series too: one uptime sample per message.
    assert count(series, samples_sql) == MESSAGES
