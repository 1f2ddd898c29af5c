"""The UI holds the scope like the API: a page or form naming another district's object is
"not found", and an edit cannot carry an object out of the editor's scope (issue 13, item 3)."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from campuswatch.collector.alerts.queries import get_alert
from campuswatch.collector.db.access import create_user
from campuswatch.collector.db.models import Asset, Device
from tests.collector.web.conftest import PASSWORD, WebApp
from tests.collector.web.test_pages import ORIGIN, csrf_of


@pytest.fixture
def scoped_web(web: WebApp) -> WebApp:
    with web.sessions() as session:
        create_user(
            session, username="fac-q1", password=PASSWORD, role="facilities", site_scope="q1"
        )
        create_user(session, username="admin-q1", password=PASSWORD, role="admin", site_scope="q1")
        session.commit()
    return web


def _asset(web: WebApp, name: str) -> Asset:
    with web.sessions() as session:
        asset = session.scalar(select(Asset).where(Asset.name == name))
        assert asset is not None
        return asset


@pytest.mark.parametrize("site_id", ["", "q3-c", "hcm"])
def test_an_edit_cannot_move_an_asset_out_of_the_editors_scope(
    scoped_web: WebApp, site_id: str
) -> None:
    client = scoped_web.login("fac-q1")
    asset = _asset(scoped_web, "LAB-A2")
    page = client.get(f"/ui/inventory/{asset.id}").text
    form = {
        "csrf_token": csrf_of(page), "expected_version": str(asset.version), "name": "LAB-A2",
        "kind": "pc", "site_id": site_id, "room": "Lab 1", "status": "in_service",
        "registered": "true",
    }  # fmt: skip

    moved = client.post(f"/ui/inventory/{asset.id}", data=form, headers=ORIGIN)

    assert moved.status_code == 404, moved.text
    after = _asset(scoped_web, "LAB-A2")
    assert (after.site_id, after.version) == ("q1-a", asset.version)


@pytest.mark.parametrize("user", ["soc-q1", "fac-q1", "admin-q1"])
def test_pages_and_forms_of_another_districts_objects_are_not_found(
    scoped_web: WebApp, user: str
) -> None:
    client = scoped_web.login(user)
    camera = _asset(scoped_web, "CAM C1")
    alert_id = scoped_web.alert_ids["q3"]
    token = csrf_of(client.get("/ui/").text)
    pages = [
        "/ui/devices/pc-c1",
        f"/ui/alerts/{alert_id}",
        f"/ui/inventory/{camera.id}",
        "/ui/devices?site_id=q3-c",
        "/ui/alerts?site_id=q3-c",
        "/ui/inventory?site_id=q3-c",
        "/ui/inventory/export.csv?site_id=q3-c",
    ]
    answers = {page: client.get(page).status_code for page in pages}
    for action in ("acknowledge", "resolve", "comment", "silence"):
        url = f"/ui/alerts/{alert_id}/{action}"
        answers[url] = client.post(
            url, data={"csrf_token": token, "note": "mine"}, headers=ORIGIN
        ).status_code
    edit = {"csrf_token": token, "expected_version": str(camera.version), "name": "ours"}
    url = f"/ui/inventory/{camera.id}"
    answers[f"POST {url}"] = client.post(url, data=edit, headers=ORIGIN).status_code
    # 403 where the role may not act at all; never an answer that shows or does something.
    assert {page: code for page, code in answers.items() if code not in (403, 404)} == {}
    with scoped_web.sessions() as session:
        assert get_alert(session, alert_id).alert.state == "firing"
    assert _asset(scoped_web, "CAM C1").version == camera.version


def test_the_device_type_filter_offers_only_types_found_in_the_scope(scoped_web: WebApp) -> None:
    with scoped_web.sessions() as session:
        session.add(Device(device_id="cam-c1", site_id="q3-c", device_type="camera"))
        session.commit()
    scoped = scoped_web.login("soc-q1").get("/ui/devices").text
    everyone = scoped_web.login("admin").get("/ui/devices").text
    assert 'value="camera"' in everyone
    assert 'value="camera"' not in scoped and 'value="projector"' in scoped
