"""Acceptance: Debian's headless Chromium against a real uvicorn serving a fed collector."""

from __future__ import annotations

import re
import shutil
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import uvicorn

from campuswatch.collector.alerts.manager import AlertManager
from campuswatch.collector.api.app import create_app
from campuswatch.collector.db.access import create_user
from campuswatch.collector.reports.i18n import t
from campuswatch.collector.reports.periods import report_period
from campuswatch.collector.reports.schedule import local_day
from campuswatch.collector.web import mount
from campuswatch.collector.web.pages_alerts import ALERT_MANAGER_KEY
from campuswatch.wire import AvMessage, AvProduct, HelloMessage, encode_message
from campuswatch.wire.ids import utc_now
from campuswatch.wire.messages import (
    HardwareInfo,
    HealthMessage,
    InterfaceInfo,
    InventoryMessage,
    OsInfo,
    StateMessage,
)
from tests.collector.conftest import RunningCollector
from tests.collector.test_ingest_e2e import publish
from tests.collector.web.catalogue import untranslated_left
from tests.collector.web.conftest import raise_alert
from tests.support import required
from tests.support.mosquitto import MosquittoBroker
from tests.support.ports import free_port, wait_for_port
from tests.support.waiting import wait_until

pytestmark = pytest.mark.e2e
playwright_api = required.module("playwright.sync_api", required.PLAYWRIGHT_PIP)
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip
SCREENSHOTS = Path(__file__).resolve().parents[3] / "artifacts" / "screenshots"
PASSWORD = "browser-test-password"
DISPLAY_TOKEN = "wall-display-token-0123456789"
# (school, device, av status, realtime, fresh signatures)
PCS = [
    ("hn-bd-thcs-a", "pc-a-01", "protected", True, True),
    ("hn-bd-thcs-a", "pc-a-02", "at_risk", False, True),
    ("hn-bd-thcs-b", "pc-b-01", "protected", True, True),
]
HIDDEN_DATA_JS = """() => {
  const copy = document.body.cloneNode(true);
  copy.querySelectorAll('pre, code, script, style, [translate="no"]').forEach(e => e.remove());
  return copy.innerText;
}"""


def pc_messages(
    site: str, device: str, status: str, realtime: bool, fresh: bool
) -> list[tuple[str, bytes]]:
    number = device[-2:]
    hello = HelloMessage(
        device_id=device, site=site, device_type="pc", software="campuswatch-agent",
        software_version="0.1.0", vendor="Dell Inc.", model="OptiPlex 3080", serial=f"SN-{device}",
    )  # fmt: skip
    inventory = InventoryMessage(
        device_id=device, site=site, digest=(device * 64)[:64].encode().hex()[:64],
        hostname=device.upper(), os=OsInfo(name="Windows 11 Education", version="10.0.22631"),
        hardware=HardwareInfo(vendor="Dell Inc.", model="OptiPlex 3080", serial=f"SN-{device}"),
        interfaces=[InterfaceInfo(name="Ethernet", mac=f"00:1a:2b:3c:{number}:{number}")],
    )  # fmt: skip
    av = AvMessage(device_id=device, site=site, status=status, products=[  # type: ignore[arg-type]
        AvProduct(name="Microsoft Defender Antivirus", source="defender", enabled=True,
                  realtime_protection=realtime, signatures_up_to_date=fresh,
                  signature_age_hours=5.0 if fresh else 400 * 24.0)])  # fmt: skip
    health = HealthMessage(device_id=device, site=site, cpu_pct=12.5, memory_pct=41.0)
    state = StateMessage(device_id=device, site=site, status="online", reason="connected")
    return [
        (f"cw/v1/{site}/{device}/{kind}", encode_message(message))
        for kind, message in (("hello", hello), ("state", state), ("inventory", inventory),
                              ("av", av), ("health", health))
    ]  # fmt: skip


@dataclass
class Served:
    base: str
    collector: RunningCollector
    alert_id: int


@pytest.fixture
def served(mosquitto: MosquittoBroker, collector_factory: object) -> Iterator[Served]:
    collector: RunningCollector = collector_factory(display_token=DISPLAY_TOKEN)  # type: ignore[operator]
    api = collector.api
    for body in (
        {"id": "hn", "level": "province", "name": "Hà Nội"},
        {"id": "hn-bd", "parent_id": "hn", "level": "district", "name": "Quận Ba Đình"},
        {"id": "hn-bd-thcs-a", "parent_id": "hn-bd", "level": "school",
         "name": "THCS Nguyễn Trãi", "uplink_type": "fibre"},
        {"id": "hn-bd-thcs-b", "parent_id": "hn-bd", "level": "school",
         "name": "THCS Lê Lợi", "uplink_type": "adsl"},
    ):  # fmt: skip
        assert api.put(f"/api/v1/sites/{body['id']}", json=body).status_code == 200
    for pc in PCS:
        for topic, payload in pc_messages(*pc):
            publish(mosquitto, topic, payload)
    wait_until(lambda: all(
        "av" in (api.get(f"/api/v1/devices/{pc[1]}").json().get("latest") or {})
        for pc in PCS if api.get(f"/api/v1/devices/{pc[1]}").status_code == 200
    ) and api.get("/api/v1/devices").json()["total"] == len(PCS))  # fmt: skip
    service = collector.service
    with service.sessions() as session:
        create_user(session, username="analyst", password=PASSWORD, role="admin", language="en")
        session.commit()
    manager = AlertManager(service.sessions)
    alert_id = raise_alert(manager, "hn-bd-thcs-a", "pc-a-02", "high")
    service.api_context.extras[ALERT_MANAGER_KEY] = manager
    app = create_app(service.api_context)
    mount(app)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, name="ui-server", daemon=True)
    thread.start()
    wait_for_port(port)
    try:
        yield Served(f"http://127.0.0.1:{port}", collector, alert_id)
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def shoot(page: object, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)  # type: ignore[attr-defined]


def api_figures(collector: RunningCollector) -> dict[str, int]:
    devices = collector.get("/api/v1/devices", page_size=1000)["items"]
    pcs = [d for d in devices if d["device_type"] in ("pc", "server")]
    sites = collector.get("/api/v1/sites")
    open_alerts = collector.get("/api/v1/alerts", state="open", page_size=1)["total"]
    return {
        "open_alerts": open_alerts,
        "computers": len(pcs),
        "protected": sum(d["av_status"] == "protected" for d in pcs),
        "online": sum(s["online"] for s in sites),
        "offline": sum(s["offline"] for s in sites),
    }


def check_report_pdf(pdf: Path, expected: dict[str, int]) -> None:
    """Page 1 rasterised next to the screenshots; the antivirus row shows the API's count."""
    for tool in ("pdftoppm", "pdftotext"):
        required.program(tool, "poppler-utils")
    subprocess.run(
        ["pdftoppm", "-png", "-r", "60", "-f", "1", "-l", "1", "-singlefile", str(pdf),
         str(SCREENSHOTS / "09-report-pdf")],
        check=True,
    )  # fmt: skip
    text = subprocess.run(
        ["pdftotext", "-layout", str(pdf), "-"], check=True, capture_output=True
    ).stdout.decode("utf-8")
    head = " ".join(t("av_coverage", "en").split()[:3])
    row = next(line for line in text.splitlines() if line.strip().startswith(head))
    assert f"{expected['protected']}/{expected['computers']}" in row.replace(" ", ""), row


def test_browser_journey(served: Served, tmp_path: Path) -> None:
    required.program("chromium", "chromium")
    with playwright_api.sync_playwright() as driver:
        browser = driver.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            context = browser.new_context(
                viewport={"width": 1280, "height": 900}, accept_downloads=True, locale="en-US"
            )
            page = context.new_page()
            page.goto(f"{served.base}/")
            assert "/ui/login" in page.url
            shoot(page, "01-login")
            page.fill("input[name=username]", "analyst")
            page.fill("input[name=password]", PASSWORD)
            page.click("form:has(input[name=username]) button[type=submit]")
            page.wait_for_url(re.compile(r"/ui/$"))

            # Overview figures equal the API's.
            expected = api_figures(served.collector)
            total = page.locator('[data-scope="total"]')
            assert total.locator("[data-part]").first.get_attribute("data-part") == str(
                expected["protected"]
            )
            assert total.locator("[data-whole]").first.get_attribute("data-whole") == str(
                expected["computers"]
            )
            assert total.locator("[data-devices-online]").get_attribute(
                "data-devices-online"
            ) == str(expected["online"])
            assert total.locator("[data-devices-offline]").get_attribute(
                "data-devices-offline"
            ) == str(expected["offline"])
            assert total.locator("[data-open-alerts]").get_attribute("data-open-alerts") == str(
                expected["open_alerts"]
            )
            assert expected.pop("open_alerts") >= 1  # the shipped rules fire on the fed PCs
            assert expected == {"computers": 3, "protected": 2, "online": 3, "offline": 0}
            shoot(page, "02-overview")

            # Acknowledge the alert with a note.
            page.click("a[href='/ui/alerts']")
            shoot(page, "03-alerts")
            page.click(f"tr[data-alert='{served.alert_id}'] a")
            page.fill("textarea[name=note]", "Called the school's IT teacher")
            page.click("button[formaction$='/acknowledge']")
            page.wait_for_selector("dd[data-state='acknowledged']")
            assert "Called the school's IT teacher" in page.inner_text("table.history")
            shoot(page, "04-alert-acknowledged")

            # Filter the inventory and export it.
            page.goto(f"{served.base}/ui/inventory")
            page.fill("input[name=search]", "pc-a-01")
            page.click("#inventory-filters button[type=submit]")
            page.wait_for_url(re.compile(r"search=pc-a-01"))
            rows = page.locator("table.assets tbody tr[data-asset]")
            assert rows.count() == 1
            shoot(page, "05-inventory-filtered")
            with page.expect_download() as download_info:
                page.click("a[href^='/ui/inventory/export.csv']")
            saved = tmp_path / "assets.csv"
            download_info.value.save_as(saved)
            exported = saved.read_text(encoding="utf-8-sig")
            assert exported.startswith("asset_tag,kind") and "SN-pc-b-01" in exported

            # Device page with a sparkline from the embedded store.
            page.goto(f"{served.base}/ui/devices/pc-a-01")
            shoot(page, "06-device")

            # Generate this month's report for the district; its PDF shows the API's figures.
            page.click("a[href='/ui/reports']")
            month = report_period("month", local_day(utc_now()))
            page.select_option("select[name=site_id]", "hn-bd")
            page.select_option("select[name=period]", f"month:{month.start.isoformat()}")
            page.check("input[name=lang][value=en]")
            page.click("#generate-report button[type=submit]")
            page.wait_for_url(re.compile(r"/ui/reports\?new="))
            row = page.locator("table.reports tr.new")
            assert row.count() == 1 and "Quận Ba Đình" in row.inner_text()
            shoot(page, "09-reports")
            with page.expect_download() as pdf_download:
                row.locator("a[data-format=pdf]").click()
            assert pdf_download.value.suggested_filename == (
                f"campuswatch-month-{month.key}-hn-bd.en.pdf"
            )
            pdf = tmp_path / "report.pdf"
            pdf_download.value.save_as(pdf)
            check_report_pdf(pdf, expected)

            # Switch to Vietnamese: no English UI text left.
            page.goto(f"{served.base}/ui/")
            page.click("a[hreflang='vi']")
            page.wait_for_selector("html[lang='vi']")
            for path in (
                "/ui/",
                "/ui/alerts",
                f"/ui/alerts/{served.alert_id}",
                "/ui/inventory",
                "/ui/devices",
                "/ui/reports",
            ):
                page.goto(f"{served.base}{path}")
                assert untranslated_left(page.evaluate(HIDDEN_DATA_JS)) == [], path
            assert "Báo cáo tháng" in page.inner_text("table.reports")
            shoot(page, "10-reports-vi")
            # A phone: the page reflows, only the tables scroll sideways inside their frames.
            page.set_viewport_size({"width": 390, "height": 844})
            assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
            shoot(page, "11-reports-phone-vi")
            page.set_viewport_size({"width": 1280, "height": 900})
            page.goto(f"{served.base}/ui/")
            assert "Tổng quan" in page.inner_text("h1")
            shoot(page, "07-overview-vi")

            # The wall display opens with the display token, no login.
            wall = browser.new_context(viewport={"width": 1920, "height": 1080}).new_page()
            wall.goto(f"{served.base}/ui/wall?token={DISPLAY_TOKEN}")
            assert wall.locator("body.wall").count() == 1
            # It updates itself in place (wall.js), never by a page reload.
            assert wall.locator("meta[http-equiv=refresh]").count() == 0
            assert wall.locator("#wall").get_attribute("data-poll-s") == "30.0"
            shoot(wall, "08-wall")
        finally:
            browser.close()
