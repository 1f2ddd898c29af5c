"""A school's edge broker bridged to the district broker: two real Mosquitto processes.

The district broker is what ``campuswatch broker config`` writes (TLS, passwords, ACL) with an
``edge-school-a`` login from ``broker add-edge``; the edge is what ``broker config
--bridge-to`` writes. The uplink is cut by stopping the district broker and restarting it on
the same port with the same persistence folder.
"""

from __future__ import annotations

import os
import pwd
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from typer.testing import CliRunner

from campuswatch.collector.broker.cli import app
from campuswatch.collector.broker.config import (
    BrokerConfigOptions,
    BrokerConfigResult,
    EdgeOptions,
    write_broker_config,
)
from campuswatch.collector.broker.credentials import BrokerCredentials
from campuswatch.wire.mqtt import BrokerAddress, MqttConnection, ReceivedMessage
from campuswatch.wire.topics import build_topic
from tests.support import required
from tests.support.mosquitto import MOSQUITTO, MessageCapture
from tests.support.ports import free_port, wait_for_port

pytestmark = pytest.mark.e2e
SITE_A, SITE_B = "school-a", "school-b"
OUTAGE_MESSAGES = 300


@dataclass
class Broker:
    """One generated Mosquitto configuration, started and stopped as a process."""

    config: BrokerConfigResult
    plain_port: int
    log: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def directory(self) -> Path:
        return self.config.config_file.parent

    def start(self) -> None:
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [MOSQUITTO, "-c", str(self.config.config_file)], stdout=log, stderr=log
            )
        wait_for_port(self.plain_port)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()  # Mosquitto saves its persistence file on SIGTERM
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def client(
        self,
        username: str,
        password: str,
        capture: MessageCapture | None = None,
        *,
        durable: bool = False,
        on_published: PublishCounter | None = None,
    ) -> MqttConnection:
        connection = MqttConnection(
            f"test-{username}-{free_port()}",
            BrokerAddress("127.0.0.1", self.plain_port, False),
            username=username,
            password=password,
            on_message=capture,
            reconnect_min_s=0.2,
            reconnect_max_s=1,
            clean_start=not durable,
            session_expiry_s=3600 if durable else 0,
            on_published=on_published,
        )
        return connection


@dataclass
class PublishCounter:
    """Counts the PUBACKs a publisher has received (the broker holds those messages)."""

    count: int = 0
    condition: threading.Condition = field(default_factory=threading.Condition)

    def __call__(self, mid: int) -> None:
        with self.condition:
            self.count += 1
            self.condition.notify_all()

    def wait_for(self, count: int, timeout_s: float = 30.0) -> None:
        with self.condition:
            reached = self.condition.wait_for(lambda: self.count >= count, timeout_s)
        assert reached, f"only {self.count} of {count} publications acknowledged"


@dataclass
class School:
    district: Broker
    edge: Broker
    device_password: str

    def collector(self, capture: MessageCapture) -> MqttConnection:
        """The district's collector login, with a session that outlives a broker restart."""
        password = self.district.config.collector_password_file.read_text().strip()
        connection = self.district.client("collector", password, capture, durable=True)
        connection.subscribe("cw/v1/#", qos=1)
        return _started(connection)

    def device(
        self, capture: MessageCapture | None = None, counter: PublishCounter | None = None
    ) -> MqttConnection:
        """pc-1 of school A, logged in to its school's edge broker."""
        connection = self.edge.client("pc-1", self.device_password, capture, on_published=counter)
        if capture is not None:
            connection.subscribe(build_topic(SITE_A, "pc-1", "cmd"), qos=1)
        return _started(connection)


def _started(connection: MqttConnection) -> MqttConnection:
    connection.start()
    assert connection.wait_connected(15), f"could not connect: {connection.last_error}"
    return connection


def _generate(
    directory: Path, *, edge: EdgeOptions | None = None
) -> tuple[BrokerConfigResult, int]:
    plain_port = free_port()
    result = write_broker_config(
        BrokerConfigOptions(
            out_dir=directory,
            hostnames=("localhost", "127.0.0.1"),
            listen_port=free_port(),
            listen_address="127.0.0.1",
            plain_port=plain_port,
            run_as_user=pwd.getpwuid(os.getuid()).pw_name,
            edge=edge,
        )
    )
    return result, plain_port


@pytest.fixture
def school(tmp_path: Path) -> Iterator[School]:
    required.program("mosquitto", "mosquitto")
    district_config, district_plain = _generate(tmp_path / "district")
    district = Broker(district_config, district_plain, tmp_path / "district.log")
    # The district issues the edge's login, as an administrator would.
    password_file = tmp_path / "edge-school-a.password"
    issued = CliRunner().invoke(
        app,
        ["add-edge", "--dir", str(district.directory), "--site", SITE_A,
         "--password-file", str(password_file)],
    )  # fmt: skip
    assert issued.exit_code == 0, issued.output
    assert oct(password_file.stat().st_mode & 0o777) == "0o600"
    tls_port = district_config.config_file.read_text().split("\nlistener ")[1].split(" ")[0]
    edge_config, edge_plain = _generate(
        tmp_path / "edge",
        edge=EdgeOptions(
            bridge_to=f"mqtts://localhost:{tls_port}",
            site=SITE_A,
            district_ca=district_config.ca_file,
            password_file=password_file,
            restart_timeout_s=(1, 2),
        ),
    )
    edge = Broker(edge_config, edge_plain, tmp_path / "edge.log")
    device_password = BrokerCredentials(edge.directory).add_device(SITE_A, "pc-1")
    district.start()
    edge.start()
    try:
        yield School(district, edge, device_password)
    finally:
        edge.stop()
        district.stop()


def _payloads(messages: list[ReceivedMessage], topic: str) -> list[str]:
    return [m.payload.decode() for m in messages if m.topic == topic]


def test_edge_queues_an_uplink_outage_and_delivers_everything_in_order(school: School) -> None:
    topic = build_topic(SITE_A, "pc-1", "health")
    at_district, at_device, acked = MessageCapture(), MessageCapture(), PublishCounter()
    collector = school.collector(at_district)
    device = school.device(at_device, acked)
    try:
        # The bridge works both ways: up for the school's messages, down for its commands.
        # (Retried until the bridge has connected and subscribed on the district.)
        command = build_topic(SITE_A, "pc-1", "cmd")
        sent = 0
        while not _payloads(at_district.messages, topic):
            sent += 1
            assert device.publish(topic, b"before") is not None
            acked.wait_for(sent)
            try:
                at_district.wait_for(lambda seen: _payloads(seen, topic), timeout_s=2)
            except AssertionError:
                assert sent < 10, "the edge never bridged a message to the district"
        for attempt in range(10):
            assert collector.publish(command, b"rescan") is not None
            try:
                at_device.wait_for(lambda seen: any(m.topic == command for m in seen), 2)
                break
            except AssertionError:
                assert attempt < 9, "commands never came down the bridge"

        school.district.stop()  # the uplink is gone
        for number in range(OUTAGE_MESSAGES):
            assert device.publish(topic, f"{number:05d}".encode()) is not None
        acked.wait_for(sent + OUTAGE_MESSAGES)  # the edge holds them all

        school.district.start()  # same port, same persistence folder
        outage = [f"{number:05d}" for number in range(OUTAGE_MESSAGES)]

        def all_arrived(seen: list[ReceivedMessage]) -> bool:
            return set(outage) <= set(_payloads(seen, topic))

        at_district.wait_for(all_arrived, timeout_s=45)
        received = [p for p in _payloads(at_district.messages, topic) if p != "before"]
        assert len(set(received)) == OUTAGE_MESSAGES
        # QoS 1 may repeat a message, never reorder the first copies.
        assert list(dict.fromkeys(received)) == outage
    finally:
        device.stop()
        collector.stop()


def test_district_acl_keeps_an_edge_to_its_own_school(school: School) -> None:
    """A compromised edge holds its district login: anything it sends outside its own
    school (another school's topics, or commands) is dropped by the district broker."""
    login = (school.district.directory.parent / "edge-school-a.password").read_text().split()
    at_district = MessageCapture()
    collector = school.collector(at_district)
    rogue = _started(school.district.client(login[0], login[1]))
    try:
        forbidden = [
            build_topic(SITE_B, "pc-9", "health"),
            build_topic(SITE_A, "pc-1", "cmd"),
            build_topic(SITE_B, "pc-9", "cmd"),
        ]
        for topic in forbidden:
            assert rogue.publish(topic, b"forged") is not None
        # One connection delivers in order: once this arrives, the others would have too.
        marker = build_topic(SITE_A, "pc-1", "health")
        assert rogue.publish(marker, b"own school") is not None
        seen = at_district.wait_for(lambda got: any(m.topic == marker for m in got))
        assert not [m.topic for m in seen if m.payload == b"forged"]
    finally:
        rogue.stop()
        collector.stop()


# --- the generated files, without running Mosquitto --------------------------------------


@pytest.fixture
def edge_inputs(tmp_path: Path) -> EdgeOptions:
    district = BrokerCredentials(tmp_path / "district")
    username, password = district.add_edge(SITE_A)
    password_file = tmp_path / "edge.password"
    password_file.write_text(f"{username} {password}\n")
    ca = tmp_path / "district-ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n")
    return EdgeOptions(
        bridge_to="mqtts://district.example.vn:8883",
        site=SITE_A,
        district_ca=ca,
        password_file=password_file,
    )


def test_edge_account_may_write_its_school_and_read_its_commands(tmp_path: Path) -> None:
    store = BrokerCredentials(tmp_path)
    username, _ = store.add_edge(SITE_A)
    assert username == "edge-school-a"
    acl = (tmp_path / "acl").read_text()
    block = acl.split("user edge-school-a\n")[1].split("\n\n")[0].splitlines()
    assert "topic read cw/v1/school-a/+/cmd" in block
    assert "topic write cw/v1/school-a/+/health" in block
    assert not [line for line in block if "cmd" in line and "write" in line]
    assert not [line for line in block if "school-a" not in line]
    # A device cannot take the edge's name, nor an edge a device's.
    with pytest.raises(ValueError, match="edge account"):
        store.add_device(SITE_A, "edge-school-a")
    store.add_device(SITE_B, "edge-school-b")
    with pytest.raises(ValueError, match="already a device account"):
        store.add_edge(SITE_B)


def test_edge_config_bridges_one_school_with_a_queue_for_an_hour(
    tmp_path: Path, edge_inputs: EdgeOptions
) -> None:
    result, _ = _generate(tmp_path / "edge", edge=edge_inputs)
    text = result.config_file.read_text()
    lines = text.splitlines()
    assert oct(result.config_file.stat().st_mode & 0o777) == "0o640"  # it holds a password
    assert "max_queued_messages 180000" in lines  # 500 devices x 6/min x 60 min
    # The district holds what edges flush faster than a collector stores (measured: 100,000
    # lost a quarter of one edge's hour).
    district, _ = _generate(tmp_path / "district")
    assert "max_queued_messages 1000000" in district.config_file.read_text().splitlines()
    for line in (
        "connection district",
        "address district.example.vn:8883",
        "remote_username edge-school-a",
        "cleansession false",
        "persistence true",
        "try_private true",
        "topic cw/v1/school-a/+/health out 1",
        "topic cw/v1/school-a/+/cmd in 1",
    ):
        assert line in lines, line
    assert not [line for line in lines if line.startswith("topic") and "cmd out" in line]
    assert (tmp_path / "edge" / "district-ca.pem").read_text().startswith("-----BEGIN")
    # The edge has logins for its own school's devices only.
    with pytest.raises(ValueError, match="edge of site school-a"):
        BrokerCredentials(tmp_path / "edge").add_device(SITE_B, "pc-9")


@pytest.mark.parametrize(
    ("change", "error"),
    [
        ({"bridge_to": "mqtt://district:1883"}, "must use TLS"),
        ({"bridge_to": "mqtts://district:99999"}, "not a TCP port"),
        ({"bridge_to": "mqtts://dis trict:8883"}, "expected mqtts"),
        ({"bridge_to": "mqtts://district:8883\ntopic # out 1"}, "control characters"),
        ({"site": "school a"}, "not a valid identifier"),
        ({"username": "edge\nuser x"}, "not a valid identifier"),
        ({"restart_timeout_s": (0, 5)}, "restart timeouts"),
    ],
)
def test_bad_edge_options_are_refused_before_anything_is_written(
    tmp_path: Path, edge_inputs: EdgeOptions, change: dict[str, object], error: str
) -> None:
    from dataclasses import replace

    from campuswatch.collector.broker.config import BrokerConfigError

    with pytest.raises(BrokerConfigError, match=error):
        _generate(tmp_path / "edge", edge=replace(edge_inputs, **change))  # type: ignore[arg-type]
    assert not (tmp_path / "edge").exists()


def test_a_bridge_block_we_did_not_mean_is_refused(
    tmp_path: Path, edge_inputs: EdgeOptions
) -> None:
    from campuswatch.collector.broker.config import BrokerConfigError, check_mosquitto_conf

    result, _ = _generate(tmp_path / "edge", edge=edge_inputs)
    text = result.config_file.read_text()
    check_mosquitto_conf(text, bridged=True)
    for bad in (
        text + "topic cw/v1/school-b/+/health out 1\n",  # a second school
        text + "topic cw/v1/school-a/+/cmd out 1\n",  # commands up
        text + "topic # both 1\n",
        text.replace("cleansession false", "cleansession true"),
        text + "connection other\n",
        text.replace("remote_password ", "remote_password a b"),
    ):
        with pytest.raises(BrokerConfigError):
            check_mosquitto_conf(bad, bridged=True)
    with pytest.raises(BrokerConfigError):
        check_mosquitto_conf(text)  # a bridge where none was asked for


def test_cli_writes_an_edge_and_names_what_is_missing(
    tmp_path: Path, edge_inputs: EdgeOptions
) -> None:
    out = tmp_path / "edge"
    common = ["config", "--out", str(out), "--hostname", "localhost"]
    bridge = [
        "--bridge-to", edge_inputs.bridge_to, "--site", SITE_A,
        "--bridge-ca", str(edge_inputs.district_ca),
        "--bridge-password-file", str(edge_inputs.password_file),
        "--school-devices", "40", "--bridge-retry-s", "2", "30",
    ]  # fmt: skip
    if os.geteuid() == 0:
        common += ["--run-as", pwd.getpwuid(os.getuid()).pw_name]
    written = CliRunner().invoke(app, [*common, *bridge])
    assert written.exit_code == 0, written.output
    assert "queue 14400 messages (1 h of 40 devices)" in written.output
    lines = (out / "mosquitto.conf").read_text().splitlines()
    assert {"restart_timeout 2 30", "max_queued_messages 14400"} <= set(lines)
    missing = CliRunner().invoke(app, [*common, *bridge[:4]])
    assert missing.exit_code != 0
    assert "--bridge-ca" in missing.output
    stray = CliRunner().invoke(app, [*common, "--site", SITE_A])
    assert stray.exit_code != 0
    assert "go with --bridge-to" in stray.output
