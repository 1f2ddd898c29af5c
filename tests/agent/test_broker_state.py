"""An unreachable broker is said out loud: once per change of state, naming broker and reason.

Issue 18 item 2: refused connections, unknown hosts, TLS and authentication failures used to
leave no log line at all while messages queued silently; and ``agent once`` did not say.
"""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import pytest

from campuswatch.wire.mqtt import MqttConnection, TlsOptions, parse_broker_url
from tests.support import required
from tests.support.mosquitto import MosquittoBroker
from tests.support.ports import free_port
from tests.support.waiting import wait_until

CAMPUSWATCH = [sys.executable, "-m", "campuswatch"]


def _failing_connection(url: str, **options: object) -> MqttConnection:
    return MqttConnection(
        f"test-loud-{free_port()}",
        parse_broker_url(url),
        reconnect_min_s=1.0,
        reconnect_max_s=1.0,
        **options,  # type: ignore[arg-type]
    )


def _warnings_about(caplog: pytest.LogCaptureFixture, broker: str) -> list[str]:
    return [
        record.getMessage()
        for record in caplog.records
        if record.levelno >= logging.WARNING and broker in record.getMessage()
    ]


def _auth_broker(tmp_path: Path) -> MosquittoBroker:
    required.program("mosquitto", "mosquitto")
    required.program("mosquitto_passwd", "mosquitto")
    passwords = tmp_path / "passwords"
    subprocess.run(
        ["mosquitto_passwd", "-b", "-c", str(passwords), "agent", "right"],
        check=True,
        capture_output=True,
    )
    broker = MosquittoBroker(
        tmp_path, free_port(), extra_config=f"allow_anonymous false\npassword_file {passwords}"
    )
    broker.start()
    return broker


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        pytest.param("mqtt://127.0.0.1:{closed_port}", "connection refused", id="refused"),
        pytest.param("mqtt://broker.invalid:1883", "unknown host", id="unknown-host"),
    ],
)
def test_unreachable_broker_is_logged_once_with_its_reason(
    caplog: pytest.LogCaptureFixture, url: str, reason: str
) -> None:
    url = url.format(closed_port=free_port())
    connection = _failing_connection(url)
    caplog.set_level(logging.DEBUG)
    connection.start()
    try:
        # Several attempts fail; the state changed once, so it is said once.
        wait_until(lambda: connection.failed_attempts >= 3)
    finally:
        connection.stop()
    broker = str(parse_broker_url(url))
    said = _warnings_about(caplog, broker)
    assert len(said) == 1, said
    assert reason in said[0]
    assert connection.last_error is not None and reason in connection.last_error


def test_tls_failure_is_logged_once(caplog: pytest.LogCaptureFixture, tmp_path: Path) -> None:
    """A broker whose certificate the agent does not trust (self-signed, no CA configured)."""
    required.program("mosquitto", "mosquitto")
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
         "-subj", "/CN=127.0.0.1", "-keyout", "key.pem", "-out", "cert.pem"],
        cwd=tmp_path, check=True, capture_output=True,
    )  # fmt: skip
    broker = MosquittoBroker(
        tmp_path,
        free_port(),
        extra_config=f"certfile {tmp_path / 'cert.pem'}\nkeyfile {tmp_path / 'key.pem'}",
    )
    broker.start()
    url = f"mqtts://127.0.0.1:{broker.port}"
    connection = _failing_connection(url, tls=TlsOptions())
    caplog.set_level(logging.DEBUG)
    connection.start()
    try:
        wait_until(lambda: connection.failed_attempts >= 3)
    finally:
        connection.stop()
        broker.stop()
    said = _warnings_about(caplog, url)
    assert len(said) == 1, said
    assert "TLS certificate not accepted" in said[0]


def test_refused_login_is_logged_once(caplog: pytest.LogCaptureFixture, tmp_path: Path) -> None:
    broker = _auth_broker(tmp_path)
    try:
        connection = _failing_connection(broker.url, username="agent", password="wrong")
        caplog.set_level(logging.DEBUG)
        connection.start()
        try:
            wait_until(lambda: connection.failed_attempts >= 3)
        finally:
            connection.stop()
        said = _warnings_about(caplog, broker.url)
        assert len(said) == 1, said
        assert "refused" in said[0]
        assert "not authorized" in said[0].lower() or "password" in said[0].lower()
    finally:
        broker.stop()


def test_state_changes_are_each_said_once(caplog: pytest.LogCaptureFixture, tmp_path: Path) -> None:
    """Down, up, down again: two "unreachable" lines and one "connected", not one per retry."""
    required.program("mosquitto", "mosquitto")
    broker = MosquittoBroker(tmp_path, free_port())
    connection = _failing_connection(broker.url)
    caplog.set_level(logging.DEBUG)
    connection.start()
    try:
        wait_until(lambda: connection.failed_attempts >= 2)
        broker.start()
        wait_until(lambda: connection.connected)
        broker.stop()
        wait_until(lambda: not connection.connected)
        attempts = connection.failed_attempts
        wait_until(lambda: connection.failed_attempts >= attempts + 2)
    finally:
        connection.stop()
        broker.stop()
    said = _warnings_about(caplog, broker.url)
    assert len([line for line in said if "connection refused" in line]) == 2, said


def test_once_says_the_broker_is_unreachable(tmp_path: Path) -> None:
    config = tmp_path / "agent.toml"
    port = free_port()
    config.write_text(
        f'site = "school-a"\nstate_dir = "{tmp_path / "state"}"\n'
        f'[mqtt]\nbroker = "mqtt://127.0.0.1:{port}"\n'
        "[net]\ndns_names = []\nhttp_targets = []\nping_count = 1\ntimeout_s = 1\n",
        encoding="utf-8",
    )
    result = subprocess.run(
        [*CAMPUSWATCH, "agent", "once", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert f"broker: mqtt://127.0.0.1:{port} unreachable (connection refused)" in result.stdout


def test_once_says_the_broker_is_connected(tmp_path: Path, mosquitto: MosquittoBroker) -> None:
    config = tmp_path / "agent.toml"
    config.write_text(
        f'site = "school-a"\nstate_dir = "{tmp_path / "state"}"\n'
        f'[mqtt]\nbroker = "{mosquitto.url}"\n'
        "[net]\ndns_names = []\nhttp_targets = []\nping_count = 1\ntimeout_s = 1\n",
        encoding="utf-8",
    )
    result = subprocess.run(
        [*CAMPUSWATCH, "agent", "once", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert f"broker: {mosquitto.url} reachable" in result.stdout


def test_once_with_an_unwritable_state_dir_prints_one_line(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.write_text("a file where the state dir should be", encoding="utf-8")
    config = tmp_path / "agent.toml"
    config.write_text(
        f'site = "school-a"\nstate_dir = "{state}"\n'
        "[net]\ndns_names = []\nhttp_targets = []\nping_count = 1\ntimeout_s = 1\n",
        encoding="utf-8",
    )
    result = subprocess.run(
        [*CAMPUSWATCH, "agent", "once", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ") and str(state) in lines[0]
