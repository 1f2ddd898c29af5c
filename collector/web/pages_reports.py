"""Compliance reports: the submission schedule, the archive with downloads, and "generate now".

Reports are the ones ``campuswatch.collector.reports`` makes for the CLI and the scheduler,
read from and written to the same archive (``data_dir/reports`` unless ``context.extras``
names another), so what the UI lists is what was submitted. Everyone may read the reports
of their scope; admins, SOC analysts and facilities managers may generate one.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Annotated, Any, Final
from urllib.parse import quote

from fastapi import APIRouter, Form, HTTPException, Query, Request, status
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy import select
from sqlalchemy.orm import Session

from campuswatch.collector.api.context import ApiContext
from campuswatch.collector.api.deps import Context, DbSession
from campuswatch.collector.db.models import Site
from campuswatch.collector.reports.kpis import install_time
from campuswatch.collector.reports.periods import PERIOD_KINDS, Period, report_period
from campuswatch.collector.reports.render import FORMATS
from campuswatch.collector.reports.schedule import (
    ON_DEMAND,
    ArchivedReport,
    default_archive_dir,
    generate_on_demand,
    list_archive,
    local_day,
    schedule_states,
    submit_before,
)
from campuswatch.collector.tsdb.sqlite_store import SqliteStore
from campuswatch.collector.web.auth import UiUser, check_csrf
from campuswatch.collector.web.deps import PageUser, require_role
from campuswatch.collector.web.labels import N_
from campuswatch.collector.web.rendering import render
from campuswatch.wire.ids import utc_now

router = APIRouter(prefix="/ui/reports")

REPORTS_ARCHIVE_KEY: Final = "reports_archive"
"""``context.extras`` key of the archive folder, when it is not ``data_dir/reports``."""
GENERATOR_ROLES: Final = ("admin", "soc", "facilities")
"""May generate: the people who answer for the figures. Viewers read and download."""
REPORT_LEVELS: Final = ("province", "district", "school")
"""A report covers a subtree; rooms and buildings have no schools of their own below them."""
LANGUAGES: Final = ("vi", "en")
PAGE_SIZE: Final = 50
# How many periods of each kind the form offers, newest (possibly still running) first.
CHOICES: Final[dict[str, int]] = {
    "month": 12,
    "quarter": 8,
    "week": 12,
    "six-month": 3,
    "annual": 3,
    "semester1": 3,
    "semester2": 3,
    "school-year": 3,
    "year": 3,
}
MEDIA_TYPES: Final = {
    "html": "text/html; charset=utf-8",
    "pdf": "application/pdf",
    "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    "json": "application/json",
}
# An archived HTML report is shown in the browser: no script may run in it, and it gets an
# opaque origin (sandbox) so it could not read the UI even if a site name smuggled markup.
REPORT_HTML_CSP: Final = "sandbox; default-src 'none'; style-src 'unsafe-inline'; img-src data:"
ERRORS: Final = {
    "site": N_("Choose a site from the list."),
    "period": N_("Choose a period from the list."),
    "not_started": N_("That period has not started yet."),
    "lang": N_("Choose Vietnamese or English."),
}
GENERATION_LOCK = threading.Lock()
"""One report at a time: a PDF takes seconds of CPU, and the collector shares its cores."""
_UNSAFE_FILENAME = re.compile(r"[^A-Za-z0-9._-]+")


def archive_dir(context: ApiContext) -> Path:
    configured = context.extras.get(REPORTS_ARCHIVE_KEY)
    return Path(configured) if configured else default_archive_dir(context.settings.data_dir)


def _may_read(user: UiUser, site: str | None) -> bool:
    """Everything-reports only for unscoped users; others see their subtree's reports."""
    if site is None:
        return user.principal.allowed_sites is None
    return user.principal.can_see(site)


@dataclass(frozen=True, slots=True)
class SiteChoice:
    id: str
    name: str
    depth: int

    @property
    def indent(self) -> str:
        """Non-breaking spaces: an ``option`` can hold no markup to show the tree with."""
        return "\u00a0" * 3 * self.depth


def site_choices(session: Session, user: UiUser) -> list[SiteChoice]:
    """The site tree (provinces, districts, schools) the user may report on, depth first."""
    sites = {
        site.id: site
        for site in session.scalars(select(Site).where(Site.level.in_(REPORT_LEVELS)))
        if user.principal.can_see(site.id)
    }
    children: dict[str | None, list[Site]] = {}
    for site in sites.values():
        parent = site.parent_id if site.parent_id in sites else None
        children.setdefault(parent, []).append(site)
    chosen: list[SiteChoice] = []

    def walk(parent: str | None, depth: int) -> None:
        for site in sorted(children.get(parent, []), key=lambda s: (s.name.casefold(), s.id)):
            chosen.append(SiteChoice(site.id, site.name, depth))
            walk(site.id, depth + 1)

    walk(None, 0)
    return chosen


@dataclass(frozen=True, slots=True)
class PeriodChoice:
    value: str
    period: Period
    running: bool


def period_choices(today: date) -> dict[str, list[PeriodChoice]]:
    """Kind → its latest periods; the value names the kind and the period's first day."""
    choices: dict[str, list[PeriodChoice]] = {}
    for kind, count in CHOICES.items():
        period = report_period(kind, today)
        options = []
        for _ in range(count):
            options.append(
                PeriodChoice(f"{kind}:{period.start.isoformat()}", period, period.end >= today)
            )
            period = period.previous
        choices[kind] = options
    return choices


def default_period(today: date) -> str:
    """The month that ended last: the report people most often need."""
    month = report_period("month", today).previous
    return f"month:{month.start.isoformat()}"


def parse_period(value: str, today: date) -> Period | str:
    """The period a form value names, or the key of the error to show."""
    kind, _, start = value.partition(":")
    if kind not in PERIOD_KINDS:
        return "period"
    try:
        day = date.fromisoformat(start)
    except ValueError:
        return "period"
    period = report_period(kind, day)
    return "not_started" if period.start > today else period


@dataclass
class ArchivedSet:
    """The files of one report in one language (HTML, PDF, XLSX), as the archive lists them."""

    id: str
    origin: str
    kind: str
    key: str
    site: str | None
    lang: str
    generated_at: str
    period: Period | None
    submit_before: date | None
    files: dict[str, str] = field(default_factory=dict)

    @property
    def state(self) -> str:
        if self.origin == ON_DEMAND:
            return "on_demand"
        if self.submit_before is None:
            return "unscheduled"
        at = datetime.fromisoformat(self.generated_at)
        return "on_time" if local_day(at) < self.submit_before else "late"

    def label(self, lang: str) -> str:
        return self.period.label(lang) if self.period is not None else self.key


def archived_sets(entries: Sequence[ArchivedReport], user: UiUser) -> list[ArchivedSet]:
    """Index entries grouped into reports the user may read, newest period first."""
    sets: dict[tuple[str, ...], ArchivedSet] = {}
    for entry in entries:
        if entry.lang is None or entry.format not in FORMATS or not _may_read(user, entry.site):
            continue  # the language-free figures (JSON) are the scheduler's, not a download
        stem = entry.path.rsplit(".", 1)[0]
        key: tuple[str, ...] = (entry.origin, entry.kind, entry.key, str(entry.site), entry.lang)
        if entry.origin == ON_DEMAND:
            key += (stem,)
        found = sets.get(key)
        if found is None:
            try:
                period: Period | None = report_period(
                    entry.kind, date.fromisoformat(entry.period_start)
                )
            except ValueError:
                period = None  # an index from a newer version with a kind we do not know
            deadline = None
            if entry.origin != ON_DEMAND:
                deadline = submit_before(entry.kind, date.fromisoformat(entry.period_end))
            found = sets[key] = ArchivedSet(
                id=stem,
                origin=entry.origin,
                kind=entry.kind,
                key=entry.key,
                site=entry.site,
                lang=entry.lang,
                generated_at=entry.generated_at,
                period=period,
                submit_before=deadline,
            )
        found.files[entry.format] = entry.path
        found.generated_at = min(found.generated_at, entry.generated_at)
    return sorted(
        sets.values(),
        key=lambda s: (s.period.end if s.period else date.min, s.generated_at, s.id),
        reverse=True,
    )


def _site_names(session: Session) -> dict[str, str]:
    return {site_id: name for site_id, name in session.execute(select(Site.id, Site.name))}


def _page(
    request: Request,
    session: Session,
    context: ApiContext,
    user: UiUser,
    *,
    page: int = 1,
    form: dict[str, str] | None = None,
    errors: dict[str, str] | None = None,
    new: str | None = None,
    status_code: int = 200,
) -> HTMLResponse:
    today = local_day(utc_now())
    entries = list_archive(archive_dir(context))
    scope = user.principal.site_scope
    reports = archived_sets(entries, user)
    pages = max(1, -(-len(reports) // PAGE_SIZE))
    names = _site_names(session)
    made = next((r for r in reports if new is not None and r.id == new), None)
    if form is None and made is not None and made.period is not None:
        # After "generate", the form keeps what was asked for: the next one often differs
        # only in language or site.
        period_value = f"{made.kind}:{made.period.start.isoformat()}"
        form = {"site_id": made.site or "", "period": period_value, "lang": made.lang}
    values: dict[str, Any] = {
        "nav": "reports",
        "schedule": schedule_states(entries, today, scope, installed=install_time(session)),
        "schedule_scope": names.get(scope, scope) if scope else None,
        "reports": reports[(page - 1) * PAGE_SIZE : page * PAGE_SIZE],
        "total": len(reports),
        "page": page,
        "pages": pages,
        "site_names": names,
        "may_generate": user.may(*GENERATOR_ROLES),
        "may_report_all": user.principal.allowed_sites is None,
        "sites": site_choices(session, user),
        "period_choices": period_choices(today),
        "form": form
        or {"site_id": "" if scope is None else scope, "period": default_period(today)},
        "errors": errors or {},
        "error_texts": ERRORS,
        "new": new,
        "formats": FORMATS,
    }
    return render(request, "reports.html", values, user=user, status_code=status_code)


@router.get("", response_class=HTMLResponse)
def reports_page(
    request: Request,
    session: DbSession,
    context: Context,
    user: PageUser,
    page: Annotated[int, Query(ge=1)] = 1,
    new: Annotated[str | None, Query(max_length=512)] = None,
) -> HTMLResponse:
    return _page(request, session, context, user, page=page, new=new)


@router.post("/generate", response_model=None)
def generate_report(
    request: Request,
    session: DbSession,
    context: Context,
    user: PageUser,
    csrf_token: Annotated[str, Form()] = "",
    site_id: Annotated[str, Form(max_length=64)] = "",
    period: Annotated[str, Form(max_length=40)] = "",
    lang: Annotated[str, Form(max_length=8)] = "",
) -> Response:
    """A plain ``def`` on purpose: FastAPI runs it in a worker thread, so the seconds a PDF
    takes never hold up the event loop, and ``GENERATION_LOCK`` lets one report render at a time."""
    check_csrf(request, user, csrf_token)
    require_role(user, *GENERATOR_ROLES)
    today = local_day(utc_now())
    form = {"site_id": site_id, "period": period, "lang": lang}
    errors: dict[str, str] = {}
    site: str | None = site_id.strip() or None
    if site is None:
        if user.principal.allowed_sites is not None:
            errors["site_id"] = "site"
    elif site not in {choice.id for choice in site_choices(session, user)}:
        # Only what the form offered: one answer for unknown, out-of-scope and room-level
        # sites (the form reveals no other district), and no odd text reaches a query.
        errors["site_id"] = "site"
    chosen = parse_period(period, today)
    if isinstance(chosen, str):
        errors["period"] = chosen
    if lang not in LANGUAGES:
        errors["lang"] = "lang"
    if errors or isinstance(chosen, str):
        return _page(request, session, context, user, form=form, errors=errors, status_code=422)
    session.close()  # the report opens its own session; don't hold a snapshot meanwhile
    series = context.timeseries if isinstance(context.timeseries, SqliteStore) else None
    with GENERATION_LOCK, context.sessions() as report_session:
        try:
            written = generate_on_demand(
                report_session, archive_dir(context), chosen, site, lang, series=series
            )
        except LookupError:  # the site was deleted between the check and the report
            errors["site_id"] = "site"
            return _page(request, session, context, user, form=form, errors=errors, status_code=422)
    stem = written[0].path.rsplit(".", 1)[0]
    return RedirectResponse(f"/ui/reports?new={quote(stem, safe='')}", status_code=303)


def _filename(entry: ArchivedReport) -> str:
    scope = "all" if entry.site is None else entry.site
    name = f"campuswatch-{entry.kind}-{entry.key}-{scope}.{entry.lang}.{entry.format}"
    return _UNSAFE_FILENAME.sub("_", name)


@router.get("/files/{path:path}")
def report_file(path: str, context: Context, user: PageUser) -> Response:
    """Only files the index lists, and only within the user's scope: the path is looked up,
    never joined blindly, so ``../`` cannot leave the archive."""
    folder = archive_dir(context)
    entry = next((e for e in list_archive(folder) if e.path == path), None)
    if entry is None or not _may_read(user, entry.site):
        raise HTTPException(status.HTTP_404_NOT_FOUND, "not found")
    target = (folder / entry.path).resolve()
    if not target.is_relative_to(folder.resolve()) or not target.is_file():
        raise HTTPException(status.HTTP_404_NOT_FOUND, "not found")
    filename = _filename(entry)
    disposition = "inline" if entry.format == "html" else "attachment"
    headers = {
        "Content-Disposition": f'{disposition}; filename="{filename}"',
        "Cache-Control": "no-store",
        "X-Content-Type-Options": "nosniff",
    }
    if entry.format == "html":
        headers["Content-Security-Policy"] = REPORT_HTML_CSP
    media_type = MEDIA_TYPES.get(entry.format, "application/octet-stream")
    return Response(target.read_bytes(), media_type=media_type, headers=headers)
