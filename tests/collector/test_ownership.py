"""Per-device ownership across collectors (issue 16 item 2, docs/scale.md#ownership).

A threshold rule counting one device's messages misses when a shared subscription splits
them between two collectors, and fires exactly once when each partition of schools is run
by one collector. A killed owner's partition is taken by the standby; what was published
in the gap is processed and alerts fire once, none lost, none twice.
"""

from __future__ import annotations

import signal
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, func, select, text
from sqlalchemy.engine import Engine

from campuswatch.collector.alerts.models import Alert
from campuswatch.collector.config_file import ConfigFileError, load_collector_settings
from campuswatch.collector.ownership import OwnedConnections, client_id_of, lock_key
from campuswatch.wire import encode_message
from campuswatch.wire.messages import HealthMessage
from campuswatch.wire.mqtt import MqttConnection
from campuswatch.wire.topics import build_topic
from tests.collector.conftest import RunningCollector, collectors_on
from tests.support.collector_process import start_collector_process, wait_until_healthy
from tests.support.mosquitto import MosquittoBroker
from tests.support.ports import free_port
from tests.support.waiting import wait_until

pytestmark = pytest.mark.e2e

RULE_ID = "5b0c1f52-6a8e-4d55-9a57-0d6c0a3f9a11"
RULE = f"""\
id: {RULE_ID}
title:
  en: CPU saturated again and again
  vi: CPU quá tải nhiều lần
description:
  en: Four health reports of one PC with CPU above 90 % within ten minutes.
  vi: Bốn báo cáo của một máy có CPU trên 90 % trong mười phút.
level: high
status: stable
subject: device
tags: []
falsepositives: []
condition:
  threshold:
    kind: health
    aggregate: count
    where:
      - field: cpu_pct
        gt: 90
    window: 10m
    above: 3
summary:
  en: "CPU of {{device_id}} above 90 % {{value}} times"
  vi: "CPU của {{device_id}} trên 90 % {{value}} lần"
runbook:
  en: Find the process.
  vi: Tìm tiến trình.
"""
RULE_TEST = """\
description: four hot reports fire, three do not
steps:
  - at: 0s
    message: {kind: health, site: s, device_id: pc, cpu_pct: 95}
  - at: 1m
    message: {kind: health, site: s, device_id: pc, cpu_pct: 95}
  - at: 2m
    message: {kind: health, site: s, device_id: pc, cpu_pct: 95}
  - at: 3m
    message: {kind: health, site: s, device_id: pc, cpu_pct: 95}
expect:
  - subject: {site: s, device: pc}
    statuses: [firing]
"""


def rules_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "rules"
    folder.mkdir(exist_ok=True)
    (folder / "cpu_hot.yaml").write_text(RULE)
    (folder / "cpu_hot.test.yaml").write_text(RULE_TEST)
    return folder


class Devices:
    """Publishes health reports as PCs would (QoS 1), waiting for the broker's PUBACK."""

    def __init__(self, broker: MosquittoBroker) -> None:
        self.acked: list[int] = []
        self.connection = MqttConnection(
            f"pcs-{free_port()}", broker.address, on_published=self.acked.append
        )
        self.connection.start()
        assert self.connection.wait_connected(10)
        self.sent = 0

    def hot(self, site: str, device: str, count: int) -> None:
        for _ in range(count):
            message = HealthMessage(device_id=device, site=site, cpu_pct=97.0)
            topic = build_topic(site, device, "health")
            while self.connection.publish(topic, encode_message(message)) is None:
                time.sleep(0.01)
            self.sent += 1
            time.sleep(0.002)  # one sample per series and millisecond in the store
        wait_until(lambda: len(self.acked) >= self.sent)

    def close(self) -> None:
        self.connection.stop()


@pytest.fixture
def devices(mosquitto: MosquittoBroker) -> Iterator[Devices]:
    publisher = Devices(mosquitto)
    yield publisher
    publisher.close()


def stored(engine: Engine) -> int:
    with engine.connect() as connection:
        return int(connection.execute(text("SELECT COUNT(*) FROM processed_messages")).scalar_one())


def alerts_by_device(engine: Engine) -> dict[str, int]:
    with engine.connect() as connection:
        rows = connection.execute(
            select(Alert.device_id, func.count())
            .where(Alert.rule_id == RULE_ID)
            .group_by(Alert.device_id)
        ).all()
    return {str(device): int(count) for device, count in rows}


def evaluated(collector: RunningCollector) -> int:
    engine = collector.service.alerting.engine
    assert engine is not None
    return engine.messages_processed


OWNERSHIP: dict[str, Any] = {
    "group": "district-1",
    "poll_interval_s": 0.5,
    "handback_grace_s": 1.0,
    "partitions": [
        {"name": "north", "sites": ["school-a"], "prefer": "c1"},
        {"name": "south", "sites": ["school-b"], "prefer": "c2"},
    ],
}


def test_a_shared_subscription_splits_a_device_and_misses_a_count_rule_that_ownership_fires(
    mosquitto: MosquittoBroker,
    tmp_path: Path,
    fresh_postgres_url: str,
    devices: Devices,
    caplog: pytest.LogCaptureFixture,
) -> None:
    register = create_engine(fresh_postgres_url)
    common = {"db": fresh_postgres_url, "rules_dir": rules_dir(tmp_path)}
    # Today's scaling: $share hands each message to either collector.
    with collectors_on(mosquitto.url, tmp_path / "share") as start:
        first = start(collector_id="c1", share_group="district-1", **common)
        second = start(collector_id="c2", share_group="district-1", **common)
        devices.hot("school-a", "pc-a1", 4)
        devices.hot("school-z", "pc-z1", 1)  # a school the partitions below leave out
        wait_until(lambda: evaluated(first) + evaluated(second) >= 5)
        # Every message received is stored and evaluated, its alert transaction committed:
        # an alert that should NOT open would be in the register now.
        assert first.service.ingestor.wait_idle(10) and second.service.ingestor.wait_idle(10)
        assert evaluated(first) and evaluated(second), "the broker did not split the messages"
        assert alerts_by_device(register) == {}  # four hot reports, no collector saw four
    # Ownership: each school is run by one collector, so every report of pc-a1 meets the
    # same window.
    with collectors_on(mosquitto.url, tmp_path / "owned") as start:
        caplog.set_level("ERROR", logger="campuswatch.collector.service")
        first = start(collector_id="c1", ownership=OWNERSHIP, **common)
        assert any(
            "in no partition" in record.getMessage() and "school-z" in record.getMessage()
            for record in caplog.records
        )
        second = start(collector_id="c2", ownership=OWNERSHIP, **common)
        first_connection = first.service.ingestor.connection
        second_connection = second.service.ingestor.connection
        assert isinstance(first_connection, OwnedConnections)
        assert isinstance(second_connection, OwnedConnections)
        wait_until(
            lambda: first_connection.owned == ["north"] and second_connection.owned == ["south"]
        )
        before = stored(register)
        devices.hot("school-a", "pc-a2", 6)
        devices.hot("school-b", "pc-b1", 4)
        wait_until(lambda: stored(register) >= before + 10)
        wait_until(lambda: alerts_by_device(register) == {"pc-a2": 1, "pc-b1": 1})
        assert evaluated(first) == 6 and evaluated(second) == 4
        assert first.service.ingestor.wait_idle(10) and second.service.ingestor.wait_idle(10)
        assert alerts_by_device(register) == {"pc-a2": 1, "pc-b1": 1}


def test_a_returning_preferred_collector_gets_its_partition_back_and_each_message_is_evaluated_once(
    mosquitto: MosquittoBroker, tmp_path: Path, fresh_postgres_url: str, devices: Devices
) -> None:
    register = create_engine(fresh_postgres_url)
    common = {"db": fresh_postgres_url, "rules_dir": rules_dir(tmp_path), "ownership": OWNERSHIP}
    with collectors_on(mosquitto.url, tmp_path) as start:
        second = start(collector_id="c2", **common)
        standby = second.service.ingestor.connection
        assert isinstance(standby, OwnedConnections)
        # c1 is away: after the grace its partition is run by c2.
        wait_until(lambda: standby.owned == ["north", "south"])
        devices.hot("school-a", "pc-a1", 20)
        first = start(collector_id="c1", **common)
        preferred = first.service.ingestor.connection
        assert isinstance(preferred, OwnedConnections)
        # Published while north moves back to c1.
        while preferred.owned != ["north"]:
            devices.hot("school-a", "pc-a1", 1)
        devices.hot("school-a", "pc-a1", 20)
        wait_until(lambda: stored(register) >= devices.sent)
        wait_until(lambda: evaluated(first) + evaluated(second) >= devices.sent)
        # A redelivery comes when a session resumes, before what was queued for it, so it
        # has been received by now; idle means it was handled too.
        assert first.service.ingestor.wait_idle(10) and second.service.ingestor.wait_idle(10)
        assert stored(register) == devices.sent
        # Each message met the rules once, on whichever collector ran north when it came.
        assert evaluated(first) + evaluated(second) == devices.sent
        assert evaluated(first) >= 20 and standby.owned == ["south"]
        assert alerts_by_device(register) == {"pc-a1": 1}


def test_a_connection_taking_a_partition_session_loses_it_to_the_lock_holder(
    mosquitto: MosquittoBroker, tmp_path: Path, fresh_postgres_url: str, devices: Devices
) -> None:
    register = create_engine(fresh_postgres_url)
    common = {"db": fresh_postgres_url, "rules_dir": rules_dir(tmp_path), "ownership": OWNERSHIP}
    with collectors_on(mosquitto.url, tmp_path) as start:
        owner = start(collector_id="c1", **common).service.ingestor.connection
        assert isinstance(owner, OwnedConnections)
        wait_until(lambda: "north" in owner.owned)
        # Something else connects with north's client id (a former owner that has not yet
        # noticed it lost its lock): Mosquitto disconnects the owner's session. The owner
        # finds its lock still held and reconnects, which disconnects the intruder.
        dropped: list[str] = []
        intruder = MqttConnection(
            client_id_of("district-1", "north"),
            mosquitto.address,
            clean_start=False,
            session_expiry_s=3600,
            reconnect_min_s=3600,  # once: no ping-pong of the client id in this test
            reconnect_max_s=3600,
            on_disconnect=dropped.append,
        )
        intruder.start()
        assert intruder.wait_connected(10)
        wait_until(lambda: bool(dropped))
        intruder.stop()
        assert owner.owned == ["north", "south"] and owner.releases_total == 0
        before = stored(register)
        devices.hot("school-a", "pc-a1", 4)
        wait_until(lambda: stored(register) >= before + 4)
        wait_until(lambda: alerts_by_device(register) == {"pc-a1": 1})


def test_an_owner_whose_lock_session_ends_stops_its_partitions_then_takes_them_again(
    mosquitto: MosquittoBroker, tmp_path: Path, fresh_postgres_url: str, devices: Devices
) -> None:
    register = create_engine(fresh_postgres_url)
    common = {"db": fresh_postgres_url, "rules_dir": rules_dir(tmp_path), "ownership": OWNERSHIP}
    with collectors_on(mosquitto.url, tmp_path) as start:
        owner = start(collector_id="c1", **common).service.ingestor.connection
        assert isinstance(owner, OwnedConnections)
        wait_until(lambda: owner.owned == ["north", "south"])
        taken = owner.takeovers_total
        with register.connect() as admin:
            # What a network cut or a server restart does to the lock session.
            admin.execute(
                text(
                    "SELECT pg_terminate_backend(pid) FROM pg_locks "
                    "WHERE locktype = 'advisory' AND objsubid = 2"
                )
            )
        # Without its locks it must not keep reading the sessions; with the register back,
        # it takes them again (nobody else holds them).
        wait_until(lambda: owner.releases_total >= 2)
        wait_until(lambda: owner.owned == ["north", "south"] and owner.takeovers_total > taken)
        before = stored(register)
        devices.hot("school-b", "pc-b1", 4)
        wait_until(lambda: stored(register) >= before + 4)
        wait_until(lambda: alerts_by_device(register) == {"pc-b1": 1})


def metric(port: int, name: str, label: str) -> float | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
            body = reply.read().decode()
    except OSError:
        return None
    for line in body.splitlines():
        if line.startswith(name) and label in line:
            return float(line.rsplit(" ", 1)[1])
    return None


def write_config(path: Path, collector_id: str, rules: Path) -> Path:
    path.write_text(
        f'collector_id = "{collector_id}"\n'
        f'rules_dir = "{rules}"\n'
        "batch_wait_s = 0.02\n"
        "[ownership]\n"
        'group = "district-1"\n'
        "poll_interval_s = 1.0\n"
        "handback_grace_s = 2.0\n"
        "[[ownership.partitions]]\n"
        'name = "north"\n'
        'sites = ["school-a"]\n'
        'prefer = "c1"\n'
    )
    return path


@pytest.mark.slow
def test_sigkill_of_the_owner_the_standby_takes_over_and_alerts_fire_once(
    mosquitto: MosquittoBroker, tmp_path: Path, fresh_postgres_url: str, devices: Devices
) -> None:
    register = create_engine(fresh_postgres_url)
    rules = rules_dir(tmp_path)
    ports = {name: free_port() for name in ("c1", "c2")}
    processes: dict[str, subprocess.Popen[bytes]] = {}
    try:
        for name in ("c1", "c2"):
            processes[name] = start_collector_process(
                mosquitto.url,
                tmp_path / name,
                ports[name],
                collector_id=name,
                db_url=fresh_postgres_url,
                config=write_config(tmp_path / f"{name}.toml", name, rules),
                log=tmp_path / f"{name}.log",
            )
            wait_until_healthy(ports[name])
        owned = 'partition="north"'
        wait_until(lambda: metric(ports["c1"], "campuswatch_ownership_partitions", owned) == 1)
        assert metric(ports["c2"], "campuswatch_ownership_partitions", owned) == 0
        # The owner opens pc-a1's alert.
        devices.hot("school-a", "pc-a1", 4)
        wait_until(lambda: alerts_by_device(register) == {"pc-a1": 1})
        processes["c1"].send_signal(signal.SIGKILL)
        killed = time.monotonic()
        processes["c1"].wait(10)
        # In the gap: pc-a1 stays hot (its alert must not open twice), pc-a2 gets hot (its
        # alert must not be lost).
        devices.hot("school-a", "pc-a1", 4)
        devices.hot("school-a", "pc-a2", 4)
        wait_until(lambda: metric(ports["c2"], "campuswatch_ownership_partitions", owned) == 1)
        took_over_s = time.monotonic() - killed
        wait_until(lambda: stored(register) >= 12)
        wait_until(lambda: "pc-a2" in alerts_by_device(register))
        # Everything c2 received (redeliveries come first on resuming the session) is
        # handled, alert transactions included: a duplicate pc-a1 alert would be there.
        wait_until(lambda: metric(ports["c2"], "campuswatch_ingest_queue_messages", "") == 0)
        assert alerts_by_device(register) == {"pc-a1": 1, "pc-a2": 1}
        assert stored(register) == 12
        print(f"standby took the partition {took_over_s:.1f} s after the owner's SIGKILL")
    finally:
        for process in processes.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                process.wait(30)


def test_a_partition_lock_is_held_by_one_session_only(fresh_postgres_url: str) -> None:
    from campuswatch.collector.ownership import PartitionLocks

    key = lock_key("district-1", "north")
    first, second = PartitionLocks(fresh_postgres_url, "d"), PartitionLocks(fresh_postgres_url, "d")
    try:
        assert first.ensure() and second.ensure()
        assert first.try_lock(key)
        assert not second.try_lock(key)
        assert second.held_by_another(key) and not first.held_by_another(key)
        first.close()  # the session ends (the server notices at once): its lock goes with it
        wait_until(lambda: second.try_lock(key))
    finally:
        first.close()
        second.close()


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        (
            '[ownership]\ngroup = "d1"\n[[ownership.partitions]]\nname = "n"\nsites = ["s1"]\n',
            "[ownership] needs a PostgreSQL register",
        ),
        (
            'db = "postgresql+psycopg:///cw"\nshare_group = "d1"\n[ownership]\ngroup = "d1"\n'
            '[[ownership.partitions]]\nname = "n"\nsites = ["s1"]\n',
            "share_group and [ownership] both set",
        ),
        (
            'db = "postgresql+psycopg:///cw"\n[ownership]\ngroup = "d1"\n'
            '[[ownership.partitions]]\nname = "n"\nsites = ["s1"]\n'
            '[[ownership.partitions]]\nname = "m"\nsites = ["s1"]\n',
            "site 's1' is in partitions 'n' and 'm'",
        ),
        (
            'db = "postgresql+psycopg:///cw"\n[ownership]\ngroup = "d1"\n'
            '[[ownership.partitions]]\nname = "n"\nsites = ["cw/#"]\n',
            "no MQTT wildcards",
        ),
    ],
)
def test_bad_ownership_config_is_one_line(tmp_path: Path, config: str, expected: str) -> None:
    path = tmp_path / "collector.toml"
    path.write_text(config)
    with pytest.raises(ConfigFileError) as caught:
        load_collector_settings(path)
    assert len(caught.value.problems) == 1
    assert expected in caught.value.problems[0]
    assert "\n" not in caught.value.problems[0]
