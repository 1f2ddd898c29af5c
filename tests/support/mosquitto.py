"""A private Mosquitto per test on a free port, which tests can stop and restart."""

from __future__ import annotations

import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from campuswatch.wire.mqtt import BrokerAddress, MqttConnection, ReceivedMessage
from tests.support import required
from tests.support.ports import free_port, wait_for_port

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"


@dataclass
class MosquittoBroker:
    workdir: Path
    port: int
    extra_config: str = ""
    persistent: bool = False
    """Keep sessions and queued messages across restarts (mosquitto's persistence file)."""
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    @property
    def address(self) -> BrokerAddress:
        return BrokerAddress("127.0.0.1", self.port, False)

    def start(self) -> None:
        config = self.workdir / "mosquitto.conf"
        config.write_text(
            f"listener {self.port} 127.0.0.1\n"
            "allow_anonymous true\n"
            # Started as root, mosquitto would switch to its own user and fail to write its
            # persistence file in the test's temporary folder.
            "user root\n"
            f"persistence {'true' if self.persistent else 'false'}\n"
            f"persistence_location {self.workdir}/\n"
            "max_queued_messages 100000\n"
            f"{self.extra_config}\n",
            encoding="utf-8",
        )
        log = (self.workdir / "mosquitto.log").open("ab")
        self.process = subprocess.Popen([MOSQUITTO, "-c", str(config)], stdout=log, stderr=log)
        wait_for_port(self.port)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[MosquittoBroker]:
    required.program("mosquitto", "mosquitto")
    broker = MosquittoBroker(tmp_path, free_port())
    broker.start()
    yield broker
    broker.stop()


@dataclass
class MessageCapture:
    """Collects what arrives on a subscription, for assertions."""

    messages: list[ReceivedMessage] = field(default_factory=list)
    condition: threading.Condition = field(default_factory=threading.Condition)

    def __call__(self, message: ReceivedMessage) -> None:
        with self.condition:
            self.messages.append(message)
            self.condition.notify_all()

    def wait_for(self, predicate: object, timeout_s: float = 20.0) -> list[ReceivedMessage]:
        """Wait until ``predicate(messages)`` is true; return the matching messages."""
        assert callable(predicate)
        deadline = time.monotonic() + timeout_s
        with self.condition:
            while True:
                matched = predicate(self.messages)
                if matched:
                    return list(self.messages)
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    topics = sorted({m.topic for m in self.messages})
                    raise AssertionError(f"condition not met in {timeout_s} s; saw {topics}")
                self.condition.wait(remaining)

    def on(self, kind: str) -> list[ReceivedMessage]:
        with self.condition:
            return [m for m in self.messages if m.topic.endswith(f"/{kind}")]


def subscribe(
    broker: MosquittoBroker, topic_filter: str = "cw/v1/#", *, durable: bool = False
) -> tuple[MqttConnection, MessageCapture]:
    """A test subscriber; ``durable`` keeps its session so nothing is missed over a restart."""
    capture = MessageCapture()
    connection = MqttConnection(
        f"test-sub-{free_port()}",
        broker.address,
        on_message=capture,
        reconnect_max_s=2,
        clean_start=not durable,
        session_expiry_s=3600 if durable else 0,
    )
    connection.subscribe(topic_filter, qos=1)
    connection.start()
    assert connection.wait_connected(10), "test subscriber could not connect"
    return connection, capture


def _require_mosquitto() -> None:
    required.program("mosquitto", "mosquitto")


def password_broker(workdir: Path, username: str, password: str) -> MosquittoBroker:
    """A started Mosquitto that refuses anonymous clients and knows one login."""
    _require_mosquitto()
    required.program("mosquitto_passwd", "mosquitto")
    passwords = workdir / "passwords"
    subprocess.run(
        ["mosquitto_passwd", "-b", "-c", str(passwords), username, password],
        check=True,
        capture_output=True,
    )
    broker = MosquittoBroker(
        workdir, free_port(), extra_config=f"allow_anonymous false\npassword_file {passwords}"
    )
    broker.start()
    return broker


def self_signed_tls_broker(workdir: Path) -> MosquittoBroker:
    """A started Mosquitto speaking only TLS, with a self-signed certificate for 127.0.0.1
    (``workdir/cert.pem``) that no client trusts unless given it as its CA."""
    _require_mosquitto()
    required.program("openssl", "openssl")
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
         "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
         "-keyout", "key.pem", "-out", "cert.pem"],
        cwd=workdir, check=True, capture_output=True,
    )  # fmt: skip
    broker = MosquittoBroker(
        workdir,
        free_port(),
        extra_config=f"certfile {workdir / 'cert.pem'}\nkeyfile {workdir / 'key.pem'}",
    )
    broker.start()
    return broker
