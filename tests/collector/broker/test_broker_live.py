"""The generated configuration against a real Mosquitto: TLS, passwords, ACL, revocation."""

from __future__ import annotations

import json
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from campuswatch.collector.broker.config import BrokerConfigOptions, write_broker_config
from campuswatch.collector.broker.credentials import BrokerCredentials
from campuswatch.collector.broker.passwords import hash_password
from campuswatch.wire.mqtt import BrokerAddress, MqttConnection, TlsOptions
from campuswatch.wire.topics import build_topic
from tests.support import required
from tests.support.mosquitto import MOSQUITTO, MessageCapture
from tests.support.ports import free_port, wait_for_port
from tests.support.waiting import wait_until

pytestmark = pytest.mark.e2e
SITE_A, SITE_B = "school-a", "school-b"
MOSQUITTO_PUB = shutil.which("mosquitto_pub") or "/usr/bin/mosquitto_pub"
MOSQUITTO_SUB = shutil.which("mosquitto_sub") or "/usr/bin/mosquitto_sub"


@dataclass
class SecureBroker:
    directory: Path
    tls_port: int
    plain_port: int
    process: subprocess.Popen[bytes]
    store: BrokerCredentials
    collector_password: str

    def connect(
        self, username: str, password: str, capture: MessageCapture | None = None
    ) -> MqttConnection:
        """A client over TLS, trusting only the generated CA; fails the test if refused."""
        connection = self._client(username, password, capture)
        connection.start()
        assert connection.wait_connected(10), (
            f"{username} could not connect: {connection.last_error}"
        )
        return connection

    def collector(self, capture: MessageCapture) -> MqttConnection:
        connection = MqttConnection(
            f"test-collector-{free_port()}",
            BrokerAddress("127.0.0.1", self.plain_port, False),
            username="collector",
            password=self.collector_password,
            on_message=capture,
        )
        connection.subscribe("cw/v1/#", qos=1)
        connection.start()
        assert connection.wait_connected(10), connection.last_error
        return connection

    def _client(
        self, username: str, password: str, capture: MessageCapture | None
    ) -> MqttConnection:
        return MqttConnection(
            f"test-{username}-{free_port()}",
            BrokerAddress("localhost", self.tls_port, True),
            username=username,
            password=password,
            tls=TlsOptions(ca_file=str(self.directory / "ca.pem")),
            on_message=capture,
            reconnect_max_s=2,
        )

    def cli_publish(self, *args: str) -> subprocess.CompletedProcess[str]:
        """The real ``mosquitto_pub`` over TLS with the generated CA."""
        return subprocess.run(
            [MOSQUITTO_PUB, "-h", "localhost", "-p", str(self.tls_port), "-q", "1",
             "--cafile", str(self.directory / "ca.pem"), *args],
            capture_output=True, text=True, timeout=30, check=False,
        )  # fmt: skip


@pytest.fixture
def secure_broker(tmp_path: Path) -> Iterator[SecureBroker]:
    required.program("mosquitto", "mosquitto")
    for tool in ("mosquitto_pub", "mosquitto_sub"):
        required.program(tool, "mosquitto-clients")
    required.program("openssl", "openssl")
    directory = tmp_path / "broker"
    tls_port, plain_port = free_port(), free_port()
    result = write_broker_config(
        BrokerConfigOptions(
            out_dir=directory,
            hostnames=("localhost", "127.0.0.1"),
            listen_port=tls_port,
            listen_address="127.0.0.1",
            plain_port=plain_port,
            # Mosquitto drops root for this user; the test's temporary folder belongs to us.
            run_as_user=pwd.getpwuid(os.getuid()).pw_name,
        )
    )
    log = (tmp_path / "mosquitto.log").open("ab")
    process = subprocess.Popen([MOSQUITTO, "-c", str(result.config_file)], stdout=log, stderr=log)
    password = result.collector_password_file.read_text(encoding="utf-8").strip()
    broker = SecureBroker(
        directory, tls_port, plain_port, process, BrokerCredentials(directory), password
    )
    try:
        wait_for_port(tls_port)
        wait_for_port(plain_port)
        yield broker
    finally:
        # The test may have restarted the broker: stop whichever process runs now.
        broker.process.terminate()
        try:
            broker.process.wait(10)
        except subprocess.TimeoutExpired:
            broker.process.kill()
            broker.process.wait()
        log.close()


def _wait_for_reload(log: Path, reloads: int) -> None:
    """Mosquitto logs "Reloading config." once per SIGHUP it has begun to handle."""
    wait_until(
        lambda: log.read_text(errors="replace").count("Reloading config") >= reloads,
        message="mosquitto did not reload after SIGHUP",
    )


def test_anonymous_and_wrong_password_are_refused(secure_broker: SecureBroker) -> None:
    anonymous = secure_broker.cli_publish("-t", build_topic(SITE_A, "pc-1", "state"), "-m", "x")
    assert anonymous.returncode != 0
    assert "not authorised" in (anonymous.stderr + anonymous.stdout).lower()
    password = secure_broker.store.add_device(SITE_A, "pc-1")
    wrong = secure_broker.cli_publish(
        "-u", "pc-1", "-P", password + "x", "-t", build_topic(SITE_A, "pc-1", "state"), "-m", "x"
    )
    assert wrong.returncode != 0
    plain = subprocess.run(
        [MOSQUITTO_PUB, "-h", "127.0.0.1", "-p", str(secure_broker.plain_port),
         "-t", "cw/v1/x/y/state", "-m", "x"],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert plain.returncode != 0, "the plain listener must not let anonymous clients in either"


def test_mosquitto_pub_with_generated_ca_over_tls(secure_broker: SecureBroker) -> None:
    password = secure_broker.store.add_device(SITE_A, "pc-1")
    capture = MessageCapture()
    collector = secure_broker.collector(capture)
    try:
        topic = build_topic(SITE_A, "pc-1", "event")
        done = secure_broker.cli_publish("-u", "pc-1", "-P", password, "-t", topic, "-m", "hi")
        assert done.returncode == 0, done.stderr
        capture.wait_for(lambda ms: any(m.topic == topic and m.payload == b"hi" for m in ms))
        # The same CLI without the CA must fail: the server certificate is not self-trusted.
        untrusted = subprocess.run(
            [MOSQUITTO_PUB, "-h", "localhost", "-p", str(secure_broker.tls_port),
             "--capath", str(secure_broker.directory / "data"),
             "-u", "pc-1", "-P", password, "-t", topic, "-m", "x"],
            capture_output=True, text=True, timeout=30, check=False,
        )  # fmt: skip
        assert untrusted.returncode != 0
    finally:
        collector.stop()


def test_device_cannot_publish_under_another_devices_topic(secure_broker: SecureBroker) -> None:
    password_a = secure_broker.store.add_device(SITE_A, "pc-a")
    secure_broker.store.add_device(SITE_B, "pc-b")
    capture = MessageCapture()
    collector = secure_broker.collector(capture)
    device_a = secure_broker.connect("pc-a", password_a)
    try:
        forbidden = [
            build_topic(SITE_B, "pc-b", "av"),  # another device
            build_topic(SITE_B, "pc-a", "av"),  # own id under another site
            build_topic(SITE_A, "pc-a", "cmd"),  # commands come only from the collector
        ]
        for topic in forbidden:
            assert device_a.publish(topic, b"lie") is not None
        own = build_topic(SITE_A, "pc-a", "av")
        device_a.publish(own, b"truth")
        # Same connection, same subscriber: anything let through would arrive before this.
        capture.wait_for(lambda ms: any(m.topic == own for m in ms))
        assert [m.topic for m in capture.messages] == [own]
    finally:
        device_a.stop()
        collector.stop()


def test_device_cannot_read_another_devices_commands(secure_broker: SecureBroker) -> None:
    password_a = secure_broker.store.add_device(SITE_A, "pc-a")
    secure_broker.store.add_device(SITE_A, "pc-b")
    seen_by_a = MessageCapture()
    device_a = secure_broker._client("pc-a", password_a, seen_by_a)
    device_a.subscribe("cw/v1/#", qos=1)
    device_a.start()
    assert device_a.wait_connected(10)
    collector_capture = MessageCapture()
    collector = secure_broker.collector(collector_capture)
    try:
        other_cmd = build_topic(SITE_A, "pc-b", "cmd")
        own_cmd = build_topic(SITE_A, "pc-a", "cmd")
        collector.publish(other_cmd, b"for b")
        collector.publish(own_cmd, b"for a")
        seen_by_a.wait_for(lambda ms: any(m.topic == own_cmd for m in ms))
        assert [m.topic for m in seen_by_a.messages] == [own_cmd]
        # And the collector's own view proves both commands really were published.
        collector_capture.wait_for(lambda ms: {other_cmd, own_cmd} <= {m.topic for m in ms})
    finally:
        device_a.stop()
        collector.stop()


def test_revoked_device_is_locked_out_after_reload(secure_broker: SecureBroker) -> None:
    log = secure_broker.directory.parent / "mosquitto.log"
    password = secure_broker.store.add_device(SITE_A, "pc-gone")
    topic = build_topic(SITE_A, "pc-gone", "state")
    before = secure_broker.cli_publish("-u", "pc-gone", "-P", password, "-t", topic, "-m", "x")
    assert before.returncode == 0, before.stderr
    reloads = log.read_text(errors="replace").count("Reloading config")

    assert secure_broker.store.revoke_device("pc-gone") is True
    _wait_for_reload(log, reloads + 1)
    after = secure_broker.cli_publish("-u", "pc-gone", "-P", password, "-t", topic, "-m", "x")
    assert after.returncode != 0
    assert "not authorised" in (after.stderr + after.stdout).lower()
    assert "pc-gone" not in (secure_broker.directory / "passwd").read_text()
    assert [r.username for r in secure_broker.store.revoked()] == ["pc-gone"]


def test_connected_device_is_dropped_when_revoked(secure_broker: SecureBroker) -> None:
    password = secure_broker.store.add_device(SITE_A, "pc-live")
    reasons: list[str] = []
    connection = MqttConnection(
        f"test-live-{free_port()}",
        BrokerAddress("localhost", secure_broker.tls_port, True),
        username="pc-live",
        password=password,
        tls=TlsOptions(ca_file=str(secure_broker.directory / "ca.pem")),
        on_disconnect=reasons.append,
        reconnect_max_s=2,
    )
    connection.start()
    assert connection.wait_connected(10)
    try:
        secure_broker.store.revoke_device("pc-live")
        wait_until(
            lambda: not connection.connected and reasons, message="revoked device stayed connected"
        )
        assert not connection.wait_connected(1), "revoked device got back in"
    finally:
        connection.stop()


def test_scanner_role_may_publish_discovery_but_not_inventory(
    secure_broker: SecureBroker,
) -> None:
    password = secure_broker.store.add_scanner(SITE_A, "scan-1")
    capture = MessageCapture()
    collector = secure_broker.collector(capture)
    scanner = secure_broker.connect("scan-1", password)
    try:
        scanner.publish(build_topic(SITE_A, "scan-1", "inventory"), b"no")
        discovery = build_topic(SITE_A, "scan-1", "discovery")
        scanner.publish(discovery, b"yes")
        capture.wait_for(lambda ms: any(m.topic == discovery for m in ms))
        assert [m.topic for m in capture.messages] == [discovery]
    finally:
        scanner.stop()
        collector.stop()


def test_a_bad_store_entry_never_leaves_mosquitto_without_its_acl(
    secure_broker: SecureBroker, tmp_path: Path
) -> None:
    """An id like "evil\\n" (accepted before ids were matched whole) once split lines of the
    password and ACL files: on SIGHUP Mosquitto ran with no ACL, and it refused to restart."""
    log = tmp_path / "mosquitto.log"
    password_a = secure_broker.store.add_device(SITE_A, "pc-a")
    store_file = secure_broker.directory / "credentials.json"
    data = json.loads(store_file.read_text())
    data["accounts"].append(
        {"username": "evil\n", "role": "device", "password_hash": hash_password("x"),
         "site": SITE_A, "device_id": "evil\n", "created_at": ""}
    )  # fmt: skip
    store_file.write_text(json.dumps(data))
    reloads = log.read_text(errors="replace").count("Reloading config")
    BrokerCredentials(secure_broker.directory).add_device(SITE_B, "pc-b")
    _wait_for_reload(log, reloads + 1)
    assert "evil" not in (secure_broker.directory / "passwd").read_text()
    assert "evil" not in (secure_broker.directory / "acl").read_text()

    def acl_holds() -> None:
        capture = MessageCapture()
        collector = secure_broker.collector(capture)
        device_a = secure_broker.connect("pc-a", password_a)
        try:
            device_a.publish(build_topic(SITE_B, "pc-b", "av"), b"lie")
            own = build_topic(SITE_A, "pc-a", "av")
            device_a.publish(own, b"truth")
            capture.wait_for(lambda ms: any(m.topic == own for m in ms))
            assert [m.topic for m in capture.messages] == [own]
        finally:
            device_a.stop()
            collector.stop()

    acl_holds()
    # And a restart reads the same files without complaint.
    secure_broker.process.terminate()
    secure_broker.process.wait(30)
    with log.open("ab") as stream:
        secure_broker.process = subprocess.Popen(
            [MOSQUITTO, "-c", str(secure_broker.directory / "mosquitto.conf")],
            stdout=stream,
            stderr=stream,
        )
    wait_for_port(secure_broker.tls_port)
    wait_for_port(secure_broker.plain_port)
    acl_holds()


@pytest.fixture
def world_readable_dir() -> Iterator[Path]:
    """A folder the ``mosquitto`` user can reach: pytest's own tmp_path is root's alone
    (0700), which no broker that drops root could read — unlike /etc/campuswatch/broker."""
    directory = Path(tempfile.mkdtemp(prefix="cw-broker-root-"))
    directory.chmod(0o755)
    try:
        yield directory
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def test_documented_start_as_root_drops_to_mosquitto_and_works(world_readable_dir: Path) -> None:
    """`broker config` then `mosquitto -c …/mosquitto.conf` as root, as docs/broker.md says:
    Mosquitto drops to its own user and must still write its pid file and read every file."""
    required.root("the documented start runs Mosquitto as root")
    required.program("mosquitto", "mosquitto")
    required.program("mosquitto_pub", "mosquitto-clients")
    required.system_user("mosquitto", "mosquitto")
    broker_user = pwd.getpwnam("mosquitto")
    required.program("openssl", "openssl")
    directory = world_readable_dir / "broker"
    tls_port, plain_port = free_port(), free_port()
    result = write_broker_config(
        BrokerConfigOptions(
            out_dir=directory,
            hostnames=("localhost", "127.0.0.1"),
            listen_port=tls_port,
            listen_address="127.0.0.1",
            plain_port=plain_port,
        )
    )
    log_path = world_readable_dir / "mosquitto.log"
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            [MOSQUITTO, "-c", str(result.config_file)], stdout=log, stderr=log
        )
    try:
        wait_for_port(tls_port)
        pid_file = directory / "run" / "mosquitto.pid"

        def pid_written() -> bool:
            assert process.poll() is None, log_path.read_text(errors="replace")
            return pid_file.is_file() and bool(pid_file.read_text().strip())

        wait_until(pid_written, message="no pid file")
        assert int(pid_file.read_text()) == process.pid
        assert os.stat(f"/proc/{process.pid}").st_uid == broker_user.pw_uid  # root dropped

        # A device login made after the start reaches the broker through the pid file.
        store = BrokerCredentials(directory)
        password = store.add_device(SITE_A, "pc-root")
        _wait_for_reload(log_path, 1)
        topic = build_topic(SITE_A, "pc-root", "state")
        published = subprocess.run(
            [MOSQUITTO_PUB, "-h", "localhost", "-p", str(tls_port), "-q", "1",
             "--cafile", str(result.ca_file), "-u", "pc-root", "-P", password,
             "-t", topic, "-m", "online"],
            capture_output=True, text=True, timeout=30, check=False,
        )  # fmt: skip
        assert published.returncode == 0, published.stderr + log_path.read_text(errors="replace")
        assert process.poll() is None
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
