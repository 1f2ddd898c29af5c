"""A UI app over a migrated register seeded with two districts, PCs, assets and an alert."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from pydantic import SecretStr
from sqlalchemy.orm import Session, sessionmaker

import campuswatch.collector.alerts.models  # noqa: F401  (registers the alert tables)
from campuswatch.collector.alerts.manager import AlertManager
from campuswatch.collector.api.app import create_app
from campuswatch.collector.api.context import ApiContext
from campuswatch.collector.db.access import create_api_token, create_user
from campuswatch.collector.db.engine import make_engine, session_factory
from campuswatch.collector.db.models import Asset, Device, Site
from campuswatch.collector.liveness import LivenessTracker
from campuswatch.collector.settings import CollectorSettings
from campuswatch.collector.signals import AlertSignal, Evidence
from campuswatch.collector.web import mount
from campuswatch.collector.web.pages_alerts import ALERT_MANAGER_KEY
from campuswatch.wire.ids import utc_now
from tests.support.device_state import set_latest
from tests.support.postgres import migrated_sqlite_url

PASSWORD = "correct horse battery staple"
DISPLAY_TOKEN = "display-" + "x" * 24
TESTSERVER = "http://testserver"


def protected_av() -> dict[str, object]:
    return {
        "status": "protected",
        "products": [
            {"name": "Defender", "source": "defender", "enabled": True,
             "realtime_protection": True, "signatures_up_to_date": True,
             "signature_age_hours": 5.0}
        ],
    }  # fmt: skip


def at_risk_av() -> dict[str, object]:
    return {
        "status": "at_risk",
        "products": [
            {"name": "ClamAV", "source": "clamav", "enabled": True,
             "realtime_protection": False, "signatures_up_to_date": True,
             "signature_age_hours": 5.0}
        ],
    }  # fmt: skip


@dataclass
class WebApp:
    app: FastAPI
    context: ApiContext
    sessions: sessionmaker[Session]
    manager: AlertManager
    admin_token: str
    alert_ids: dict[str, int]

    def client(self) -> TestClient:
        return TestClient(self.app, base_url=TESTSERVER, follow_redirects=False)

    def login(self, username: str, password: str = PASSWORD) -> TestClient:
        client = self.client()
        response = client.post(
            "/ui/login",
            data={"username": username, "password": password, "next": "/ui/"},
            headers={"Origin": TESTSERVER},
        )
        assert response.status_code == 303, response.text
        return client


def seed(sessions: sessionmaker[Session], liveness: LivenessTracker) -> None:
    now = utc_now()
    with sessions() as session:
        session.add_all(
            [
                Site(id="hcm", level="province", name="TP. Hồ Chí Minh"),
                Site(id="q1", level="district", name="Quận 1", parent_id="hcm"),
                Site(id="q3", level="district", name="Quận 3", parent_id="hcm"),
                Site(id="q1-a", level="school", name="THCS A", parent_id="q1", uplink_type="fibre"),
                Site(id="q1-a-lab", level="room", name="Phòng máy", parent_id="q1-a"),
                Site(id="q1-b", level="school", name="THCS B", parent_id="q1", uplink_type="adsl"),
                Site(id="q3-c", level="school", name="THCS C", parent_id="q3", uplink_type="4g"),
            ]
        )
        session.flush()
        devices = [
            ("pc-a1", "q1-a-lab", "pc", protected_av(), True),
            ("pc-a2", "q1-a", "pc", at_risk_av(), True),
            ("pc-b1", "q1-b", "pc", protected_av(), False),
            ("proj-b1", "q1-b", "projector", None, False),
            ("pc-c1", "q3-c", "pc", protected_av(), True),
        ]
        for device_id, site_id, kind, av, online in devices:
            device = Device(device_id=device_id, site_id=site_id, device_type=kind)
            device.online, device.last_seen = online, now
            session.add(device)
            session.flush()
            if av:
                set_latest(session, device_id, "av", av, now)
            liveness.observe(device_id, site_id, kind, now - timedelta(minutes=1), state=online)
        session.add_all(
            [
                Asset(kind="pc", name="LAB-A1", source="agent", site_id="q1-a-lab", room="Lab 1",
                      registered=True, manual_fields=[], device_id="pc-a1", last_seen=now),
                Asset(kind="pc", name="LAB-A2", source="agent", site_id="q1-a", room="Lab 1",
                      registered=False, manual_fields=[], device_id="pc-a2", last_seen=now),
                Asset(kind="projector", name="Máy chiếu B1", source="device", site_id="q1-b",
                      room="P.201", registered=True, manual_fields=[], asset_tag="TS-0001"),
                Asset(kind="pc", name="Old PC", source="manual", site_id="q1-b", status="retired",
                      registered=False, manual_fields=[]),
                Asset(kind="camera", name="CAM C1", source="discovery", site_id="q3-c",
                      registered=False, manual_fields=[], last_seen=now - timedelta(days=40)),
            ]
        )  # fmt: skip
        create_user(session, username="admin", password=PASSWORD, role="admin", language="en")
        create_user(session, username="soc-q1", password=PASSWORD, role="soc", site_scope="q1")
        create_user(session, username="facility", password=PASSWORD, role="facilities")
        create_user(session, username="viewer", password=PASSWORD, role="viewer")
        session.commit()


def raise_alert(manager: AlertManager, site_id: str, device_id: str, level: str) -> int:
    now = utc_now()
    signal = AlertSignal(
        rule_id="av.realtime_off",
        rule_title="Real-time protection is off",
        level=level,  # type: ignore[arg-type]
        status="firing",
        fingerprint=f"av.realtime_off/{device_id}",
        site_id=site_id,
        device_id=device_id,
        summary=f"{device_id}: real-time protection off",
        at=now,
        runbook_en="Turn real-time protection back on.",
        runbook_vi="Bật lại bảo vệ thời gian thực.",
        evidence=(Evidence("0190-msg", "av", now, {"status": "at_risk"}),),
    )
    manager.process([signal], now)
    with manager._session_factory() as session:
        from campuswatch.collector.alerts.models import Alert

        alert = session.query(Alert).filter_by(fingerprint=signal.fingerprint).one()
        return alert.id


@pytest.fixture
def web(tmp_path: Path) -> Iterator[WebApp]:
    engine = make_engine(migrated_sqlite_url(tmp_path / "register.sqlite"))
    sessions = session_factory(engine)
    settings = CollectorSettings(data_dir=tmp_path, display_token=SecretStr(DISPLAY_TOKEN))
    liveness = LivenessTracker(settings.liveness)
    seed(sessions, liveness)
    manager = AlertManager(sessions)
    alert_ids = {
        "q1": raise_alert(manager, "q1-a", "pc-a2", "high"),
        "q3": raise_alert(manager, "q3-c", "pc-c1", "medium"),
    }
    with sessions() as session:
        _, admin_token = create_api_token(session, name="test-admin", role="admin")
        session.commit()
    context = ApiContext(settings=settings, sessions=sessions, liveness=liveness)
    context.extras[ALERT_MANAGER_KEY] = manager
    app = create_app(context)
    mount(app)
    yield WebApp(app, context, sessions, manager, admin_token, alert_ids)
    engine.dispose()
