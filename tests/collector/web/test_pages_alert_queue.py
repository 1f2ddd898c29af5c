"""The alert queue as a SOC works it (issue 14 item 5): severity then age, groups by school
and rule, one note for many alerts, school names, and unknown devices one click from the
register."""

from __future__ import annotations

import re
from datetime import timedelta

from sqlalchemy import select

from campuswatch.collector.alerts.models import Alert, AlertAudit
from campuswatch.collector.alerts.queries import get_alert
from campuswatch.collector.db.models import Asset, AssetMac
from campuswatch.collector.signals import AlertSignal, Level
from campuswatch.wire.ids import utc_now
from tests.collector.web.conftest import TESTSERVER, WebApp
from tests.collector.web.test_pages import csrf_of

ORIGIN = {"Origin": TESTSERVER}
ROGUE_MAC = "de:ad:be:ef:00:66"


def fire(
    web: WebApp,
    device: str | None,
    level: Level,
    *,
    minutes_ago: float,
    rule: str = "av.realtime_off",
    site: str = "q1-a",
    labels: dict[str, str] | None = None,
) -> int:
    at = utc_now() - timedelta(minutes=minutes_ago)
    fingerprint = f"{rule}/{site}/{device or (labels or {}).get('mac')}"
    web.manager.process(
        [
            AlertSignal(
                rule_id=rule,
                rule_title=rule.replace(".", " "),
                level=level,
                status="firing",
                fingerprint=fingerprint,
                site_id=site,
                device_id=device,
                summary=f"{rule} on {device}",
                at=at,
                labels=labels or {},
            )
        ],
        at,
    )
    with web.sessions() as session:
        return session.scalars(select(Alert.id).where(Alert.fingerprint == fingerprint)).one()


def queue_order(html: str) -> list[int]:
    return [int(found) for found in re.findall(r'<tr data-alert="(\d+)"', html)]


def test_queue_is_most_severe_first_then_longest_waiting(web: WebApp) -> None:
    high_old = fire(web, "pc-a1", "high", minutes_ago=90, rule="av.signatures")
    critical = fire(web, "pc-a1", "critical", minutes_ago=5, rule="av.threat")
    medium = fire(web, "pc-b1", "medium", minutes_ago=120, site="q1-b", rule="av.old")
    high_new = web.alert_ids["q1"]  # fired just now by the fixture
    order = queue_order(web.login("admin").get("/ui/alerts").text)
    assert order.index(critical) < order.index(high_old) < order.index(high_new)
    assert order.index(high_new) < order.index(medium) < order.index(web.alert_ids["q3"])


def test_queue_groups_alerts_by_school_and_rule_with_counts(web: WebApp) -> None:
    fire(web, "pc-a1", "high", minutes_ago=3)  # same rule and school as the fixture's q1 alert
    html = web.login("admin").get("/ui/alerts", cookies={"cw_lang": "en"}).text
    groups = re.findall(r'<details class="alert-group" open data-group="([^"]+)">', html)
    assert groups == ["q1-a/av.realtime_off", "q3-c/av.realtime_off"]
    first = html.split('data-group="q1-a/av.realtime_off"')[1].split("</details>")[0]
    assert "2 open alerts" in first and len(queue_order(first)) == 2


def test_school_names_not_ids_on_alert_pages(web: WebApp) -> None:
    client = web.login("admin")
    queue = client.get("/ui/alerts").text
    row = queue.split(f'<tr data-alert="{web.alert_ids["q1"]}"')[1].split("</tr>")[0]
    assert "<td>THCS A</td>" in row and "q1-a" not in row
    detail = client.get(f"/ui/alerts/{web.alert_ids['q1']}").text
    assert re.search(r"<dd>THCS A</dd>", detail)
    assert "<dd>q1-a</dd>" not in detail


def test_bulk_acknowledge_with_one_note(web: WebApp) -> None:
    second = fire(web, "pc-a1", "high", minutes_ago=3)
    other_school = fire(web, "pc-b1", "medium", minutes_ago=1, site="q1-b")
    client = web.login("soc-q1")
    token = csrf_of(client.get("/ui/alerts").text)
    chosen = [web.alert_ids["q1"], second, other_school]
    response = client.post(
        "/ui/alerts/bulk",
        data={
            "csrf_token": token,
            "action": "acknowledge",
            "note": "school IT called, fixing lab 1",
            "alert_id": [str(number) for number in chosen],
            "back": "/ui/alerts?level=high",
        },
        headers=ORIGIN,
    )
    assert response.status_code == 303
    assert response.headers["location"] == "/ui/alerts?level=high&done=3&skipped=0"
    with web.sessions() as session:
        for number in chosen:
            detail = get_alert(session, number)
            assert detail.alert.state == "acknowledged"
            assert detail.alert.acknowledged_by == "user:soc-q1"
            notes = [a.note for a in detail.audit if a.action == "acknowledged"]
            assert notes == ["school IT called, fixing lab 1"]
    again = client.post(
        "/ui/alerts/bulk",
        data={"csrf_token": token, "action": "acknowledge", "alert_id": [str(second)]},
        headers=ORIGIN,
    )
    assert again.headers["location"] == "/ui/alerts?done=0&skipped=1"
    page = client.get(again.headers["location"], cookies={"cw_lang": "en"}).text
    assert "Done for 0 alert(s); 1 skipped" in page


def test_bulk_with_a_foreign_alert_is_refused_and_changes_nothing(web: WebApp) -> None:
    client = web.login("soc-q1")
    token = csrf_of(client.get("/ui/alerts").text)
    own, foreign = web.alert_ids["q1"], web.alert_ids["q3"]
    for action in ("acknowledge", "resolve", "silence"):
        response = client.post(
            "/ui/alerts/bulk",
            data={
                "csrf_token": token,
                "action": action,
                "note": "should not land",
                "alert_id": [str(own), str(foreign)],
            },
            headers=ORIGIN,
        )
        assert response.status_code == 404, action
        assert "q3" not in response.text and "THCS C" not in response.text
    with web.sessions() as session:
        for number in (own, foreign):
            alert = get_alert(session, number).alert
            assert (alert.state, alert.silenced) == ("firing", False)
        notes = session.scalars(select(AlertAudit.note).where(AlertAudit.note.is_not(None)))
        assert "should not land" not in list(notes)


def test_bulk_needs_the_form_token_and_a_responder(web: WebApp) -> None:
    client = web.login("soc-q1")
    data = {"csrf_token": "0" * 64, "action": "resolve", "alert_id": [str(web.alert_ids["q1"])]}
    assert client.post("/ui/alerts/bulk", data=data, headers=ORIGIN).status_code == 403
    viewer = web.login("viewer")
    data["csrf_token"] = csrf_of(viewer.get("/ui/").text)
    assert viewer.post("/ui/alerts/bulk", data=data, headers=ORIGIN).status_code == 403
    assert 'action="/ui/alerts/bulk"' not in viewer.get("/ui/alerts").text
    with web.sessions() as session:
        assert get_alert(session, web.alert_ids["q1"]).alert.state == "firing"


def unknown_host(web: WebApp) -> tuple[int, int]:
    with web.sessions() as session:
        asset = Asset(
            kind="unknown", name="android-hotspot", source="discovery", site_id="q1-a",
            registered=False, manual_fields=[],
        )  # fmt: skip
        asset.macs.append(AssetMac(mac=ROGUE_MAC))
        session.add(asset)
        session.commit()
        asset_id = asset.id
    alert_id = fire(
        web, None, "medium", minutes_ago=1, rule="inventory.unknown_device",
        labels={"mac": ROGUE_MAC.upper(), "entity": f"mac:{ROGUE_MAC}", "ip": "10.1.0.66"},
    )  # fmt: skip
    return asset_id, alert_id


def test_unknown_device_alert_links_to_the_discovered_host_with_register_and_ignore(
    web: WebApp,
) -> None:
    asset_id, alert_id = unknown_host(web)
    client = web.login("admin")
    page = client.get(f"/ui/alerts/{alert_id}", cookies={"cw_lang": "en"}).text
    assert f'class="discovered-host" translate="no" href="/ui/inventory/{asset_id}"' in page
    section = page.split('id="discovered-host"')[1].split("</section>")[0]
    assert 'action="/ui/inventory/confirm"' in section
    assert 'value="register">Register</button>' in section
    assert 'value="ignore" class="secondary">Ignore</button>' in section
    response = client.post(
        "/ui/inventory/confirm",
        data={
            "csrf_token": csrf_of(page),
            "asset_id": str(asset_id),
            "action": "ignore",
            "back": "/ui/inventory?review=unknown",
        },
        headers=ORIGIN,
    )
    assert response.status_code == 303
    with web.sessions() as session:
        asset = session.get(Asset, asset_id)
        assert asset is not None and asset.ignored
    # Decided: the alert page links the host but offers no second decision.
    again = client.get(f"/ui/alerts/{alert_id}").text
    assert f'href="/ui/inventory/{asset_id}"' in again and 'id="discovered-host"' not in again


def test_unknown_device_actions_are_for_the_register_roles_only(web: WebApp) -> None:
    asset_id, alert_id = unknown_host(web)
    page = web.login("soc-q1").get(f"/ui/alerts/{alert_id}").text
    assert f'href="/ui/inventory/{asset_id}"' in page
    assert 'id="discovered-host"' not in page
