"""What an alert says: the facts the SOC acts on, printed for people, without user names.

From a message through the shipped rules, the alert manager and the three forwarding
formats (CEF, ECS, OCSF), so a fact lost anywhere on the way fails here.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.orm import Session, sessionmaker

import campuswatch.collector.alerts.models  # noqa: F401  (registers the alert tables)
from campuswatch.collector.alerts.manager import AlertManager
from campuswatch.collector.alerts.policy import AlertPolicy
from campuswatch.collector.db.engine import make_engine, session_factory, upgrade
from campuswatch.collector.db.models import Site
from campuswatch.collector.forward.cef import render_cef
from campuswatch.collector.forward.json_formats import render_ecs, render_ocsf
from campuswatch.collector.register.assets import AssetChange
from campuswatch.collector.rules.engine import RuleEngine
from campuswatch.collector.rules.loader import load_rule_pack
from campuswatch.collector.rules.model import RulePack
from campuswatch.collector.rules.testing import load_test_case, replay_test_case
from campuswatch.collector.signals import AlertNotification, AlertSignal
from tests.collector.forward.schema_checks import ecs_problems, ocsf_problems
from tests.collector.rules.test_engine import msg

ROOT = Path(__file__).resolve().parents[3]
RULES = ROOT / "rules"
SITE = "thcs-le-loi"
T0 = datetime(2025, 3, 3, 7, 0, tzinfo=UTC)
THREAT = "Trojan:Win32/Wacatac.B!ml"
RAW_PATH = r"C:\Users\nguyen.van.a\Downloads\game_setup.exe"
MINIMISED_PATH = r"C:\Users\<user>\Downloads\game_setup.exe"


def shipped(*files: str) -> RulePack:
    pack = load_rule_pack(RULES)
    chosen = [loaded for loaded in pack.rules if loaded.path.stem in files]
    assert len(chosen) == len(files)
    return RulePack.of(chosen, RULES)


@pytest.fixture
def sessions(db_url: str) -> Iterator[sessionmaker[Session]]:
    upgrade(db_url)
    engine = make_engine(db_url)
    factory = session_factory(engine)
    with factory() as session:
        session.add(Site(id=SITE, level="school", name="THCS Lê Lợi"))
        session.commit()
    yield factory
    engine.dispose()


def notify(sessions: sessionmaker[Session], signals: list[AlertSignal]) -> AlertNotification:
    """The notification the alert manager sends for the first firing signal."""
    sent: list[AlertNotification] = []
    manager = AlertManager(
        sessions,
        settings=AlertPolicy(group_wait=timedelta(0)),
        on_notifications=lambda _session, batch: sent.extend(batch),
    )
    manager.process([s for s in signals if s.status == "firing"][:1], T0)
    manager.tick(T0 + timedelta(seconds=1))
    assert sent, "no notification"
    return sent[0]


def payloads(notification: AlertNotification) -> dict[str, str]:
    return {
        "cef": render_cef(notification),
        "ecs": json.dumps(render_ecs(notification), ensure_ascii=False),
        "ocsf": json.dumps(render_ocsf(notification), ensure_ascii=False),
    }


def test_threat_alert_names_threat_action_and_a_minimised_path(
    sessions: sessionmaker[Session],
) -> None:
    engine = RuleEngine(shipped("av_threat_event"))
    signals = engine.process(
        msg(
            0,
            kind="event",
            site=SITE,
            device_id="pc-01",
            event_type="threat_detected",
            severity="critical",
            message=f"{THREAT} found in {RAW_PATH}",
            attributes={"threat": THREAT, "action": "quarantined", "path": RAW_PATH},
        )
    )
    [fired] = signals
    for text in (fired.summary, json.dumps([e.excerpt for e in fired.evidence])):
        assert THREAT in text and "quarantined" in text, text
        assert "nguyen.van.a" not in text
    assert MINIMISED_PATH in fired.summary
    assert any(MINIMISED_PATH in e.excerpt.values() for e in fired.evidence)
    assert "nguyen.van.a" not in json.dumps(fired.labels)
    for name, payload in payloads(notify(sessions, signals)).items():
        unescaped = payload.replace("\\\\", "\\")
        assert THREAT in payload, name
        assert "quarantined" in payload, name
        assert MINIMISED_PATH in unescaped or MINIMISED_PATH in payload, (name, payload)
        assert "nguyen.van.a" not in payload, name


def test_threat_alert_without_attributes_still_reads_well() -> None:
    engine = RuleEngine(shipped("av_threat_event"))
    [fired] = engine.process(
        msg(0, kind="event", site=SITE, device_id="pc-01", event_type="threat_detected")
    )
    assert fired.summary == f"Threat detected on pc-01 at {SITE}"


def sweep(at_s: float, **host: Any) -> Any:
    return msg(
        at_s,
        kind="discovery",
        site=SITE,
        device_id="scanner-01",
        subnet="10.1.0.0/24",
        hosts=[{"ip": "10.1.0.66", "mac": "de:ad:be:ef:00:01", **host}],
    )


def unknown(engine: RuleEngine, at_s: float) -> list[AlertSignal]:
    change = AssetChange(
        7, "created", (), False, "discovery", True, mac="de:ad:be:ef:00:01", ip="10.1.0.66"
    )
    return engine.process_asset_changes(SITE, [change], T0 + timedelta(seconds=at_s))


def test_unknown_device_alert_names_vendor_and_host_name() -> None:
    engine = RuleEngine(shipped("unknown_device"))
    engine.process(sweep(0, vendor="Ubiquiti Inc.", hostname="unifi-ap-lab2"))
    [fired] = unknown(engine, 0)
    assert "Ubiquiti Inc." in fired.summary and "unifi-ap-lab2" in fired.summary
    assert fired.evidence and fired.evidence[0].excerpt["vendor"] == "Ubiquiti Inc."
    assert fired.evidence[0].excerpt["hostname"] == "unifi-ap-lab2"
    assert fired.labels["vendor"] == "Ubiquiti Inc." and fired.labels["ip"] == "10.1.0.66"


def test_unknown_device_alert_without_vendor_has_no_empty_brackets() -> None:
    engine = RuleEngine(shipped("unknown_device"))
    engine.process(sweep(0))
    [fired] = unknown(engine, 0)
    assert "()" not in fired.summary and "  " not in fired.summary
    assert fired.summary == f"Unknown device de:ad:be:ef:00:01 at 10.1.0.66 on the {SITE} network"


def test_pc_alert_carries_the_ip_of_its_latest_inventory(
    sessions: sessionmaker[Session],
) -> None:
    engine = RuleEngine(shipped("av_missing"))
    engine.process(
        msg(
            0,
            kind="inventory",
            site=SITE,
            device_id="pc-07",
            digest="0" * 64,
            hostname="LAB1-PC07",
            interfaces=[
                {"name": "lo", "ipv4": ["127.0.0.1"]},
                {"name": "eth0", "mac": "00:1a:2b:3c:4d:5e", "ipv4": ["10.20.1.57"], "up": True},
            ],
        )
    )
    signals = engine.process(msg(60, kind="av", site=SITE, device_id="pc-07", status="no_av"))
    [fired] = signals
    assert fired.labels["ip"] == "10.20.1.57" and fired.labels["hostname"] == "LAB1-PC07"
    notification = notify(sessions, signals)
    assert notification.ip == "10.20.1.57"
    assert "src=10.20.1.57" in render_cef(notification)
    ecs = render_ecs(notification)
    assert ecs["host"]["ip"] == ["10.20.1.57"]
    assert ecs["host"]["name"] == "LAB1-PC07"
    assert render_ocsf(notification)["device"]["ip"] == "10.20.1.57"


_LONG_FLOAT = re.compile(r"\d\.\d{3,}")


def shipped_summaries() -> Iterator[tuple[str, AlertSignal]]:
    for loaded in load_rule_pack(RULES).rules:
        assert loaded.test_path is not None
        case, problems = load_test_case(loaded.test_path, str(loaded.test_path))
        assert case is not None, problems
        for fired in replay_test_case(loaded.rule, case):
            yield loaded.path.stem, fired


def test_every_shipped_rule_prints_its_test_case_for_people() -> None:
    seen: set[str] = set()
    for name, fired in shipped_summaries():
        seen.add(name)
        texts = [fired.summary, *fired.labels.values()]
        for text in texts:
            assert not _LONG_FLOAT.search(text), (name, text)
            assert "()" not in text and "None" not in text, (name, text)
            assert "{" not in text and "}" not in text, (name, text)
        assert "  " not in fired.summary and not fired.summary.startswith(" "), (
            name,
            fired.summary,
        )
    assert len(seen) >= 20


def test_firmware_alert_prints_the_version_not_the_vendor() -> None:
    summaries = [f.summary for name, f in shipped_summaries() if name == "outdated_firmware"]
    assert summaries
    assert any("firmware 1.9.3" in text for text in summaries), summaries
    assert not any(re.search(r"firmware (Epson|Hikvision|Ubiquiti)", t) for t in summaries)


def test_signature_age_prints_as_a_duration() -> None:
    summaries = [
        f.summary
        for name, f in shipped_summaries()
        if name == "av_signatures_stale" and f.status == "firing"
    ]
    assert summaries == ["Signatures on pc-01 at thcs-a are 28 days old"]


def test_repeated_triggers_keep_the_device_identity() -> None:
    """The manager refreshes an alert's labels from its repeats: they must carry the IP too."""
    engine = RuleEngine(shipped("av_missing"))
    engine.process(
        msg(
            0,
            kind="inventory",
            site=SITE,
            device_id="pc-07",
            digest="0" * 64,
            hostname="LAB1-PC07",
            interfaces=[{"name": "eth0", "ipv4": ["10.20.1.57"]}],
        )
    )
    engine.process(msg(60, kind="av", site=SITE, device_id="pc-07", status="no_av"))
    engine.process(msg(120, kind="av", site=SITE, device_id="pc-07", status="no_av"))
    repeats = engine.take_repeats()
    assert repeats, "the second trigger is a repeat"
    assert all(signal.labels.get("ip") == "10.20.1.57" for signal in repeats)
    assert all(signal.labels.get("hostname") == "LAB1-PC07" for signal in repeats)


def test_a_shipped_rule_reaches_a_vietnamese_soc_in_vietnamese(
    sessions: sessionmaker[Session],
) -> None:
    """Rule → engine → alert manager → outbox payload → CEF/ECS/OCSF with ``language: vi``."""
    from campuswatch.collector.forward.payload import notification_from_json, notification_to_json

    engine = RuleEngine(shipped("av_signatures_stale"))
    product = {"name": "Defender", "source": "defender", "signature_age_hours": 97}
    signals = engine.process(
        msg(0, kind="av", site=SITE, device_id="pc-01", status="at_risk", products=[product])
    )
    stored = notification_from_json(notification_to_json(notify(sessions, signals)))
    vietnamese = "Chữ ký virus trên pc-01 tại thcs-le-loi đã 4 ngày chưa được cập nhật"
    english = "Signatures on pc-01 at thcs-le-loi are 4 days old"
    cef = render_cef(stored, language="vi")
    assert f"msg={vietnamese}" in cef and "|Chữ ký virus cũ hơn 3 ngày|" in cef
    assert render_ecs(stored, language="vi")["message"] == vietnamese
    ocsf = render_ocsf(stored, language="vi")
    assert ocsf["finding_info"]["title"] == "Chữ ký virus cũ hơn 3 ngày"
    assert ocsf["message"] == vietnamese
    assert f"msg={english}" in render_cef(stored)
    assert (
        render_ecs(stored, language="en")["rule"]["name"]
        == "Antivirus signatures older than 3 days"
    )


def test_every_shipped_rule_forwards_json_its_schema_accepts(
    sessions: sessionmaker[Session],
) -> None:
    """Each shipped rule's test case, through the alert manager, as ECS and OCSF documents
    checked against the published schemas (tests/collector/forward/schema_checks.py)."""
    firing = [fired for _, fired in shipped_summaries() if fired.status == "firing"]
    sent: list[AlertNotification] = []
    manager = AlertManager(
        sessions,
        settings=AlertPolicy(group_wait=timedelta(0)),
        on_notifications=lambda _session, batch: sent.extend(batch),
    )
    manager.process(firing, T0)
    manager.tick(T0 + timedelta(seconds=1))
    assert len({n.rule_id for n in sent}) >= 20
    for n in sent:
        for language in ("en", "vi"):
            assert ecs_problems(render_ecs(n, language=language)) == [], n.rule_id
            assert ocsf_problems(render_ocsf(n, language=language)) == [], n.rule_id
