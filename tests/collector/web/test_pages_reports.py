"""The Reports page: schedule, archive, generate now, downloads, roles, scope, bad input."""

from __future__ import annotations

import io
import re
import threading
from datetime import UTC, datetime, timedelta
from urllib.parse import unquote

import pytest
from fastapi.testclient import TestClient
from openpyxl import load_workbook
from sqlalchemy import select

from campuswatch.collector.db.models import Site
from campuswatch.collector.reports.i18n import t
from campuswatch.collector.reports.periods import report_period
from campuswatch.collector.reports.schedule import archive_report, list_archive, local_day
from campuswatch.collector.web import pages_reports
from campuswatch.collector.web.pages_reports import archive_dir
from campuswatch.wire.ids import utc_now
from tests.collector.web.catalogue import untranslated_left, visible_text
from tests.collector.web.conftest import TESTSERVER, WebApp
from tests.collector.web.test_pages import ORIGIN, csrf_of

FORMATS = ("html", "pdf", "xlsx")


def this_month() -> str:
    """The form value of the month in progress: the seeded assets exist only since today."""
    month = report_period("month", local_day(utc_now()))
    return f"month:{month.start.isoformat()}"


def generate(
    client: TestClient, *, site_id: str = "q1", period: str | None = None, lang: str = "en"
) -> tuple[int, str]:
    token = csrf_of(client.get("/ui/reports").text)
    response = client.post(
        "/ui/reports/generate",
        data={
            "csrf_token": token,
            "site_id": site_id,
            "period": period or this_month(),
            "lang": lang,
        },
        headers=ORIGIN,
    )
    return response.status_code, response.headers.get("location") or response.text


def row_of(html: str, report_id: str) -> str:
    match = re.search(rf'<tr data-report="{re.escape(report_id)}".*?</tr>', html, re.S)
    assert match, f"no row for {report_id}"
    return match.group(0)


def links_of(row: str) -> dict[str, str]:
    return {fmt: href for href, fmt in re.findall(r'href="([^"]+)" data-format="(\w+)"', row)}


def archived_paths(web: WebApp) -> list[str]:
    return [entry.path for entry in list_archive(archive_dir(web.context))]


# --- the page ---------------------------------------------------------------------------------


def test_reports_page_is_in_the_navigation_and_read_only_for_viewers(web: WebApp) -> None:
    client = web.login("viewer")
    client.cookies.set("cw_lang", "en")
    overview = client.get("/ui/")
    assert 'href="/ui/reports"' in overview.text
    page = client.get("/ui/reports")
    assert page.status_code == 200
    assert 'id="generate-report"' not in page.text and 'id="read-only"' in page.text
    assert "No reports in the archive yet." in page.text
    # Every scheduled kind has its latest period and its next one in the schedule.
    kinds = re.findall(r'<tr data-kind="([\w-]+)" data-key="[^"]+" data-state="(\w+)"', page.text)
    assert {kind for kind, _ in kinds} == {
        "week", "month", "quarter", "semester1", "school-year", "six-month", "annual"
    }  # fmt: skip
    assert sum(state == "upcoming" for _, state in kinds) == 7
    # The register was made just now (a fresh install): every ended period has no data.
    assert all(state == "no_data" for _, state in kinds if state != "upcoming")


def test_generate_writes_html_pdf_and_xlsx_and_serves_them(web: WebApp) -> None:
    client = web.login("admin")
    code, location = generate(client, site_id="q1", lang="en")
    assert code == 303 and location.startswith("/ui/reports?new=")
    report_id = unquote(location.split("new=", 1)[1])
    assert report_id.startswith("on-demand/") and "/month/" in report_id
    client.cookies.set("cw_lang", "en")
    page = client.get(location).text
    assert "Report generated." in page
    row = row_of(page, report_id)
    assert 'class="new"' in row and "Quận 1" in row and 'data-state="on_demand"' in row
    assert '<option value="q1" selected>' in page  # the form keeps what was asked for
    assert f'<option value="{this_month()}" selected>' in page
    month = report_period("month", local_day(utc_now()))
    assert month.label_en in row
    links = links_of(row)
    assert sorted(links) == sorted(FORMATS)

    html = client.get(links["html"])
    assert html.status_code == 200
    assert html.headers["content-type"] == "text/html; charset=utf-8"
    assert html.headers["content-disposition"].startswith("inline; filename=")
    assert "sandbox" in html.headers["content-security-policy"]
    assert month.label_en in html.text and "Quận 1" in html.text

    pdf = client.get(links["pdf"])
    assert pdf.headers["content-type"] == "application/pdf" and pdf.content[:5] == b"%PDF-"
    disposition = pdf.headers["content-disposition"]
    key = month.key
    assert disposition == f'attachment; filename="campuswatch-month-{key}-q1.en.pdf"'

    xlsx = client.get(links["xlsx"])
    assert xlsx.headers["content-type"] == (
        "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
    )
    assert xlsx.headers["content-disposition"].startswith("attachment; filename=")
    sheet = load_workbook(io.BytesIO(xlsx.content))["KPIs"]
    assert sheet["A1"].value == month.label_en
    assert (sheet["A2"].value, sheet["B2"].value) == ("Scope", "Quận 1")
    rows = {row[0]: row for row in sheet.iter_rows(values_only=True) if row and row[0]}
    # Quận 1 today: LAB-A1 and the projector registered, LAB-A2 not, Old PC retired.
    assert rows[t("digital_records", "en")][8:10] == (2, 3)


def test_generate_in_vietnamese_and_the_page_has_no_english_left(web: WebApp) -> None:
    client = web.login("admin")
    code, location = generate(client, site_id="", lang="vi")
    assert code == 303
    report_id = unquote(location.split("new=", 1)[1])
    client.cookies.set("cw_lang", "vi")
    page = client.get(location)
    assert 'lang="vi"' in page.text and "Đã lập báo cáo." in page.text
    assert untranslated_left(visible_text(page.text)) == []
    row = row_of(page.text, report_id)
    assert "Toàn bộ đơn vị" in row and "Tiếng Việt" in row
    html = client.get(links_of(row)["html"]).text
    assert "Báo cáo tháng" in html and "Toàn bộ đơn vị" in html
    refused = client.post(
        "/ui/reports/generate",
        data={"csrf_token": csrf_of(page.text), "site_id": "nowhere", "period": "x", "lang": "fr"},
        headers=ORIGIN,
    )
    assert refused.status_code == 422
    assert untranslated_left(visible_text(refused.text)) == []
    assert "Hãy chọn một đơn vị trong danh sách." in refused.text


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("site_id", "nowhere", "Choose a site from the list."),
        ("site_id", "q1-a-lab", "Choose a site from the list."),  # a room has no schools
        ("site_id", "q1\x00", "Choose a site from the list."),  # PostgreSQL cannot store NUL
        ("period", "fortnight:2026-01-05", "Choose a period from the list."),
        ("period", "month:not-a-date", "Choose a period from the list."),
        ("period", "month", "Choose a period from the list."),
        ("period", "month:2999-01-01", "That period has not started yet."),
        ("lang", "fr", "Choose Vietnamese or English."),
    ],
)
def test_bad_input_is_a_clear_error_and_writes_nothing(
    web: WebApp, field: str, value: str, message: str
) -> None:
    client = web.login("admin")
    client.cookies.set("cw_lang", "en")
    form = {"site_id": "q1", "period": this_month(), "lang": "en", field: value}
    token = csrf_of(client.get("/ui/reports").text)
    response = client.post(
        "/ui/reports/generate", data={"csrf_token": token, **form}, headers=ORIGIN
    )
    assert response.status_code == 422
    assert message in response.text and "Please correct the marked fields." in response.text
    assert 'class="invalid"' in response.text or 'choices invalid"' in response.text
    assert archived_paths(web) == []


def test_generating_needs_a_form_token_and_a_generating_role(web: WebApp) -> None:
    admin = web.login("admin")
    no_token = admin.post(
        "/ui/reports/generate",
        data={"site_id": "q1", "period": this_month(), "lang": "en"},
        headers=ORIGIN,
    )
    assert no_token.status_code == 403
    viewer = web.login("viewer")
    token = csrf_of(viewer.get("/ui/").text)
    refused = viewer.post(
        "/ui/reports/generate",
        data={"csrf_token": token, "site_id": "q1", "period": this_month(), "lang": "en"},
        headers=ORIGIN,
    )
    assert refused.status_code == 403
    assert archived_paths(web) == []
    for user in ("facility", "soc-q1"):
        assert generate(web.login(user), site_id="q1-b")[0] == 303
    assert len(archived_paths(web)) == 2 * len(FORMATS)


def test_a_scoped_user_reports_and_reads_only_inside_its_scope(web: WebApp) -> None:
    admin = web.login("admin")
    everything = unquote(generate(admin, site_id="")[1].split("new=", 1)[1])
    other = unquote(generate(admin, site_id="q3-c")[1].split("new=", 1)[1])
    own = unquote(generate(admin, site_id="q1-a")[1].split("new=", 1)[1])
    all_links = links_of(row_of(admin.get("/ui/reports").text, everything))
    other_links = links_of(row_of(admin.get("/ui/reports").text, other))

    soc = web.login("soc-q1")
    soc.cookies.set("cw_lang", "en")
    page = soc.get("/ui/reports").text
    site_select = page.split('name="site_id"', 1)[1].split("</select>", 1)[0]
    assert 'value=""' not in site_select  # no "All sites" for a district account
    assert 'value="q3-c"' not in page and 'value="q1-b"' in page
    assert f'data-report="{own}"' in page
    assert f'data-report="{everything}"' not in page and f'data-report="{other}"' not in page
    assert soc.get(all_links["pdf"]).status_code == 404
    assert soc.get(other_links["xlsx"]).status_code == 404
    for site in ("", "q3-c"):
        code, text = generate(soc, site_id=site)
        assert code == 422 and "Choose a site from the list." in text


def test_only_indexed_files_are_served(web: WebApp) -> None:
    client = web.login("admin")
    assert generate(client)[0] == 303
    folder = archive_dir(web.context)
    (folder / "stray.pdf").write_bytes(b"%PDF-not indexed")
    assert client.get("/ui/reports/files/stray.pdf").status_code == 404
    assert client.get("/ui/reports/files/index.json").status_code == 404
    assert client.get("/ui/reports/files/../register.sqlite").status_code == 404
    assert client.get("/ui/reports/files/%2e%2e/register.sqlite").status_code == 404
    assert web.client().get(f"/ui/reports/files/{archived_paths(web)[0]}").status_code == 303


def test_archived_scheduled_reports_show_their_deadline_and_punctuality(web: WebApp) -> None:
    today = local_day(utc_now())
    last_month = report_period("month", today).previous
    with web.sessions() as session:
        # Installed long before last month (a fresh register would make it "no data").
        for site in session.scalars(select(Site)):
            site.created_at = utc_now() - timedelta(days=400)
        session.commit()
        written = archive_report(
            session, archive_dir(web.context), last_month, None, formats=("html",),
            now=datetime.now(UTC),
        )  # fmt: skip
    assert {entry.lang for entry in written} == {None, "vi", "en"}
    expected = "on_time" if today.day < 5 else "late"  # a monthly report is due before the 5th
    viewer = web.login("viewer")
    viewer.cookies.set("cw_lang", "en")
    page = viewer.get("/ui/reports").text
    schedule = re.search(
        rf'<tr data-kind="month" data-key="{last_month.key}" data-state="(\w+)"', page
    )
    assert schedule and schedule.group(1) == expected
    stem = f"{last_month.end.year}/month/{last_month.key}/all"
    for lang in ("vi", "en"):
        row = row_of(page, f"{stem}.{lang}")
        assert f'data-state="{expected}"' in row
        assert list(links_of(row)) == ["html"]  # the JSON figures are not a download


def test_generation_runs_off_the_event_loop(web: WebApp, monkeypatch: pytest.MonkeyPatch) -> None:
    """While one report renders (held here), the same server keeps answering other pages."""

    class HeldLock:
        def __init__(self) -> None:
            self.entered = threading.Event()
            self.release = threading.Event()

        def __enter__(self) -> HeldLock:
            self.entered.set()
            self.release.wait()
            return self

        def __exit__(self, *exc: object) -> None:
            return None

    held = HeldLock()
    monkeypatch.setattr(pages_reports, "GENERATION_LOCK", held)
    with TestClient(web.app, base_url=TESTSERVER, follow_redirects=False) as client:
        client.post(
            "/ui/login",
            data={"username": "admin", "password": "correct horse battery staple"},
            headers=ORIGIN,
        )
        results: list[int] = []
        worker = threading.Thread(target=lambda: results.append(generate(client)[0]))
        worker.start()
        try:
            held.entered.wait()
            # Served while the generation is parked: it does not run on the event loop.
            assert client.get("/ui/devices").status_code == 200
            assert worker.is_alive() and results == []
        finally:
            held.release.set()  # also on failure, so a regression fails instead of hanging
            worker.join()
    assert results == [303]
