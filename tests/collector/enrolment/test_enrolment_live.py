"""Enrolment end to end: a real Mosquitto with the generated config, the collector over HTTP,
the agent's own ``enroll`` command and runner, clones, and revocation taking effect at once."""

from __future__ import annotations

import json
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import uvicorn

from campuswatch.agent.cli import main as agent_main
from campuswatch.agent.enrolment import (
    ENROLMENT_FILE,
    EnrolmentError,
    enrol,
    enrolment_for,
    load_enrolment,
)
from campuswatch.agent.identity import IDENTITY_FILE, HardwareFacts, resolve_identity
from campuswatch.agent.main import build_runner
from campuswatch.agent.probes.health import HealthProbe
from campuswatch.agent.settings import load_settings
from campuswatch.collector.api.app import create_app
from campuswatch.wire.mqtt import BrokerAddress, MqttConnection, TlsOptions
from tests.collector.broker.test_broker_live import SecureBroker, secure_broker  # noqa: F401
from tests.collector.conftest import CollectorFactory, RunningCollector
from tests.support.ports import free_port, wait_for_port
from tests.support.waiting import wait_until

pytestmark = pytest.mark.e2e
SCHOOL = "hn-bd-thcs-a"


class Deployment:
    def __init__(self, broker: SecureBroker, collector: RunningCollector, url: str) -> None:
        self.broker, self.collector, self.url = broker, collector, url

    def token(self, max_uses: int = 10) -> str:
        response = self.collector.api.post(
            "/api/v1/enrolment-tokens", json={"site_id": SCHOOL, "max_uses": max_uses}
        )
        assert response.status_code == 201, response.text
        token: str = response.json()["token"]
        return token

    def can_connect(self, username: str, password: str) -> bool:
        connection = MqttConnection(
            f"probe-{username}-{free_port()}",
            BrokerAddress("localhost", self.broker.tls_port, True),
            username=username,
            password=password,
            tls=TlsOptions(ca_file=str(self.broker.directory / "ca.pem")),
            reconnect_max_s=2,
        )
        connection.start()
        try:
            return connection.wait_connected(5)
        finally:
            connection.stop()


@pytest.fixture
def deployment(
    secure_broker: SecureBroker,  # noqa: F811
    collector_factory: CollectorFactory,
) -> Iterator[Deployment]:
    collector = collector_factory(
        broker=f"mqtt://127.0.0.1:{secure_broker.plain_port}",
        broker_username="collector",
        broker_password=secure_broker.collector_password,
        broker_dir=secure_broker.directory,
        agent_broker_url=f"mqtts://localhost:{secure_broker.tls_port}",
    )
    response = collector.api.put(
        f"/api/v1/sites/{SCHOOL}", json={"id": SCHOOL, "level": "school", "name": "THCS A"}
    )
    assert response.status_code == 200
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(collector.service.api_context),
            host="127.0.0.1",
            port=port,
            log_level="warning",
        )
    )
    thread = threading.Thread(target=server.run, name="api", daemon=True)
    thread.start()
    wait_for_port(port)
    try:
        yield Deployment(secure_broker, collector, f"http://127.0.0.1:{port}")
    finally:
        server.should_exit = True
        thread.join(10)


def test_enrolled_agent_reports_and_is_cut_off_when_revoked(
    deployment: Deployment, tmp_path: Path
) -> None:
    state_dir = tmp_path / "agent"
    token = deployment.token()
    code = agent_main(
        ["enroll", "--server", deployment.url, "--token", token, "--state-dir", str(state_dir)]
    )
    assert code == 0
    stored = load_enrolment(state_dir)
    assert stored is not None and stored.site == SCHOOL
    assert (state_dir / ENROLMENT_FILE).stat().st_mode & 0o777 == 0o600
    assert stored.ca_file and Path(stored.ca_file).read_text().startswith("-----BEGIN")

    # No broker, user or site given: all of it comes from the enrolment.
    settings = load_settings(None, {"state_dir": str(state_dir)}, environ={})
    runner = build_runner(settings, probes=[HealthProbe()])
    assert runner.site == SCHOOL and runner.device_id == stored.device_id
    runner.start()
    try:
        wait_until(lambda: runner.connection.connected, timeout_s=15)
        device = f"/api/v1/devices/{stored.device_id}"
        wait_until(lambda: deployment.collector.api.get(device).status_code == 200, timeout_s=20)
        assert deployment.collector.get(device)["site_id"] == SCHOOL

        response = deployment.collector.api.post(
            f"/api/v1/devices/{stored.device_id}/revoke", json={"note": "stolen"}
        )
        assert response.status_code == 200, response.text
        # Mosquitto re-reads passwd/acl on SIGHUP and drops the client at once.
        wait_until(lambda: not runner.connection.connected, timeout_s=15)
        # The runner keeps retrying; none of its attempts may get back in: two refused.
        refused_before = runner.connection.failed_attempts
        wait_until(lambda: runner.connection.failed_attempts >= refused_before + 2)
        assert not runner.connection.connected
        assert not deployment.can_connect(stored.username, stored.password)
    finally:
        runner.request_stop()
        runner.stop(timeout_s=1)


def test_cloned_disk_enrols_on_its_own_with_the_kept_token(
    deployment: Deployment, tmp_path: Path
) -> None:
    golden = tmp_path / "golden"
    golden_facts = HardwareFacts("uuid-golden", "machine-golden", ("02:00:00:00:00:01",))
    original, original_identity = enrol(
        golden, deployment.url, deployment.token(), facts=golden_facts
    )
    assert original.device_id == original_identity.device_id

    # The state dir copied into another PC's image: its identity no longer matches.
    clone_dir = tmp_path / "clone"
    shutil.copytree(golden, clone_dir)
    clone_facts = HardwareFacts("uuid-second", "machine-golden", ("02:00:00:00:00:02",))
    identity = resolve_identity(clone_dir, clone_facts)
    assert identity.info.origin == "reidentified"
    clone, clone_identity = enrolment_for(
        clone_dir,
        identity,
        server_url=None,
        token=None,
        ca_file=None,
        configured_device_id=None,
        facts=clone_facts,
    )
    assert clone is not None and clone.device_id == clone_identity.device_id
    assert clone.device_id != original.device_id and clone.password != original.password
    assert deployment.can_connect(original.username, original.password)
    assert deployment.can_connect(clone.username, clone.password)


def test_collector_refuses_a_second_machine_with_the_same_id(
    deployment: Deployment, tmp_path: Path
) -> None:
    token = deployment.token()
    first = tmp_path / "first"
    first_facts = HardwareFacts("uuid-1", "machine-vm", ("02:00:00:00:00:11",))
    enrolled, _ = enrol(first, deployment.url, token, facts=first_facts)

    # A VM cloned with its identity file rewritten for the new hardware: the agent sees no
    # change, only the collector can tell.
    second = tmp_path / "second"
    second.mkdir()
    second_facts = HardwareFacts("uuid-2", "machine-vm", ("02:00:00:00:00:12",))
    (second / IDENTITY_FILE).write_text(
        json.dumps(
            {
                "device_id": enrolled.device_id,
                "facts": {
                    "product_uuid": "uuid-2",
                    "machine_id": "machine-vm",
                    "macs": ["02:00:00:00:00:12"],
                },
            }
        )
    )
    granted, identity = enrol(second, deployment.url, token, facts=second_facts)
    assert identity.info.origin == "reidentified"
    assert identity.info.previous_device_id == enrolled.device_id
    assert granted.device_id == identity.device_id != enrolled.device_id
    # The id is kept: the next start of the second machine uses its new id.
    assert resolve_identity(second, second_facts).device_id == granted.device_id
    enrolments = deployment.collector.get("/api/v1/enrolments")
    by_id = {e["device_id"]: e for e in enrolments}
    assert by_id[enrolled.device_id]["clone_attempts"] == 1
    assert set(by_id) == {enrolled.device_id, granted.device_id}


def test_refusals_reach_the_user_with_their_reason(deployment: Deployment, tmp_path: Path) -> None:
    code = agent_main(
        ["enroll", "--server", deployment.url, "--token", "cwe_wrong_token_000",
         "--state-dir", str(tmp_path / "a")]
    )  # fmt: skip
    assert code == 3
    unreachable = agent_main(
        ["enroll", "--server", f"http://127.0.0.1:{free_port()}", "--token", "cwe_x0000000",
         "--state-dir", str(tmp_path / "b")]
    )  # fmt: skip
    assert unreachable == 4


def test_disk_image_with_a_token_in_its_config_enrols_at_first_start(
    deployment: Deployment, tmp_path: Path
) -> None:
    overrides = {
        "state_dir": str(tmp_path / "agent"),
        "site": "wrong-school",  # the enrolled school wins: the broker accepts only that one
        "enrolment": {"server": deployment.url, "token": deployment.token()},
    }
    runner = build_runner(load_settings(None, overrides, environ={}), probes=[HealthProbe()])
    stored = load_enrolment(tmp_path / "agent")
    assert stored is not None
    assert (runner.site, runner.device_id) == (SCHOOL, stored.device_id)
    assert runner.settings.mqtt.username == stored.device_id
    # A second start reuses the stored login instead of spending another token use.
    again = build_runner(load_settings(None, overrides, environ={}), probes=[HealthProbe()])
    assert again.settings.mqtt.password == stored.password
    [token] = deployment.collector.get("/api/v1/enrolment-tokens")
    assert token["uses"] == 1


def test_the_agent_re_enrols_its_own_id_with_its_login_and_an_impostor_cannot(
    deployment: Deployment, tmp_path: Path
) -> None:
    facts = HardwareFacts("uuid-7", "machine-7", ("02:00:00:00:00:77",))
    state_dir = tmp_path / "pc"
    first, _ = enrol(state_dir, deployment.url, deployment.token(), facts=facts)
    # `agent enroll` again with a fresh token: the agent proves it holds the id's login.
    second, _ = enrol(state_dir, deployment.url, deployment.token(), facts=facts)
    assert second.device_id == first.device_id and second.password != first.password
    assert deployment.can_connect(second.username, second.password)
    assert not deployment.can_connect(first.username, first.password)

    # Someone on the LAN who knows the id and the MAC address, but not the login.
    impostor = tmp_path / "impostor"
    with pytest.raises(EnrolmentError) as refused:
        enrol(
            impostor,
            deployment.url,
            deployment.token(),
            configured_device_id=first.device_id,
            facts=HardwareFacts(None, None, facts.macs),
        )
    assert refused.value.reason == "already_enrolled"
    assert deployment.can_connect(second.username, second.password)  # still the real one's

    # The real PC re-imaged (its login lost): an administrator's approval lets it back in.
    reimaged = tmp_path / "reimaged"
    with pytest.raises(EnrolmentError) as lost:
        enrol(reimaged, deployment.url, deployment.token(), facts=facts)
    assert lost.value.reason == "already_enrolled"
    response = deployment.collector.api.post(
        f"/api/v1/devices/{first.device_id}/approve-reenrolment", json={}
    )
    assert response.status_code == 200, response.text
    third, _ = enrol(reimaged, deployment.url, deployment.token(), facts=facts)
    assert third.device_id == first.device_id
    assert deployment.can_connect(third.username, third.password)
