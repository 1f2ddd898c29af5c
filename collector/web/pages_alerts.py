"""The SOC's alert queue, an alert's evidence, runbook and history, and the human actions."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import Annotated, Final

from fastapi import APIRouter, Form, HTTPException, Query, Request, status
from fastapi.responses import HTMLResponse, RedirectResponse
from sqlalchemy import select

from campuswatch.collector.alerts.manager import AlertError, AlertManager
from campuswatch.collector.alerts.models import Alert
from campuswatch.collector.alerts.queries import AlertNotFound, get_alert, list_alerts
from campuswatch.collector.api.context import ApiContext
from campuswatch.collector.api.deps import Context, DbSession
from campuswatch.collector.db.models import Site
from campuswatch.collector.register.assets import device_names
from campuswatch.collector.signals import LEVELS, AlertNotification, TextPart, text_in
from campuswatch.collector.web.auth import check_csrf
from campuswatch.collector.web.deps import PageUser, require_role, require_visible
from campuswatch.collector.web.rendering import render, request_language
from campuswatch.wire.ids import utc_now

router = APIRouter(prefix="/ui/alerts")
log = logging.getLogger(__name__)

ALERT_MANAGER_KEY: Final = "alert_manager"
"""``context.extras`` key of the collector's AlertManager."""
ALERT_NOTIFY_KEY: Final = "alert_notify"
"""``context.extras`` key of a callable that puts notifications in the SOC outbox."""
PAGE_SIZE: Final = 50
SILENCE_HOURS: Final = (1, 4, 24, 72, 168)
RESPONDER_ROLES: Final = ("admin", "soc")
ACTIONS: Final = ("acknowledge", "unacknowledge", "resolve", "comment", "silence")


def alert_manager(context: ApiContext) -> AlertManager:
    manager = context.extras.get(ALERT_MANAGER_KEY)
    if manager is None:
        # Human actions only need the database; the collector's own manager (with its
        # policy) replaces this one when it registers itself in extras.
        manager = AlertManager(context.sessions, collector_id=context.settings.collector_id)
        context.extras[ALERT_MANAGER_KEY] = manager
    assert isinstance(manager, AlertManager)
    return manager


def _forward(context: ApiContext, notifications: Sequence[AlertNotification]) -> None:
    notify: Callable[[Sequence[AlertNotification]], None] | None = context.extras.get(
        ALERT_NOTIFY_KEY
    )
    if notify is not None:
        notify(notifications)
    elif notifications:
        log.warning(
            "no SOC outbox registered; %d alert notifications not forwarded", len(notifications)
        )


_ENGLISH_COLUMNS: Final[dict[TextPart, str]] = {
    "title": "rule_title",
    "summary": "summary",
    "description": "description",
}


def alert_text_for(request: Request) -> Callable[[Alert, TextPart], str]:
    """``alert_text(alert, part)`` for templates: the alert's prose in the reader's language.

    Chosen per request, so switching the UI language shows every alert in the new language
    (both were rendered when it fired); alerts older than that show their English text.
    """
    language = request_language(request)

    def alert_text(alert: Alert, part: TextPart) -> str:
        fallback = str(getattr(alert, _ENGLISH_COLUMNS[part]) or "")
        return text_in(alert.texts or {}, language, part, fallback)

    return alert_text


def _visible_sites(session: DbSession, user: PageUser) -> list[Site]:
    return [
        s for s in session.scalars(select(Site).order_by(Site.name)) if user.principal.can_see(s.id)
    ]


@router.get("", response_class=HTMLResponse)
def alert_queue(
    request: Request,
    session: DbSession,
    user: PageUser,
    level: Annotated[str | None, Query(max_length=16)] = None,
    state: Annotated[str | None, Query(max_length=16)] = "open",
    site_id: Annotated[str | None, Query(max_length=64)] = None,
    search: Annotated[str | None, Query(max_length=128)] = None,
    page: Annotated[int, Query(ge=1)] = 1,
) -> HTMLResponse:
    if site_id:
        require_visible(user, site_id)
        scope: list[str] | None = [site_id]
    else:
        scope = (
            sorted(user.principal.allowed_sites)
            if user.principal.allowed_sites is not None
            else None
        )
    rows, total = list_alerts(
        session,
        state=state or None,
        level=level if level in LEVELS else None,
        site_ids=scope,
        search=search,
        page=page,
        page_size=PAGE_SIZE,
    )
    values = {
        "nav": "alerts",
        "alerts": rows,
        "total": total,
        "page": page,
        "pages": max(1, -(-total // PAGE_SIZE)),
        "filters": {
            "level": level or "",
            "state": state or "",
            "site_id": site_id or "",
            "search": search or "",
        },
        "sites": _visible_sites(session, user),
        "levels": tuple(reversed(LEVELS)),
        "alert_text": alert_text_for(request),
        "device_names": device_names(session, [alert.device_id for alert in rows]),
    }
    return render(request, "alerts.html", values, user=user)


@router.get("/{alert_id}", response_class=HTMLResponse)
def alert_detail(
    alert_id: int, request: Request, session: DbSession, user: PageUser
) -> HTMLResponse:
    try:
        detail = get_alert(session, alert_id)
    except AlertNotFound:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "not found") from None
    require_visible(user, detail.alert.site_id)
    values = {
        "nav": "alerts",
        "detail": detail,
        "alert": detail.alert,
        "silence_hours": SILENCE_HOURS,
        "may_act": user.may(*RESPONDER_ROLES),
        "error": request.query_params.get("error"),
        "alert_text": alert_text_for(request),
        "device_names": device_names(session, [detail.alert.device_id]),
    }
    return render(request, "alert_detail.html", values, user=user)


@router.post("/{alert_id}/{action}")
def alert_action(
    alert_id: int,
    action: str,
    request: Request,
    session: DbSession,
    context: Context,
    user: PageUser,
    csrf_token: Annotated[str, Form()] = "",
    note: Annotated[str, Form(max_length=4000)] = "",
    hours: Annotated[int, Form(ge=1, le=24 * 31)] = 4,
) -> RedirectResponse:
    check_csrf(request, user, csrf_token)
    require_role(user, *RESPONDER_ROLES)
    if action not in ACTIONS:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "unknown action")
    try:
        alert = get_alert(session, alert_id).alert
    except AlertNotFound:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "not found") from None
    require_visible(user, alert.site_id)
    session.close()  # the manager runs its own transaction; don't hold a read snapshot open
    manager = alert_manager(context)
    text = note.strip() or None
    target = f"/ui/alerts/{alert_id}"
    try:
        if action == "acknowledge":
            _forward(context, manager.acknowledge(alert_id, user.actor, text))
        elif action == "unacknowledge":
            _forward(context, manager.unacknowledge(alert_id, user.actor, text))
        elif action == "resolve":
            _forward(context, manager.resolve(alert_id, user.actor, text))
        elif action == "comment":
            _forward(context, manager.comment(alert_id, user.actor, note))
        else:
            # Silence exactly this alert's subject; broader silences belong to the API.
            manager.create_silence(
                [{"label": "fingerprint", "op": "=", "value": alert.fingerprint}],
                utc_now() + timedelta(hours=hours),
                user.actor,
                note.strip(),
            )
    except AlertError as exc:
        return RedirectResponse(f"{target}?error={type(exc).__name__}", status_code=303)
    return RedirectResponse(target, status_code=303)
