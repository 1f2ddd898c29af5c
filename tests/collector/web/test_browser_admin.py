"""The admin page in Chromium as a district's administrator uses it: add a facilities
account, make a display token and open the wall with it, revoke it, read the audit log
(issue 15 item 1). ``-m e2e``; screenshots ``20-admin-display-token.png``,
``21-admin-vi.png``, ``22-admin-forbidden.png``."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from campuswatch.collector.enrolment.service import EnrolmentService
from tests.collector.web.catalogue import untranslated_left
from tests.collector.web.conftest import PASSWORD, WebApp
from tests.collector.web.test_browser import CHROMIUM, CHROMIUM_ARGS, HIDDEN_DATA_JS, shoot
from tests.support import required
from tests.support.http_server import served_app

pytestmark = pytest.mark.e2e
playwright_api = required.module("playwright.sync_api", required.PLAYWRIGHT_PIP)
FACILITIES_PASSWORD = "thu-facilities-password"


def log_in(page: object, base: str, username: str, password: str) -> None:
    page.goto(f"{base}/ui/login")  # type: ignore[attr-defined]
    page.fill("input[name=username]", username)  # type: ignore[attr-defined]
    page.fill("input[name=password]", password)  # type: ignore[attr-defined]
    page.click("form:has(input[name=username]) button[type=submit]")  # type: ignore[attr-defined]
    page.wait_for_url(re.compile(r"/ui/$"))  # type: ignore[attr-defined]


def test_an_admin_manages_accounts_and_a_wall_token_in_the_browser(
    web: WebApp, tmp_path: Path
) -> None:
    required.program("chromium", "chromium")
    (tmp_path / "broker").mkdir()
    web.context.extras["enrolment"] = EnrolmentService(
        web.sessions, broker_dir=tmp_path / "broker", agent_broker_url="mqtts://broker.vn:8883"
    )
    with served_app(web.app) as base, playwright_api.sync_playwright() as driver:
        browser = driver.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            context = browser.new_context(viewport={"width": 1280, "height": 900}, locale="en-US")
            page = context.new_page()
            log_in(page, base, "admin", PASSWORD)
            page.click("nav.mainnav a[href='/ui/admin']")
            page.wait_for_url(re.compile(r"/ui/admin$"))
            assert page.locator("nav.mainnav a[aria-current=page]").inner_text() == "Administration"

            form = page.locator("#add-user")
            form.locator("input[name=username]").fill("thu.facilities")
            form.locator("select[name=role]").select_option("facilities")
            form.locator("select[name=site_scope]").select_option("q1-a")
            form.locator("input[name=password]").fill(FACILITIES_PASSWORD)
            form.locator("button[type=submit]").click()
            page.wait_for_url(re.compile(r"done=user\.add"))
            assert "thu.facilities" in page.inner_text("#admin-done")
            row = page.locator("tr[data-user='thu.facilities']")
            assert "facilities manager" in row.inner_text() and "THCS A" in row.inner_text()

            form = page.locator("#add-display-token")
            form.locator("input[name=name]").fill("Office screen Q1")
            form.locator("select[name=site_scope]").select_option("q1")
            form.locator("button[type=submit]").click()
            page.wait_for_selector("#new-secret")
            wall_url = page.inner_text("#wall-url")
            assert wall_url.startswith(f"{base}/ui/wall?token=")
            shoot(page, "20-admin-display-token")

            wall = context.new_page()
            wall.goto(wall_url)
            assert wall.locator("body.wall").count() == 1
            wall.close()

            page.goto(f"{base}/ui/admin")
            assert page.locator("#new-secret").count() == 0  # shown once
            token_row = page.locator("#display-tokens tr", has_text="Office screen Q1")
            token_row.locator("button[type=submit]").click()
            page.wait_for_url(re.compile(r"done=token\.revoke"))
            assert page.locator("#display-tokens tr", has_text="Office screen Q1").count() == 0
            gone = context.new_page()
            assert gone.goto(wall_url).status == 401  # type: ignore[union-attr]
            gone.close()
            actions = page.locator("#audit tbody tr").evaluate_all(
                "rows => rows.map(r => r.dataset.action)"
            )
            assert actions == ["display_token.revoke", "display_token.create", "user.add"]

            # The same page in Vietnamese leaves no English behind.
            page.click("a[hreflang=vi]")
            page.wait_for_url(re.compile(r"/ui/admin"))
            assert untranslated_left(page.evaluate(HIDDEN_DATA_JS)) == []
            shoot(page, "21-admin-vi")

            # The new account logs in, sees no admin link, and is refused the page.
            other = browser.new_context(viewport={"width": 1280, "height": 700}, locale="en-US")
            facilities = other.new_page()
            log_in(facilities, base, "thu.facilities", FACILITIES_PASSWORD)
            assert facilities.locator("nav.mainnav a[href='/ui/admin']").count() == 0
            answer = facilities.goto(f"{base}/ui/admin")
            assert answer is not None and answer.status == 403
            assert facilities.locator("#forbidden").is_visible()
            shoot(facilities, "22-admin-forbidden")
        finally:
            browser.close()
