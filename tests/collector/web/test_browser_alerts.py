"""The alert queue in Chromium as a SOC analyst works it (issue 14 item 5): most severe
first, grouped by school and rule, a group ticked with one box and acknowledged with one
note. ``-m e2e``; screenshots ``15-alerts-bulk-selected.png``, ``16-alerts-bulk-done.png``."""

from __future__ import annotations

import re

import pytest

from campuswatch.collector.alerts.manager import AlertManager
from campuswatch.collector.alerts.queries import get_alert
from tests.collector.web.conftest import raise_alert
from tests.collector.web.test_browser import (  # noqa: F401  (served is a fixture)
    CHROMIUM,
    CHROMIUM_ARGS,
    PASSWORD,
    Served,
    served,
    shoot,
)
from tests.support import required

pytestmark = pytest.mark.e2e
playwright_api = required.module("playwright.sync_api", required.PLAYWRIGHT_PIP)
NOTE = "Lab A: school IT is re-enabling Defender"


def test_bulk_acknowledge_a_group_with_one_note(served: Served) -> None:  # noqa: F811
    required.program("chromium", "chromium")
    manager = AlertManager(served.collector.service.sessions)
    same_group = raise_alert(manager, "hn-bd-thcs-a", "pc-a-01", "high")
    elsewhere = raise_alert(manager, "hn-bd-thcs-b", "pc-b-01", "medium")
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

            page.goto(f"{served.base}/ui/alerts")
            # (The collector's shipped rules add alerts of their own for the at-risk PC.)
            keys = page.eval_on_selector_all(
                "details.alert-group", "groups => groups.map(g => g.dataset.group)"
            )
            mild_key = "hn-bd-thcs-b/av.realtime_off"
            first_key = "hn-bd-thcs-a/av.realtime_off"
            # Most severe first: the high group comes before the medium one.
            assert keys.index(first_key) < keys.index(mild_key)
            first = page.locator(f'details.alert-group[data-group="{first_key}"]')
            assert "THCS Nguyễn Trãi" in first.locator("summary").inner_text()
            assert "2 open alerts" in first.locator("summary").inner_text()
            mild = page.locator(f'details.alert-group[data-group="{mild_key}"]')
            assert "THCS Lê Lợi" in mild.locator("summary").inner_text()
            first.locator("input.select-group").check()
            ticked = page.locator("input[name=alert_id]:checked")
            assert sorted(int(ticked.nth(i).input_value()) for i in range(ticked.count())) == (
                sorted([served.alert_id, same_group])
            )
            page.fill(".bulk-actions textarea[name=note]", NOTE)
            shoot(page, "15-alerts-bulk-selected")
            page.click(".bulk-actions button[value=acknowledge]")
            page.wait_for_url(re.compile(r"done=2&skipped=0"))
            assert "Done for 2 alert(s); 0 skipped" in page.inner_text("p.notice")
            states = first.locator(".state-acknowledged")
            assert states.count() == 2
            shoot(page, "16-alerts-bulk-done")
        finally:
            browser.close()
    with served.collector.service.sessions() as session:
        for number in (served.alert_id, same_group):
            detail = get_alert(session, number)
            assert detail.alert.state == "acknowledged"
            assert [a.note for a in detail.audit if a.action == "acknowledged"] == [NOTE]
        assert get_alert(session, elsewhere).alert.state == "firing"
