"""The register in Chromium as a facilities manager uses it: filter the unknown device,
confirm discovered PCs in bulk with room and tag (issue 19 item 1). ``-m e2e``; screenshots
``12-register-unknown.png``, ``13-register-bulk-confirm.png``, ``14-register-confirmed-vi.png``."""

from __future__ import annotations

import re

import pytest

from campuswatch.collector.db.models import Asset, AssetMac
from tests.collector.web.catalogue import untranslated_left
from tests.collector.web.test_browser import (  # noqa: F401  (served is a fixture)
    CHROMIUM,
    CHROMIUM_ARGS,
    HIDDEN_DATA_JS,
    PASSWORD,
    Served,
    served,
    shoot,
)
from tests.support import required

pytestmark = pytest.mark.e2e
playwright_api = required.module("playwright.sync_api", required.PLAYWRIGHT_PIP)


def test_filter_and_bulk_confirm_in_the_browser(served: Served) -> None:  # noqa: F811
    required.program("chromium", "chromium")
    with served.collector.service.sessions() as session:
        hotspot = Asset(kind="other", source="discovery", name="android-hotspot",
                        site_id="hn-bd-thcs-a", registered=False, manual_fields=[])  # fmt: skip
        hotspot.macs.append(AssetMac(mac="02:00:00:00:00:99"))
        session.add(hotspot)
        session.commit()
    with playwright_api.sync_playwright() as driver:
        browser = driver.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            context = browser.new_context(viewport={"width": 1280, "height": 900}, locale="en-US")
            page = context.new_page()
            page.goto(f"{served.base}/ui/login")
            page.fill("input[name=username]", "analyst")
            page.fill("input[name=password]", PASSWORD)
            page.click("form:has(input[name=username]) button[type=submit]")
            page.wait_for_url(re.compile(r"/ui/$"))

            # The rogue hotspot stands apart from school equipment.
            page.goto(f"{served.base}/ui/inventory")
            page.select_option("select[name=review]", "unknown")
            page.click("#inventory-filters button[type=submit]")
            page.wait_for_url(re.compile(r"review=unknown"))
            rows = page.locator("table.assets tbody tr[data-asset]")
            assert rows.count() == 1 and "android-hotspot" in rows.inner_text()
            assert page.locator("tr[data-review=unknown] .badge").inner_text() == "unknown device"
            shoot(page, "12-register-unknown")

            # The PCs the agents reported wait for confirmation; confirm two with room and tag.
            page.select_option("select[name=review]", "to_confirm")
            page.click("#inventory-filters button[type=submit]")
            page.wait_for_url(re.compile(r"review=to_confirm"))
            assert page.locator("table.assets tbody tr[data-asset]").count() == 3
            for device, room, tag in (("pc-a-01", "A101", "TB-0001"), ("pc-a-02", "A102", "")):
                row = page.locator("table.assets tbody tr", has_text=device.upper())
                row.locator("input[name=asset_id]").check()
                row.locator("input[name^=room-]").fill(room)
                if tag:
                    row.locator("input[name^=tag-]").fill(tag)
            page.fill("input[name=owner_all]", "Tổ Tin học")
            shoot(page, "13-register-bulk-confirm")
            page.click("#bulk-confirm button[value=register]")
            page.wait_for_url(re.compile(r"confirmed=2"))
            assert page.locator("table.assets tbody tr[data-asset]").count() == 1
            assert "2" in page.inner_text("p.notice")
            confirmed = {
                item["name"]: item
                for item in served.collector.get("/api/v1/assets", review="registered")["items"]
            }
            assert confirmed["PC-A-01"]["room"] == "A101"
            assert confirmed["PC-A-01"]["asset_tag"] == "TB-0001"
            assert confirmed["PC-A-02"]["room"] == "A102"
            assert confirmed["PC-A-02"]["owner"] == "Tổ Tin học"

            # In Vietnamese: the register page leaves no English behind.
            page.goto(f"{served.base}/ui/inventory?review=registered")
            page.click("a[hreflang='vi']")
            page.wait_for_selector("html[lang='vi']")
            assert untranslated_left(page.evaluate(HIDDEN_DATA_JS)) == []
            shoot(page, "14-register-confirmed-vi")
        finally:
            browser.close()
