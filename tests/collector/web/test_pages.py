"""The UI through TestClient: login, CSRF, roles and scope, figures, actions, translation."""

from __future__ import annotations

import re

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from campuswatch.collector.alerts.queries import get_alert
from campuswatch.collector.db.models import ApiToken, Asset
from campuswatch.collector.web import i18n
from campuswatch.collector.web.auth import SESSION_COOKIE, safe_next
from campuswatch.collector.web.overview import av_parts
from campuswatch.collector.web.sparkline import sparkline
from tests.collector.web.catalogue import extracted_msgids, untranslated_left, visible_text
from tests.collector.web.conftest import DISPLAY_TOKEN, TESTSERVER, WebApp, protected_av

ORIGIN = {"Origin": TESTSERVER}


def csrf_of(html: str) -> str:
    match = re.search(r'name="csrf_token" value="([0-9a-f]{64})"', html)
    assert match, "page has no form token"
    return match.group(1)


def data_value(html: str, name: str, scope: str = "total") -> str:
    section = html.split(f'data-scope="{scope}"', 1)[1]
    match = re.search(rf'{name}="([^"]*)"', section)
    assert match, name
    return match.group(1)


# --- catalogue ------------------------------------------------------------------------------


def test_every_ui_string_has_a_vietnamese_translation_with_the_same_placeholders() -> None:
    used = extracted_msgids()
    catalogue = {
        m.id: m.string
        for m in i18n.read_catalogue("vi")
        if isinstance(m.id, str) and m.id and isinstance(m.string, str)
    }
    assert used, "extraction found nothing"
    missing = sorted(used - set(catalogue))
    empty = sorted(msgid for msgid in used if msgid in catalogue and not catalogue[msgid])
    stale = sorted(set(catalogue) - used)
    assert (missing, empty, stale) == ([], [], [])
    for msgid, text in catalogue.items():
        assert sorted(re.findall(r"%\(\w+\)s", msgid)) == sorted(re.findall(r"%\(\w+\)s", text))
    assert i18n.gettext_for("vi")("Overview") == "Tổng quan"
    assert i18n.gettext_for("en")("Overview") == "Overview"


def test_language_choice_prefers_cookie_then_browser_then_vietnamese() -> None:
    assert i18n.pick_language("en", "vi") == "en"
    assert i18n.pick_language(None, "fr-FR,en;q=0.8") == "en"
    assert i18n.pick_language("xx", None) == "vi"


def test_untranslated_check_detects_english(web: WebApp) -> None:
    # The checker itself must be able to fail, or the vi page test proves nothing.
    assert "Open alerts" in untranslated_left("Tổng quan · Open alerts")
    assert untranslated_left("Tổng quan · Cảnh báo đang mở") == []


def test_every_page_in_vietnamese_leaves_no_english(web: WebApp) -> None:
    client = web.login("admin")
    client.cookies.set("cw_lang", "vi")
    pages = [
        "/ui/",
        "/ui/alerts",
        f"/ui/alerts/{web.alert_ids['q1']}",
        "/ui/inventory",
        "/ui/inventory/1",
        "/ui/inventory/import",
        "/ui/devices",
        "/ui/devices/pc-a1",
        "/ui/reports",
        f"/ui/wall?token={DISPLAY_TOKEN}",
        "/ui/login",
    ]
    for path in pages:
        response = client.get(path)
        assert response.status_code == 200, path
        assert 'lang="vi"' in response.text
        assert untranslated_left(visible_text(response.text)) == [], path
    report = client.post(
        "/ui/inventory/import",
        data={"csrf_token": csrf_of(client.get("/ui/inventory/import").text), "dry_run": "true"},
        files={"file": ("bad.csv", b"asset_tag,kind\nTS-9,spaceship\n", "text/csv")},
        headers=ORIGIN,
    )
    assert untranslated_left(visible_text(report.text)) == []


# --- login, logout, CSRF --------------------------------------------------------------------


def test_pages_need_a_login_and_root_redirects_to_the_ui(web: WebApp) -> None:
    client = web.client()
    assert client.get("/").headers["location"] == "/ui/"
    response = client.get("/ui/inventory?kind=pc")
    assert response.status_code == 303
    assert response.headers["location"] == "/ui/login?next=%2Fui%2Finventory%3Fkind%3Dpc"


def test_login_sets_a_strict_httponly_session_that_the_api_accepts(web: WebApp) -> None:
    client = web.client()
    response = client.post(
        "/ui/login",
        data={
            "username": "admin",
            "password": "correct horse battery staple",
            "next": "/ui/devices",
        },
        headers=ORIGIN,
    )
    assert response.status_code == 303 and response.headers["location"] == "/ui/devices"
    cookie = response.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Max-Age=43200" in cookie
    assert client.get("/api/v1/sites").status_code == 200  # the API reads the same cookie
    with web.sessions() as session:
        token = session.scalar(select(ApiToken).where(ApiToken.name == "ui-session:admin"))
        assert token is not None and token.role == "admin"


def test_wrong_password_and_unknown_user_fail_alike(web: WebApp) -> None:
    client = web.client()
    client.cookies.set("cw_lang", "en")
    wrong = client.post("/ui/login", data={"username": "admin", "password": "nope"}, headers=ORIGIN)
    unknown = client.post("/ui/login", data={"username": "ghost", "password": "x"}, headers=ORIGIN)
    assert wrong.status_code == unknown.status_code == 401
    assert SESSION_COOKIE not in wrong.headers.get("set-cookie", "")
    assert "Wrong user name, password or token." in wrong.text


def test_login_with_a_pasted_api_token_and_logout_keeps_that_token(web: WebApp) -> None:
    client = web.client()
    response = client.post("/ui/login", data={"token": web.admin_token}, headers=ORIGIN)
    assert response.status_code == 303
    page = client.get("/ui/")
    assert page.status_code == 200
    client.post("/ui/logout", data={"csrf_token": csrf_of(page.text)}, headers=ORIGIN)
    api = TestClient(web.app, headers={"Authorization": f"Bearer {web.admin_token}"})
    assert api.get("/api/v1/sites").status_code == 200


def test_logout_revokes_the_session_token(web: WebApp) -> None:
    client = web.login("viewer")
    session_token = client.cookies[SESSION_COOKIE]
    page = client.get("/ui/")
    response = client.post("/ui/logout", data={"csrf_token": csrf_of(page.text)}, headers=ORIGIN)
    assert response.status_code == 303
    api = TestClient(web.app, headers={"Authorization": f"Bearer {session_token}"})
    assert api.get("/api/v1/sites").status_code == 401


def test_login_from_another_origin_is_refused(web: WebApp) -> None:
    response = web.client().post(
        "/ui/login",
        data={"username": "admin", "password": "correct horse battery staple"},
        headers={"Origin": "https://evil.example"},
    )
    assert response.status_code == 403


def test_form_posts_need_the_session_bound_form_token(web: WebApp) -> None:
    client = web.login("soc-q1")
    alert_id = web.alert_ids["q1"]
    url = f"/ui/alerts/{alert_id}/acknowledge"
    assert client.post(url, data={"note": "x"}, headers=ORIGIN).status_code == 403
    other = web.login("admin")
    foreign = csrf_of(other.get("/ui/").text)
    assert client.post(url, data={"csrf_token": foreign}, headers=ORIGIN).status_code == 403
    good = csrf_of(client.get(f"/ui/alerts/{alert_id}").text)
    evil = {"Origin": "https://evil.example"}
    assert client.post(url, data={"csrf_token": good}, headers=evil).status_code == 403
    with web.sessions() as session:
        assert get_alert(session, alert_id).alert.state == "firing"


def test_next_parameter_cannot_redirect_off_site() -> None:
    assert safe_next("//evil.example/ui") == "/ui/"
    assert safe_next("https://evil.example") == "/ui/"
    assert safe_next("/ui/alerts?level=high") == "/ui/alerts?level=high"


# --- figures, scope and roles ---------------------------------------------------------------


def test_overview_figures_for_an_unscoped_user(web: WebApp) -> None:
    html = web.login("admin").get("/ui/").text
    # PCs: a1 protected, a2 at risk, b1 protected, c1 protected; the projector is no PC.
    assert data_value(html, "data-part") == "3" and data_value(html, "data-whole") == "4"
    assert data_value(html, "data-av-realtime") == "3"
    assert data_value(html, "data-av-fresh") == "4"
    # Schools: A fibre, B adsl, C 4g → 2 of 3 on broadband; B has nothing online.
    assert re.search(r'data-part="2">2</span> / <span data-whole="3"', html)
    # Assets: retired one excluded; A1 and the projector registered of 4.
    assert "50.0 %" in html  # the reports' one rounding rule: always one decimal
    assert data_value(html, "data-open-alerts") == "2"
    assert data_value(html, "data-devices-online") == "3"
    assert data_value(html, "data-devices-offline") == "2"
    assert data_value(html, "data-open-alerts", scope="q3") == "1"


def test_district_soc_sees_only_its_schools(web: WebApp) -> None:
    client = web.login("soc-q1")
    overview = client.get("/ui/").text
    assert "THCS A" in overview and "THCS B" in overview and "THCS C" not in overview
    assert data_value(overview, "data-whole") == "3"  # PCs of Quận 1 only
    queue = client.get("/ui/alerts").text
    assert f'data-alert="{web.alert_ids["q1"]}"' in queue
    assert f'data-alert="{web.alert_ids["q3"]}"' not in queue
    assert client.get(f"/ui/alerts/{web.alert_ids['q3']}").status_code == 404
    assert client.get("/ui/devices/pc-c1").status_code == 404
    assert "pc-c1" not in client.get("/ui/devices").text
    assert client.get("/ui/inventory?site_id=q3-c").status_code == 404
    assert "CAM C1" not in client.get("/ui/inventory").text
    assert b"CAM C1" not in client.get("/ui/inventory/export.csv").content


def test_acknowledge_resolve_and_silence_write_the_audit_trail(web: WebApp) -> None:
    client = web.login("soc-q1")
    alert_id = web.alert_ids["q1"]
    page = client.get(f"/ui/alerts/{alert_id}", cookies={"cw_lang": "en"})
    assert "Turn real-time protection back on." in page.text
    token = csrf_of(page.text)
    response = client.post(
        f"/ui/alerts/{alert_id}/acknowledge",
        data={"csrf_token": token, "note": "calling the school"},
        headers=ORIGIN,
    )
    assert response.status_code == 303
    client.post(
        f"/ui/alerts/{alert_id}/silence", data={"csrf_token": token, "hours": "4"}, headers=ORIGIN
    )
    again = client.post(
        f"/ui/alerts/{alert_id}/acknowledge", data={"csrf_token": token}, headers=ORIGIN
    )
    assert again.headers["location"].endswith("error=AlertStateError")
    with web.sessions() as session:
        detail = get_alert(session, alert_id)
    assert detail.alert.state == "acknowledged"
    assert detail.alert.acknowledged_by == "user:soc-q1"
    assert detail.alert.silenced
    actions = [(entry.action, entry.actor, entry.note) for entry in detail.audit]
    assert ("acknowledged", "user:soc-q1", "calling the school") in actions
    vi = client.get(f"/ui/alerts/{alert_id}", cookies={"cw_lang": "vi"}).text
    assert "Bật lại bảo vệ thời gian thực." in vi


def test_viewer_may_look_but_not_act(web: WebApp) -> None:
    client = web.login("viewer")
    page = client.get(f"/ui/alerts/{web.alert_ids['q1']}")
    assert "/acknowledge" not in page.text
    response = client.post(
        f"/ui/alerts/{web.alert_ids['q1']}/acknowledge",
        data={"csrf_token": csrf_of(page.text)},
        headers=ORIGIN,
    )
    assert response.status_code == 403
    assert client.get("/ui/inventory/import").status_code == 403


def test_inventory_filters_room_kind_and_last_seen(web: WebApp) -> None:
    client = web.login("facility")
    lab = client.get("/ui/inventory", params={"room": "lab 1"}).text
    assert "LAB-A1" in lab and "LAB-A2" in lab and "Máy chiếu B1" not in lab
    stale = client.get("/ui/inventory", params={"last_seen": "stale30"}).text
    assert "CAM C1" in stale and "LAB-A1" not in stale
    projectors = client.get("/ui/inventory", params={"kind": "projector", "search": "TS-0001"}).text
    assert "Máy chiếu B1" in projectors and "LAB-A1" not in projectors
    export = client.get("/ui/inventory/export.xlsx", params={"site_id": "q1-b"})
    assert export.status_code == 200 and export.content[:2] == b"PK"


def test_edit_records_history_and_refuses_a_stale_version(web: WebApp) -> None:
    client = web.login("facility")
    with web.sessions() as session:
        asset = session.scalar(select(Asset).where(Asset.name == "LAB-A2"))
        assert asset is not None
        asset_id, version = asset.id, asset.version
    page = client.get(f"/ui/inventory/{asset_id}").text
    form = {
        "csrf_token": csrf_of(page), "expected_version": str(version), "name": "LAB-A2",
        "asset_tag": "TS-0099", "kind": "pc", "site_id": "q1-a", "room": "Lab 2",
        "status": "in_service", "registered": "true",
    }  # fmt: skip
    saved = client.post(f"/ui/inventory/{asset_id}", data=form, headers=ORIGIN)
    assert saved.status_code == 303
    detail = client.get(f"/ui/inventory/{asset_id}").text
    assert "TS-0099" in detail and "user:facility" in detail
    with web.sessions() as session:
        edited = session.get(Asset, asset_id)
        assert edited is not None and edited.room == "Lab 2" and edited.registered
        assert "room" in edited.manual_fields and "name" not in edited.manual_fields
    stale = client.post(f"/ui/inventory/{asset_id}", data={**form, "room": "Lab 3"}, headers=ORIGIN)
    assert stale.status_code == 409
    bad = {**form, "expected_version": str(version + 1), "security_level": "9"}
    refused = client.post(f"/ui/inventory/{asset_id}", data=bad, headers=ORIGIN)
    assert refused.status_code == 422 and "outside 1-5" in refused.text


def test_import_dry_run_lists_every_row_error_and_writes_nothing(web: WebApp) -> None:
    client = web.login("admin")
    token = csrf_of(client.get("/ui/inventory/import").text)
    data = b"asset_tag,kind,security_level\nTS-1,projector,2\nTS-2,spaceship,3\nTS-3,pc,7\n"
    response = client.post(
        "/ui/inventory/import",
        data={"csrf_token": token, "dry_run": "true"},
        files={"file": ("assets.csv", data, "text/csv")},
        headers=ORIGIN,
    )
    assert response.status_code == 200
    assert 'data-errors="2"' in response.text
    assert "unknown kind" in response.text and "outside 1-5" in response.text
    with web.sessions() as session:
        assert session.scalar(select(Asset).where(Asset.asset_tag == "TS-1")) is None


def test_wall_display_opens_with_the_display_or_a_viewer_token_only(web: WebApp) -> None:
    client = web.client()
    assert client.get("/ui/wall").status_code == 401
    assert client.get("/ui/wall", params={"token": web.admin_token}).status_code == 401
    wall = client.get("/ui/wall", params={"token": DISPLAY_TOKEN})
    # No meta refresh (a failed reload showed the browser's error page): wall.js polls.
    assert wall.status_code == 200 and 'http-equiv="refresh"' not in wall.text
    assert 'data-poll-s="30.0"' in wall.text and "/ui/static/wall.js" in wall.text
    assert "body" in wall.text and 'class="wall"' in wall.text


def test_sparkline_scales_into_its_box() -> None:
    line = sparkline([(0, 10.0), (1000, 20.0), (2000, 15.0)])
    xs = [float(p.split(",")[0]) for p in line.points.split()]
    ys = [float(p.split(",")[1]) for p in line.points.split()]
    assert xs[0] == 2.0 and xs[-1] == line.width - 2
    assert ys[1] == 2.0 and ys[0] == line.height - 2  # the highest value at the top
    assert (line.minimum, line.maximum, line.last) == (10.0, 20.0, 15.0)
    with pytest.raises(ValueError):
        sparkline([])


@pytest.mark.parametrize(
    ("age_hours", "expected"),
    [
        (5.0, (True, True, True, True)),
        (400 * 24.0, (False, True, True, False)),  # Defender's own flag said "up to date"
        (None, (False, True, True, False)),  # no signatures at all
    ],
)
def test_overview_applies_the_signature_age_limit(
    age_hours: float | None, expected: tuple[bool, bool, bool, bool]
) -> None:
    """The overview and the coverage KPI agree on what "up to date" means (issue 14)."""
    report = protected_av()
    products = report["products"]
    assert isinstance(products, list)
    products[0]["signature_age_hours"] = age_hours
    assert av_parts(report) == expected
