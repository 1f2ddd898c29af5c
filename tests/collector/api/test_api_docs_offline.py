"""The API docs (/docs, /redoc) work in a school with no Internet: every asset they load
comes from the collector itself, and Swagger UI renders in a real browser."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest

from campuswatch.collector.api.app import create_app
from tests.collector.conftest import RunningCollector
from tests.support import required
from tests.support.http_server import served_app

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_docs_pages_load_their_assets_from_the_collector(
    collector: RunningCollector, page: str
) -> None:
    html = collector.api.get(page)
    assert html.status_code == 200
    sources = [
        part.split('"')[1]
        for part in html.text.replace("'", '"').split("src=")[1:] + html.text.split("href=")[1:]
        if '"' in part
    ]
    assert sources, html.text
    for source in sources:
        assert not urlsplit(source).netloc, f"{page} loads {source} from another host"
        assert collector.api.get(source).status_code == 200, source


@pytest.fixture
def served_api(collector: RunningCollector) -> Iterator[str]:
    with served_app(create_app(collector.service.api_context)) as base:
        yield base


@pytest.mark.e2e
def test_swagger_ui_renders_without_any_other_host(served_api: str) -> None:
    playwright_api = required.module("playwright.sync_api", required.PLAYWRIGHT_PIP)
    required.program("chromium", "chromium")
    with playwright_api.sync_playwright() as driver:
        browser = driver.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            hosts: set[str] = set()
            page.on("request", lambda request: hosts.add(urlsplit(request.url).netloc))
            page.goto(f"{served_api}/docs")
            title = page.locator(".swagger-ui .info .title")
            title.wait_for(timeout=30_000)
            assert "CampusWatch collector API" in title.inner_text()
            assert page.locator(".opblock").count() > 10  # the operations, read from /openapi.json
            assert hosts == {urlsplit(served_api).netloc}
        finally:
            browser.close()
