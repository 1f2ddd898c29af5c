"""The simulator says an unreachable broker out loud, like the agent and the collector do.

Issue 15 item 4: refused connections, unknown hosts, TLS and login failures left the simulator
silent (a debug line per attempt of each of its thousands of connections) while its progress
line counted errors. Now the pool says the broker's state once per change, naming the broker
and the reason, and says when it is connected again.
"""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import pytest

from campuswatch.wire.mqtt import TlsOptions, parse_broker_url
from campuswatch.wire.mqtt_pool import MqttPool
from tests.support import required
from tests.support.mosquitto import (
    MosquittoBroker,
    password_broker,
    self_signed_tls_broker,
)
from tests.support.ports import free_port
from tests.support.waiting import wait_until

CAMPUSWATCH = [sys.executable, "-m", "campuswatch"]


def _pool(url: str, tls: TlsOptions | None = None, clients: int = 3) -> MqttPool:
    pool = MqttPool(parse_broker_url(url), reconnect_min_s=0.2, reconnect_max_s=0.2, tls=tls)
    for number in range(clients):
        pool.add(f"test-sim-{number}")
    return pool


def _said(caplog: pytest.LogCaptureFixture, broker: str, level: int = logging.WARNING) -> list[str]:
    return [
        record.getMessage()
        for record in caplog.records
        if record.levelno >= level and broker in record.getMessage()
    ]


def _failures(caplog: pytest.LogCaptureFixture, url: str) -> list[str]:
    """Run a pool of three clients until each failed several times; what it warned about."""
    pool = _pool(url)
    caplog.set_level(logging.DEBUG)
    pool.start()
    try:
        wait_until(lambda: pool.stats.connect_failures_total >= 9)
    finally:
        pool.stop()
    return _said(caplog, str(parse_broker_url(url)))


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        pytest.param("mqtt://127.0.0.1:{closed_port}", "connection refused", id="refused"),
        pytest.param("mqtt://nonexistent.invalid:1883", "unknown host", id="unknown-host"),
    ],
)
def test_an_unreachable_broker_is_said_once_with_its_reason(
    caplog: pytest.LogCaptureFixture, url: str, reason: str
) -> None:
    said = _failures(caplog, url.format(closed_port=free_port()))
    assert len(said) == 1, said
    assert reason in said[0]


def test_a_refused_login_is_said_once(caplog: pytest.LogCaptureFixture, tmp_path: Path) -> None:
    broker = password_broker(tmp_path, "sim", "right")
    try:
        said = _failures(caplog, f"mqtt://sim:wrong@127.0.0.1:{broker.port}")
    finally:
        broker.stop()
    assert len(said) == 1, said
    assert "refused" in said[0] and "not authorized" in said[0].lower()
    assert "wrong" not in said[0]


def test_an_untrusted_tls_certificate_is_said_once(
    caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    broker = self_signed_tls_broker(tmp_path)
    try:
        said = _failures(caplog, f"mqtts://127.0.0.1:{broker.port}")
    finally:
        broker.stop()
    assert len(said) == 1, said
    assert "TLS certificate not accepted" in said[0]


def test_tls_with_the_brokers_ca_connects(caplog: pytest.LogCaptureFixture, tmp_path: Path) -> None:
    broker = self_signed_tls_broker(tmp_path)
    pool = _pool(f"mqtts://127.0.0.1:{broker.port}", TlsOptions(ca_file=str(tmp_path / "cert.pem")))
    caplog.set_level(logging.INFO)
    pool.start()
    try:
        wait_until(lambda: pool.stats.connected == 3)
        received: list[bytes] = []
        pool.clients[0].subscribe("test/echo")
        pool.clients[0].on_message = lambda client, message: received.append(message.payload)
        # The broker handles a connection's packets in order: its own message coming back
        # proves the subscription is in place.

        def mark() -> None:
            pool.clients[0].publish("test/echo", b"subscribed")

        pool.call_soon(mark)
        wait_until(lambda: received == [b"subscribed"])
        received.clear()

        def send() -> None:
            pool.clients[1].publish("test/echo", b"over tls")

        pool.call_soon(send)
        wait_until(lambda: received == [b"over tls"])
    finally:
        pool.stop()
        broker.stop()
    assert len(_said(caplog, f"mqtts://127.0.0.1:{broker.port}", logging.INFO)) == 1


def test_each_change_of_state_is_said_once(
    caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    """Down, up, down again: the reason twice, "connected" once, the loss once."""
    required.program("mosquitto", "mosquitto")
    broker = MosquittoBroker(tmp_path, free_port())
    pool = _pool(broker.url)
    caplog.set_level(logging.DEBUG)
    pool.start()
    try:
        wait_until(lambda: pool.stats.connect_failures_total >= 6)
        broker.start()
        wait_until(lambda: pool.stats.connected == 3)
        broker.stop()
        wait_until(lambda: pool.stats.connected == 0)
        failures = pool.stats.connect_failures_total
        wait_until(lambda: pool.stats.connect_failures_total >= failures + 6)
    finally:
        pool.stop()
        broker.stop()
    warnings = _said(caplog, broker.url)
    assert len([line for line in warnings if "connection refused" in line]) == 2, warnings
    assert len([line for line in warnings if "lost" in line]) == 1, warnings
    connected = [line for line in _said(caplog, broker.url, logging.INFO) if "connected" in line]
    assert len(connected) == 1, connected


def test_sim_run_says_the_broker_is_unreachable_once(tmp_path: Path) -> None:
    port = free_port()
    result = subprocess.run(
        [*CAMPUSWATCH, "sim", "run", "--broker", f"mqtt://127.0.0.1:{port}",
         "--schools", "1", "--devices", "5", "--duration", "4", "--progress-every", "60"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert "Traceback" not in result.stderr
    about = [line for line in result.stderr.splitlines() if f"127.0.0.1:{port}" in line]
    assert len(about) == 1, result.stderr
    assert "connection refused" in about[0]


def test_sim_run_says_it_connected(tmp_path: Path, mosquitto: MosquittoBroker) -> None:
    result = subprocess.run(
        [*CAMPUSWATCH, "sim", "run", "--broker", mosquitto.url,
         "--schools", "1", "--devices", "5", "--duration", "2", "--progress-every", "60"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    about = [line for line in result.stderr.splitlines() if mosquitto.url in line]
    assert len(about) == 1 and "connected" in about[0], result.stderr


def test_sim_run_over_tls_with_a_ca_file(tmp_path: Path) -> None:
    broker = self_signed_tls_broker(tmp_path)
    try:
        result = subprocess.run(
            [*CAMPUSWATCH, "sim", "run", "--broker", f"mqtts://127.0.0.1:{broker.port}",
             "--ca-file", str(tmp_path / "cert.pem"), "--schools", "1", "--devices", "2",
             "--duration", "2", "--progress-every", "60"],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
    finally:
        broker.stop()
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    assert "connected" in result.stderr and "not accepted" not in result.stderr
