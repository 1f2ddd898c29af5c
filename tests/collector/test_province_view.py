"""A province on one PostgreSQL register: one collector per district, each on its own broker.

Each collector ingests only its district's messages, yet the API of either shows every
district's devices with their liveness, every school's counts, and a report for the province
covers every district (docs/scale.md).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from campuswatch.collector import service as service_module
from campuswatch.collector.db.access import create_user
from campuswatch.collector.db.models import Device
from campuswatch.collector.reports.kpis import build_report
from campuswatch.collector.reports.periods import report_period
from campuswatch.wire import AvMessage, AvProduct, HelloMessage, encode_message
from campuswatch.wire.messages import HealthMessage, StateMessage
from campuswatch.wire.mqtt import MqttConnection
from campuswatch.wire.topics import build_topic
from tests.collector.conftest import RunningCollector, collectors_on
from tests.support import required
from tests.support.mosquitto import MosquittoBroker
from tests.support.ports import free_port
from tests.support.waiting import wait_until

pytestmark = pytest.mark.e2e

PROVINCE = "province-hcm"
SCHOOLS = {
    "district-1": ("school-1a", "school-1b"),
    "district-2": ("school-2a",),
}
DEVICES = {  # two PCs per school
    school: (f"pc-{school}-1", f"pc-{school}-2")
    for schools in SCHOOLS.values()
    for school in schools
}


@dataclass
class District:
    name: str
    broker: MosquittoBroker
    collector: RunningCollector

    def publish(self, messages: list[tuple[str, bytes]]) -> None:
        """Publish as a device would (QoS 1) and wait until the broker has every message."""
        acked: list[int] = []
        connection = MqttConnection(
            f"devices-{self.name}-{free_port()}",
            self.broker.address,
            on_published=acked.append,
        )
        connection.start()
        try:
            assert connection.wait_connected(10), connection.last_error
            for topic, payload in messages:
                assert connection.publish(topic, payload, retain=topic.endswith("/state"))
            wait_until(lambda: len(acked) == len(messages))
        finally:
            connection.stop()


def school_messages(school: str) -> list[tuple[str, bytes]]:
    """Birth, online state, a protected antivirus and a health report for each PC."""
    messages = []
    for device in DEVICES[school]:
        for kind, message in (
            (
                "hello",
                HelloMessage(
                    device_id=device,
                    site=school,
                    device_type="pc",
                    software="campuswatch-agent",
                    software_version="0.1.0",
                ),
            ),
            (
                "state",
                StateMessage(device_id=device, site=school, status="online", reason="connected"),
            ),
            (
                "av",
                AvMessage(
                    device_id=device,
                    site=school,
                    status="protected",
                    products=[
                        AvProduct(
                            name="Microsoft Defender Antivirus",
                            source="defender",
                            enabled=True,
                            realtime_protection=True,
                            signatures_up_to_date=True,
                            signature_age_hours=2.0,
                        )
                    ],
                ),
            ),
            ("health", HealthMessage(device_id=device, site=school, cpu_pct=10.0)),
        ):
            messages.append((build_topic(school, device, kind), encode_message(message)))
    return messages


@pytest.fixture
def province(fresh_postgres_url: str, tmp_path: Path) -> Iterator[dict[str, District]]:
    required.program("mosquitto", "mosquitto")
    brokers = []
    districts: dict[str, District] = {}
    try:
        with (
            collectors_on("mqtt://unused", tmp_path / "d1") as start_1,
            collectors_on("mqtt://unused", tmp_path / "d2") as start_2,
        ):
            for name, start in (("district-1", start_1), ("district-2", start_2)):
                folder = tmp_path / name
                folder.mkdir()
                broker = MosquittoBroker(folder, free_port())
                broker.start()
                brokers.append(broker)
                collector = start(
                    broker=broker.url,
                    db=fresh_postgres_url,
                    collector_id=f"collector-{name}",
                    data_dir=folder / "collector",
                    housekeeping_interval_s=0.2,
                )
                districts[name] = District(name, broker, collector)
            yield districts
    finally:
        for broker in brokers:
            broker.stop()


UI_PASSWORD = "correct horse battery staple"


def ui_page(collector: RunningCollector, username: str, path: str) -> str:
    """``path`` of the web UI as ``username`` sees it, after logging in through the form."""
    client = TestClient(collector.api.app, base_url="http://testserver", follow_redirects=False)
    login = client.post(
        "/ui/login",
        data={"username": username, "password": UI_PASSWORD, "next": "/ui/"},
        headers={"Origin": "http://testserver"},
    )
    assert login.status_code == 303, login.text
    page = client.get(path)
    assert page.status_code == 200, page.text
    return str(page.text)


def put_sites(collector: RunningCollector) -> None:
    def put(site_id: str, level: str, parent: str | None) -> None:
        body = {"id": site_id, "level": level, "name": site_id, "parent_id": parent}
        response = collector.api.put(f"/api/v1/sites/{site_id}", json=body)
        assert response.status_code == 200, response.text

    put(PROVINCE, "province", None)
    for district, schools in SCHOOLS.items():
        put(district, "district", PROVINCE)
        for school in schools:
            put(school, "school", district)


def test_every_collector_shows_the_whole_province(province: dict[str, District]) -> None:
    first, second = province["district-1"], province["district-2"]
    put_sites(first.collector)  # the site tree is in the shared register: once is enough
    for district in (first, second):
        district.publish([m for school in SCHOOLS[district.name] for m in school_messages(school)])
    everyone = {device for devices in DEVICES.values() for device in devices}

    for district in (first, second):
        api = district.collector

        def devices(api: RunningCollector = api) -> dict[str, str] | None:
            page = api.get("/api/v1/devices", page_size=1000)
            found = {row["device_id"]: row["status"] for row in page["items"]}
            return found if found == dict.fromkeys(everyone, "online") else None

        # Devices another collector ingested, with the liveness that collector saw.
        try:
            wait_until(devices)
        except AssertionError:
            page = api.get("/api/v1/devices", page_size=1000)
            raise AssertionError(
                f"{district.name}'s collector shows "
                f"{ {row['device_id']: row['status'] for row in page['items']} }"
            ) from None
        sites = {row["id"]: row for row in api.get("/api/v1/sites")}
        for school, pcs in DEVICES.items():
            assert (sites[school]["devices"], sites[school]["online"]) == (len(pcs), len(pcs)), (
                district.name,
                school,
                sites[school],
            )

    # The web UI of the collector that heard none of district 2 lists its PCs; an account
    # scoped to district 2 sees its district, rolled up from its schools, and nothing else.
    with first.collector.service.sessions() as session, session.begin():
        create_user(session, username="province", password=UI_PASSWORD, role="viewer")
        create_user(
            session,
            username="district-2",
            password=UI_PASSWORD,
            role="viewer",
            site_scope="district-2",
        )
    province_page = ui_page(first.collector, "province", "/ui/devices")
    district_page = ui_page(first.collector, "district-2", "/ui/devices")
    assert all(device in province_page for device in everyone)
    assert all(device in district_page for device in DEVICES["school-2a"])
    assert not any(
        device in district_page for school in SCHOOLS["district-1"] for device in DEVICES[school]
    )

    # A report for the province, from either collector, covers every district's schools;
    # a district's report only its own.
    period = report_period("month", datetime.now(UTC))
    for district in (first, second):
        with district.collector.service.sessions() as session:
            whole = build_report(session, period, PROVINCE)
            one = build_report(session, period, "district-2")
        figures = {school.site_id: school for school in whole.schools}
        assert set(figures) == set(DEVICES)
        assert all(figures[s].computers == 2 for s in DEVICES), figures
        assert all(figures[s].computers_protected == 2 for s in DEVICES), figures
        coverage = whole.kpi("av_coverage").current
        assert (coverage.numerator, coverage.denominator) == (6, 6)
        assert {school.site_id for school in one.schools} == {"school-2a"}


def test_a_collector_does_not_time_out_another_districts_devices(
    province: dict[str, District], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Collector 1 never hears district 2's devices; while collector 2 does, collector 1's
    heartbeat timeout must not mark them offline in the shared register."""
    first, second = province["district-1"], province["district-2"]
    put_sites(first.collector)
    second.publish(school_messages("school-2a"))
    pcs = set(DEVICES["school-2a"])

    def seen_online(api: RunningCollector) -> bool:
        page = api.get("/api/v1/devices", page_size=1000)
        return {row["device_id"] for row in page["items"] if row["status"] == "online"} >= pcs

    wait_until(lambda: seen_online(first.collector))
    with first.collector.service.sessions() as session:
        query = select(Device.device_id, Device.online, Device.status_changed_at)
        before = {row[0]: tuple(row[1:]) for row in session.execute(query) if row[0] in pcs}
    assert {online for online, _ in before.values()} == {True}
    # No re-reading of recent state changes: what keeps the PCs online at collector 1 must
    # be its check of the register before a timeout, as it is hours after their last change.
    monkeypatch.setattr(service_module, "LIVENESS_SYNC_OVERLAP", timedelta(0))
    timeout = timedelta(seconds=2)
    for district in (first, second):
        district.collector.service.liveness.settings.heartbeat_timeout_s["pc"] = (
            timeout.total_seconds()
        )
    # District 2's PCs keep reporting to their own collector, past collector 1's timeout,
    # while collector 1's housekeeping runs (every 0.2 s here).
    started = time.monotonic()
    while time.monotonic() - started < 3 * timeout.total_seconds():
        second.publish([(t, p) for t, p in school_messages("school-2a") if t.endswith("/health")])
        time.sleep(0.2)  # the PCs' heartbeat: part of the scenario, not a wait for a result
    first.collector.service.housekeeping()
    page = first.collector.get("/api/v1/devices", site_id="school-2a")
    assert {row["device_id"]: row["status"] for row in page["items"]} == dict.fromkeys(
        pcs, "online"
    )
    # Not once offline meanwhile: a timeout written by collector 1 and undone by collector 2's
    # next message would have moved the time of the last change.
    with first.collector.service.sessions() as session:
        after = {row[0]: tuple(row[1:]) for row in session.execute(query) if row[0] in pcs}
    assert after == before
