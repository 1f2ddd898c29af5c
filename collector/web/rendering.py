"""Jinja2 set-up and the values every page template receives."""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

from babel.numbers import format_decimal, format_scientific
from fastapi import Request
from fastapi.responses import HTMLResponse
from jinja2 import Environment, FileSystemLoader, select_autoescape

from campuswatch.collector.reports.i18n import percent_points, points_text
from campuswatch.collector.web import labels
from campuswatch.collector.web.auth import CSRF_FIELD, LANGUAGE_COOKIE, UiUser
from campuswatch.collector.web.i18n import LANGUAGES, gettext_for, pick_language

TEMPLATE_DIR: Final = Path(__file__).parent / "templates"
# Schools, offices and their staff are in Vietnam; times are shown in its zone, labelled.
DISPLAY_ZONE: Final = ZoneInfo("Asia/Ho_Chi_Minh")

environment = Environment(
    loader=FileSystemLoader(TEMPLATE_DIR),
    autoescape=select_autoescape(["html"]),
    trim_blocks=True,
    lstrip_blocks=True,
    # Templates call the ``_`` the page passes in; the extension only makes Babel's
    # extractor and the engine agree on the syntax.
    extensions=["jinja2.ext.i18n"],
)


def request_language(request: Request) -> str:
    return pick_language(
        request.cookies.get(LANGUAGE_COOKIE), request.headers.get("accept-language")
    )


def format_time(value: datetime | date | str | None) -> str:
    if value is None or value == "":
        return "—"
    if isinstance(value, str):
        text = value
        try:
            value = datetime.fromisoformat(text)
        except ValueError:
            return text
    if isinstance(value, datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value.astimezone(DISPLAY_ZONE).strftime("%Y-%m-%d %H:%M")
    return value.isoformat()


# Beyond this, plain digits are noise to a reader (and Babel's decimal context gives up
# near 1e26, which made a page answer 500 for ``uptime_s: 1e30``): scientific notation.
MAX_PLAIN_NUMBER: Final = 1e15


def format_number(value: float | int | None, digits: int, language: str) -> str:
    """Any number as text in the reader's locale; never raises (a device can send 1e308)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    if isinstance(value, float) and math.isinf(value):
        return "∞" if value > 0 else "-∞"
    if round(value, digits) == 0:
        value = 0  # -0.04 shown with one decimal is "0", never "-0"
    if abs(value) >= MAX_PLAIN_NUMBER:
        return format_scientific(value, format=f"0.{'#' * digits}E0", locale=language)
    return format_decimal(value, format=f"#,##0.{'#' * digits}", locale=language)


def format_percent(value: float | None, language: str) -> str:
    """A percentage (0–100, from ``Figures``) by the reports' one rounding rule, so the UI,
    the wall and every report print one ratio the same way."""
    return points_text(None if value is None else percent_points(value, 100), language)


def page_url(request: Request, **changes: object) -> str:
    """The current page's URL with some query parameters replaced (None removes one)."""
    params = dict(request.query_params)
    for key, value in changes.items():
        if value is None or value == "":
            params.pop(key, None)
        else:
            params[key] = str(value)
    query = urlencode(params)
    return request.url.path + (f"?{query}" if query else "")


def render(
    request: Request,
    template: str,
    values: Mapping[str, Any],
    *,
    user: UiUser | None,
    status_code: int = 200,
) -> HTMLResponse:
    language = request_language(request)
    gettext = gettext_for(language)

    def number(value: float | int | None, digits: int = 1) -> str:
        return format_number(value, digits, language)

    def percent(value: float | None) -> str:
        return format_percent(value, language)

    context = {
        "request": request,
        "user": user,
        "lang": language,
        "languages": LANGUAGES,
        "_": gettext,
        "gettext": gettext,
        "csrf_field": CSRF_FIELD,
        "csrf_token": user.csrf_token if user else "",
        "labels": labels,
        "fmt_time": format_time,
        "number": number,
        "percent": percent,
        "page_url": lambda **changes: page_url(request, **changes),
        "current_path": request.url.path + (f"?{request.url.query}" if request.url.query else ""),
        **values,
    }
    html = environment.get_template(template).render(context)
    return HTMLResponse(
        html,
        status_code=status_code,
        headers={
            # Pages show data one user may see and another not: never cache them.
            "Cache-Control": "no-store",
            "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; "
            "style-src 'self'; script-src 'self'; form-action 'self'; frame-ancestors 'none'",
            "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "same-origin",
            "Content-Language": language,
        },
    )
