"""Issue 19 item 4: a wall that fits.

One screen at 1920×1080 and 1366×768 with 150 schools (the list pages itself), figures on
one line, text that scales with the screen, updates without a reload, and "data as of …,
not updating" with the last figures kept when the collector is unreachable. The browser
tests run Debian's headless Chromium against uvicorn; screenshots go to
``artifacts/screenshots/wall-*.png``.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta

import pytest
import uvicorn

from campuswatch.collector.db.models import Site
from campuswatch.collector.reports.i18n import share_text
from campuswatch.wire.ids import utc_now
from tests.collector.web.conftest import DISPLAY_TOKEN, WebApp
from tests.collector.web.test_browser import CHROMIUM, CHROMIUM_ARGS, shoot
from tests.support import required
from tests.support.ports import free_port, wait_for_port

SCHOOLS = 150
SIZES = [(1920, 1080), (1366, 768)]
# language → (browser locale, how the stale banner starts, how it ends)
LANGUAGES = {
    "en": ("en-US", "Data as of", "not updating"),
    "vi": ("vi-VN", "Dữ liệu lúc", "không cập nhật"),
}
# Every size in both languages: Vietnamese labels are longer (the page was 1,381 px tall).
SCREENS = [(size, lang) for size in SIZES for lang in LANGUAGES]


def add_schools(web: WebApp, count: int = SCHOOLS) -> None:
    """``count`` schools with nothing online: each one needs attention ("unreachable")."""
    with web.sessions() as session:
        for number in range(count):
            session.add(
                Site(
                    id=f"q3-school-{number:03d}",
                    parent_id="q3",
                    level="school",
                    # Long real-world names: the list must cut them, not wrap them.
                    name=f"THCS số {number:03d} Nguyễn Văn Trỗi, phường Điện Biên, Ba Đình",
                    uplink_type="fibre",
                    created_at=utc_now() - timedelta(days=30),
                )
            )
        session.commit()


# --- the data endpoint (TestClient) ---------------------------------------------------


def test_wall_data_needs_the_display_token(web: WebApp) -> None:
    client = web.client()
    assert client.get("/ui/wall/data").status_code == 401
    assert client.get("/ui/wall/data", params={"token": web.admin_token}).status_code == 401
    response = client.get("/ui/wall/data", params={"token": DISPLAY_TOKEN})
    assert response.status_code == 200
    assert response.headers["cache-control"] == "no-store"


def test_wall_data_has_the_pages_figures_in_its_language(web: WebApp) -> None:
    client = web.client()
    client.cookies.set("cw_lang", "vi")
    data = client.get("/ui/wall/data", params={"token": DISPLAY_TOKEN}).json()
    tiles = {tile["key"]: tile for tile in data["tiles"]}
    # The seeded PCs: 3 of 4 protected; the one rounding rule, with a decimal comma.
    assert tiles["av"]["big"] == share_text(3, 4, "vi") == "75,0 %"
    assert tiles["av"]["small"] == "3 / 4"
    assert tiles["alerts"]["big"] == "2"
    assert {badge["level"] for badge in tiles["alerts"]["badges"]} == {"high", "medium"}
    assert {school["name"] for school in data["schools"]} >= {"THCS B"}
    assert all(school["problems"] for school in data["schools"])
    page = client.get("/ui/wall", params={"token": DISPLAY_TOKEN}).text
    assert "75,0 %" in page and 'data-stale-text="Dữ liệu lúc %(time)s, không cập nhật"' in page


def test_poll_and_rotation_periods_from_the_url_are_bounded(web: WebApp) -> None:
    client = web.client()
    page = client.get("/ui/wall", params={"token": DISPLAY_TOKEN, "poll": 0.01, "rotate": 999})
    assert page.status_code == 200
    assert 'data-poll-s="1.0"' in page.text and 'data-rotate-s="120.0"' in page.text
    assert client.get("/ui/wall", params={"token": DISPLAY_TOKEN, "poll": -1}).status_code == 422


# --- the screen in Chromium -----------------------------------------------------------


@dataclass
class Server:
    base: str
    server: uvicorn.Server
    thread: threading.Thread

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)
        assert not self.thread.is_alive()


@pytest.fixture
def wall_server(web: WebApp) -> Iterator[Server]:
    add_schools(web)
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(web.app, host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, name="wall-server", daemon=True)
    thread.start()
    wait_for_port(port)
    running = Server(f"http://127.0.0.1:{port}", server, thread)
    try:
        yield running
    finally:
        running.stop()


FIT_JS = """() => {
  const doc = document.documentElement;
  const oneLine = (el) => el.getBoundingClientRect().height
      <= parseFloat(getComputedStyle(el).lineHeight) * 1.2;
  const items = Array.from(document.querySelectorAll('#wall-list li')).filter(li => !li.hidden);
  return {
    scrollHeight: doc.scrollHeight, scrollWidth: doc.scrollWidth,
    innerHeight: window.innerHeight, innerWidth: window.innerWidth,
    bigOneLine: Array.from(document.querySelectorAll('.wall-tile .big')).every(oneLine),
    bigTexts: Array.from(document.querySelectorAll('.wall-tile .big')).map(e => e.textContent),
    bigOverflow: Array.from(document.querySelectorAll('.wall-tile .big'))
        .some(e => e.scrollWidth > e.clientWidth + 1),
    itemsOneLine: items.every(oneLine),
    visibleItems: items.length,
    lowestItem: Math.max(...items.map(li => li.getBoundingClientRect().bottom)),
    pages: Number(document.getElementById('wall').dataset.pages),
    h1: parseFloat(getComputedStyle(document.querySelector('.wall-head h1')).fontSize),
    big: parseFloat(getComputedStyle(document.querySelector('.wall-tile .big')).fontSize),
    item: parseFloat(getComputedStyle(items[0]).fontSize),
    badge: parseFloat(getComputedStyle(document.querySelector('.wall-tile .badge')).fontSize),
  };
}"""


def _chromium() -> object:
    playwright_api = required.module("playwright.sync_api", required.PLAYWRIGHT_PIP)

    required.program("chromium", "chromium")
    return playwright_api


@pytest.mark.e2e
def test_the_wall_fits_both_screens_and_survives_a_stopped_collector(
    wall_server: Server,
) -> None:
    playwright_api = _chromium()
    poll_s, rotate_s = 2, 2
    url = f"{wall_server.base}/ui/wall?token={DISPLAY_TOKEN}&poll={poll_s}&rotate={rotate_s}"
    measured: dict[tuple[tuple[int, int], str], dict[str, float]] = {}
    with playwright_api.sync_playwright() as driver:  # type: ignore[attr-defined]
        browser = driver.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            pages = []
            for (width, height), lang in SCREENS:
                context = browser.new_context(
                    viewport={"width": width, "height": height}, locale=LANGUAGES[lang][0]
                )
                page = context.new_page()
                page.goto(url)
                page.wait_for_function("Number(document.getElementById('wall').dataset.pages) > 0")
                fit = page.evaluate(FIT_JS)
                measured[((width, height), lang)] = fit
                where = f"{width}x{height} {lang}"
                assert fit["scrollHeight"] <= fit["innerHeight"], (where, fit)
                assert fit["scrollWidth"] <= fit["innerWidth"], (where, fit)
                assert fit["bigOneLine"] and not fit["bigOverflow"], (where, fit)
                assert fit["itemsOneLine"], (where, fit)
                # 150 schools need attention: more than one page, each page on screen.
                assert fit["pages"] > 1 and fit["visibleItems"] > 0, (where, fit)
                assert fit["lowestItem"] <= fit["innerHeight"], (where, fit)
                assert page.get_attribute("html", "lang") == lang
                shoot(page, f"wall-{width}x{height}-{lang}")
                # The list rotates to its next page without a reload.
                page.evaluate("window.__sameDocument = true")
                first = page.inner_text("#wall-list li:not([hidden])")
                page.wait_for_function(
                    "(first) => document.querySelector('#wall-list li:not([hidden])')"
                    ".innerText !== first",
                    arg=first,
                )
                pages.append(page)
            # Text scales with the screen: every measured size is larger on the larger one.
            for lang in LANGUAGES:
                big, small = measured[(SIZES[0], lang)], measured[(SIZES[1], lang)]
                for key in ("h1", "big", "item", "badge"):
                    assert big[key] > small[key] * 1.2, (lang, key, big[key], small[key])
                assert big["badge"] > 12.8
            # An update without a reload: the page's own state survives a poll.
            for page in pages:
                as_of = page.get_attribute("#wall", "data-as-of")
                page.wait_for_function(
                    "(before) => document.getElementById('wall').dataset.asOf !== before",
                    arg=as_of,
                )
                assert page.evaluate("window.__sameDocument") is True
            before = [page.inner_text(".wall-tiles") for page in pages]

            # The collector stops: the banner says since when, and the figures stay.
            wall_server.stop()
            for page, (_size, lang) in zip(pages, SCREENS, strict=True):
                page.wait_for_selector("#wall-stale:not([hidden])", timeout=poll_s * 3000)
                banner = page.inner_text("#wall-stale")
                _locale, starts, ends = LANGUAGES[lang]
                assert banner.startswith(starts) and banner.endswith(ends), banner
                assert page.evaluate("window.__sameDocument") is True
            for page, tiles in zip(pages, before, strict=True):
                assert page.inner_text(".wall-tiles") == tiles
                fit = page.evaluate(FIT_JS)
                assert fit["scrollHeight"] <= fit["innerHeight"]
                assert fit["scrollWidth"] <= fit["innerWidth"]
            for page, ((width, height), lang) in zip(pages, SCREENS, strict=True):
                shoot(page, f"wall-{width}x{height}-{lang}-stale")
        finally:
            browser.close()
