"""Two districts with schools, devices, assets, alerts, dead letters and tokens of every role
and scope: the world the scope tests and the scoped fuzzer run in.

Ba Đình (``hn-bd``) holds schools ``bd-a`` (with a lab room) and ``bd-b``; Cầu Giấy
(``hn-cg``) holds ``cg-c``, whose critical alert and devices no Ba Đình account may touch.
The API app is built in-process over the register (no broker): commands are recorded.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, Final

from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session, sessionmaker

from campuswatch.collector.alerts.manager import AlertManager
from campuswatch.collector.alerts.models import Alert
from campuswatch.collector.api.app import create_app
from campuswatch.collector.api.context import ApiContext
from campuswatch.collector.db.access import create_api_token
from campuswatch.collector.db.engine import make_engine, session_factory, upgrade
from campuswatch.collector.db.housekeeping import add_dead_letter
from campuswatch.collector.db.models import ROLES, ApiToken, Asset, Device, Site
from campuswatch.collector.enrolment.models import Enrolment, EnrolmentToken
from campuswatch.collector.liveness import LivenessTracker
from campuswatch.collector.settings import CollectorSettings
from campuswatch.collector.signals import AlertSignal, Evidence
from campuswatch.wire.ids import utc_now
from campuswatch.wire.messages import CommandMessage
from tests.support.device_state import set_latest

SITES: Final = (
    ("hn", None, "province"),
    ("hn-bd", "hn", "district"),
    ("bd-a", "hn-bd", "school"),
    ("bd-a-lab", "bd-a", "room"),
    ("bd-b", "hn-bd", "school"),
    ("hn-cg", "hn", "district"),
    ("cg-c", "hn-cg", "school"),
)
DEVICES: Final = (("pc-a1", "bd-a-lab"), ("pc-a2", "bd-a"), ("pc-b1", "bd-b"), ("pc-c1", "cg-c"))
SCOPES: Final = (None, "hn-bd", "bd-a")
"""Unscoped, a district, a school."""
SUBTREES: Final[dict[str | None, frozenset[str]]] = {
    None: frozenset(site for site, _, _ in SITES),
    "hn-bd": frozenset({"hn-bd", "bd-a", "bd-a-lab", "bd-b"}),
    "bd-a": frozenset({"bd-a", "bd-a-lab"}),
}


@dataclass
class ScopeWorld:
    app: FastAPI
    context: ApiContext
    engine: Engine
    sessions: sessionmaker[Session]
    tokens: dict[tuple[str, str | None], str]
    """Plain token by (role, scope)."""
    token_ids: dict[tuple[str, str | None], int]
    alert_ids: dict[str, int]
    """Alert id by site."""
    asset_ids: dict[str, int]
    """Asset id by device id."""
    commands: list[CommandMessage] = field(default_factory=list)

    def client(self, role: str, scope: str | None) -> TestClient:
        client = TestClient(self.app)
        client.headers["Authorization"] = f"Bearer {self.tokens[(role, scope)]}"
        return client


def foreign_sites(scope: str | None) -> frozenset[str]:
    return SUBTREES[None] - SUBTREES[scope]


def foreign_devices(scope: str | None) -> frozenset[str]:
    return frozenset(device for device, site in DEVICES if site not in SUBTREES[scope])


def _alert(site_id: str, device_id: str, level: str) -> AlertSignal:
    now = utc_now()
    return AlertSignal(
        rule_id="av.realtime_off",
        rule_title="Real-time protection is off",
        level=level,  # type: ignore[arg-type]
        status="firing",
        fingerprint=f"av.realtime_off/{device_id}",
        site_id=site_id,
        device_id=device_id,
        summary=f"{device_id}: real-time protection off",
        at=now,
        evidence=(Evidence(f"msg-{device_id}", "av", now, {"status": "at_risk"}),),
    )


def build_world(db_url: str, tmp_path: Path) -> ScopeWorld:
    """Migrate ``db_url``, seed it and build the API app over it."""
    upgrade(db_url)
    engine = make_engine(db_url)
    sessions = session_factory(engine)
    settings = CollectorSettings(data_dir=tmp_path)
    liveness = LivenessTracker(settings.liveness)
    now = utc_now()
    tokens: dict[tuple[str, str | None], str] = {}
    token_ids: dict[tuple[str, str | None], int] = {}
    asset_ids: dict[str, int] = {}
    with sessions() as session:
        for site_id, parent_id, level in SITES:
            session.add(Site(id=site_id, parent_id=parent_id, level=level, name=site_id.upper()))
            session.flush()
        for device_id, site_id in DEVICES:
            device = Device(device_id=device_id, site_id=site_id, device_type="pc")
            device.online, device.last_seen = True, now
            session.add(device)
            session.flush()
            set_latest(session, device_id, "av", {"status": "protected"}, now)
            liveness.observe(device_id, site_id, "pc", now - timedelta(minutes=1), state=True)
            asset = Asset(
                kind="pc",
                name=f"PC {device_id}",
                source="agent",
                site_id=site_id,
                device_id=device_id,
                serial=f"SN-{device_id}",
                registered=True,
                manual_fields=[],
            )
            session.add(asset)
            session.flush()
            device.asset_id = asset.id
            asset_ids[device_id] = asset.id
        for site_id, device_id in (("bd-a", "pc-a1"), ("bd-b", "pc-b1"), ("cg-c", "pc-c1")):
            add_dead_letter(
                session,
                topic=f"cw/v1/{site_id}/{device_id}/health",
                reason="schema",
                detail=f"bad health from {device_id}",
                payload=b"{}",
            )
        add_dead_letter(session, topic="not/a/topic", reason="topic", detail="?", payload=b"")
        for role in ROLES:
            for scope in SCOPES:
                token, plain = create_api_token(
                    session, name=f"{role}@{scope or 'all'}", role=role, site_scope=scope
                )
                tokens[(role, scope)] = plain
                token_ids[(role, scope)] = token.id
        # Cầu Giấy's own staff: what neither Ba Đình admin may list or revoke.
        for role in ("admin", "viewer"):
            token, plain = create_api_token(
                session, name=f"{role}@hn-cg", role=role, site_scope="hn-cg"
            )
            tokens[(role, "hn-cg")] = plain
            token_ids[(role, "hn-cg")] = token.id
        for site_id in ("bd-a", "cg-c"):
            session.add(
                EnrolmentToken(
                    token_hash=f"{site_id:x<64}"[:64],
                    site_id=site_id,
                    note=f"enrol {site_id}",
                    created_by="seed",
                    expires_at=now + timedelta(days=7),
                    max_uses=10,
                )
            )
        for device_id, site_id in DEVICES:
            session.add(
                Enrolment(
                    device_id=device_id,
                    site_id=site_id,
                    machine={"uuid_sha256": device_id},
                    hostname=device_id.upper(),
                )
            )
        session.commit()
    manager = AlertManager(sessions)
    manager.process(
        [_alert("bd-a", "pc-a2", "high"), _alert("cg-c", "pc-c1", "critical")],
        now,
    )
    with sessions() as session:
        alert_ids = {alert.site_id: alert.id for alert in session.scalars(select(Alert))}
    context = ApiContext(settings=settings, sessions=sessions, liveness=liveness)
    context.extras["alert_manager"] = manager
    world = ScopeWorld(
        create_app(context), context, engine, sessions, tokens, token_ids, alert_ids, asset_ids
    )

    def record(command: CommandMessage) -> bool:
        world.commands.append(command)
        return True

    context.send_command = record
    return world


@contextlib.contextmanager
def scope_world(db_url: str, tmp_path: Path) -> Iterator[ScopeWorld]:
    world = build_world(db_url, tmp_path)
    try:
        yield world
    finally:
        world.engine.dispose()


def _row(row: Any) -> str:
    columns = row.__table__.columns
    values = {column.key: getattr(row, column.key) for column in columns}
    return json.dumps(values, sort_keys=True, default=str)


def foreign_rows(world: ScopeWorld, scope: str | None) -> dict[str, list[str]]:
    """Every row outside ``scope``'s subtree, serialised: what a principal of that scope
    must never change. Tokens count by their own scope (an unscoped token is foreign to a
    scoped principal)."""
    outside = foreign_sites(scope)
    inside = SUBTREES[scope]
    with world.sessions() as session:
        return {
            "sites": [_row(r) for r in session.scalars(select(Site).where(Site.id.in_(outside)))],
            "devices": [
                _row(r) for r in session.scalars(select(Device).where(Device.site_id.in_(outside)))
            ],
            "assets": [
                _row(r)
                for r in session.scalars(select(Asset).order_by(Asset.id))
                if scope is not None and r.site_id not in inside
            ],
            "alerts": [
                _row(r) for r in session.scalars(select(Alert).where(Alert.site_id.in_(outside)))
            ],
            "api_tokens": [
                _row(r)
                for r in session.scalars(select(ApiToken).order_by(ApiToken.id))
                if scope is not None and r.site_scope not in inside
            ],
            "enrolment_tokens": [
                _row(r)
                for r in session.scalars(
                    select(EnrolmentToken).where(EnrolmentToken.site_id.in_(outside))
                )
            ],
            "enrolments": [
                _row(r)
                for r in session.scalars(select(Enrolment).where(Enrolment.site_id.in_(outside)))
            ],
        }
