"""The register page as a facilities manager uses it: review filter, bulk confirmation, one
name per device on Devices, Alerts and the device page (issue 19 item 1); spreadsheets in
the reader's language (item 2)."""

from __future__ import annotations

import io
import re

from openpyxl import load_workbook
from sqlalchemy import select

from campuswatch.collector.db.models import Asset, Device
from tests.collector.web.catalogue import untranslated_left, visible_text
from tests.collector.web.conftest import TESTSERVER, WebApp
from tests.collector.web.test_pages import csrf_of

ORIGIN = {"Origin": TESTSERVER}


def _names(html: str) -> set[str]:
    return set(re.findall(r'<a class="asset-name" href="/ui/inventory/\d+">([^<]+)</a>', html))


def test_review_filter_separates_the_unknown_device_from_school_equipment(web: WebApp) -> None:
    client = web.login("facility")
    unknown = client.get("/ui/inventory", params={"review": "unknown"}).text
    assert _names(unknown) == {"CAM C1"}  # seen only by network sweeps
    discovered = client.get("/ui/inventory", params={"review": "discovered"}).text
    assert _names(discovered) == {"LAB-A2", "CAM C1"}  # Old PC is retired
    registered = client.get("/ui/inventory", params={"review": "registered"}).text
    assert _names(registered) == {"LAB-A1", "Máy chiếu B1"}
    everything = client.get("/ui/inventory").text
    assert 'data-review="unknown"' in everything and 'data-review="to_confirm"' in everything


def test_bulk_confirm_sets_room_and_tag_per_row(web: WebApp) -> None:
    client = web.login("facility")
    with web.sessions() as session:
        ids = {a.name: a.id for a in session.scalars(select(Asset))}
    page = client.get("/ui/inventory", params={"review": "discovered"}).text
    assert f'name="asset_id" value="{ids["LAB-A2"]}"' in page
    form = {
        "csrf_token": csrf_of(page),
        "action": "register",
        "asset_id": [str(ids["LAB-A2"]), str(ids["CAM C1"])],
        f"room-{ids['LAB-A2']}": "Lab 2",
        f"tag-{ids['LAB-A2']}": "TS-0100",
        "room_all": "Kho",
        "owner_all": "Thầy Minh",
        "back": "/ui/inventory?review=discovered",
    }
    done = client.post("/ui/inventory/confirm", data=form, headers=ORIGIN)
    assert done.status_code == 303, done.text
    assert done.headers["location"].startswith("/ui/inventory?review=discovered")
    with web.sessions() as session:
        lab = session.get(Asset, ids["LAB-A2"])
        camera = session.get(Asset, ids["CAM C1"])
        assert lab is not None and camera is not None
        assert (lab.registered, lab.room, lab.asset_tag) == (True, "Lab 2", "TS-0100")
        assert (camera.registered, camera.room) == (True, "Kho")  # the room for all
        assert lab.owner == camera.owner == "Thầy Minh"
    after = client.get(done.headers["location"]).text
    assert _names(after) == set() and 'role="status"' in after


def test_bulk_confirm_refuses_a_taken_tag_and_writes_nothing(web: WebApp) -> None:
    client = web.login("facility")
    with web.sessions() as session:
        lab = session.scalar(select(Asset).where(Asset.name == "LAB-A2"))
        assert lab is not None
        lab_id = lab.id
    page = client.get("/ui/inventory").text
    form = {
        "csrf_token": csrf_of(page), "action": "register", "asset_id": str(lab_id),
        f"tag-{lab_id}": "TS-0001",  # the projector's
    }  # fmt: skip
    refused = client.post("/ui/inventory/confirm", data=form, headers=ORIGIN)
    assert refused.status_code == 422
    assert "TS-0001" in refused.text and "LAB-A2" in refused.text
    with web.sessions() as session:
        assert not session.get(Asset, lab_id).registered  # type: ignore[union-attr]


def test_bulk_confirm_needs_an_editor_and_the_scope(web: WebApp) -> None:
    viewer = web.login("viewer")
    page = viewer.get("/ui/inventory").text
    assert 'name="asset_id"' not in page
    form = {"csrf_token": csrf_of(page), "action": "register", "asset_id": "2"}
    assert viewer.post("/ui/inventory/confirm", data=form, headers=ORIGIN).status_code == 403
    soc = web.login("soc-q1")  # scoped to district q1; CAM C1 is in q3
    with web.sessions() as session:
        cam = session.scalar(select(Asset).where(Asset.name == "CAM C1"))
        assert cam is not None
        cam_id = cam.id
    page = soc.get("/ui/inventory").text
    form = {"csrf_token": csrf_of(page), "action": "register", "asset_id": str(cam_id)}
    assert soc.post("/ui/inventory/confirm", data=form, headers=ORIGIN).status_code == 403


def test_a_device_has_one_name_on_devices_alerts_and_its_page(web: WebApp) -> None:
    client = web.login("admin")
    client.cookies.set("cw_lang", "vi")
    devices = client.get("/ui/devices").text
    assert re.search(r'href="/ui/devices/pc-a2">LAB-A2</a>', devices)
    alerts = client.get("/ui/alerts").text
    assert re.search(r'href="/ui/devices/pc-a2">LAB-A2</a>', alerts)
    detail = client.get(f"/ui/alerts/{web.alert_ids['q1']}").text
    assert re.search(r'href="/ui/devices/pc-a2">LAB-A2</a>', detail)
    with web.sessions() as session:
        lab = session.scalar(select(Asset).where(Asset.name == "LAB-A2"))
        device = session.get(Device, "pc-a2")
        assert lab is not None and device is not None
        device.asset_id = lab.id
        session.commit()
        lab_id = lab.id
    page = client.get("/ui/devices/pc-a2").text
    assert f'<a href="/ui/inventory/{lab_id}">LAB-A2</a>' in page and f">#{lab_id}<" not in page
    assert "<h1" in page and "LAB-A2" in page.split("<h1", 1)[1].split("</h1>", 1)[0]
    for html in (devices, page, client.get("/ui/inventory?review=unknown").text):
        assert untranslated_left(visible_text(html)) == []


def test_xlsx_export_and_template_follow_the_page_language(web: WebApp) -> None:
    client = web.login("facility")
    client.cookies.set("cw_lang", "en")
    sheet = load_workbook(io.BytesIO(client.get("/ui/inventory/export.xlsx").content)).active
    assert sheet is not None and sheet["A1"].value == "Asset tag"
    client.cookies.set("cw_lang", "vi")
    template = client.get("/ui/inventory/import-template.xlsx")
    assert template.status_code == 200
    book = load_workbook(io.BytesIO(template.content))
    assert book.sheetnames[1] == "Hướng dẫn" and book.worksheets[0]["A1"].value == "Mã tài sản"
    assert 'href="/ui/inventory/import-template.xlsx"' in client.get("/ui/inventory/import").text


def test_devices_are_found_by_the_name_the_register_shows(web: WebApp) -> None:
    client = web.login("admin")
    found = client.get("/ui/devices", params={"search": "lab-a2"}).text
    assert re.findall(r'<tr data-device="([^"]+)"', found) == ["pc-a2"]
    by_id = client.get("/ui/devices", params={"search": "pc-b"}).text
    assert re.findall(r'<tr data-device="([^"]+)"', by_id) == ["pc-b1"]
