"""The SOC's alert queue, an alert's evidence, runbook and history, and the human actions."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Annotated, Final
from urllib.parse import urlencode

from fastapi import APIRouter, Form, HTTPException, Query, Request, status
from fastapi.responses import HTMLResponse, RedirectResponse
from sqlalchemy import select

from campuswatch.collector.alerts.manager import AlertError, AlertManager
from campuswatch.collector.alerts.models import Alert
from campuswatch.collector.alerts.queries import AlertNotFound, get_alert, list_alerts, list_groups
from campuswatch.collector.api.context import ApiContext
from campuswatch.collector.api.deps import Context, DbSession
from campuswatch.collector.db.models import Asset, AssetMac, Site
from campuswatch.collector.register.assets import device_names, display_name, normalize_mac
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
BULK_ACTIONS: Final = ("acknowledge", "resolve", "silence")
MAX_BULK: Final = PAGE_SIZE * 4


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


def site_names(session: DbSession, site_ids: Sequence[str]) -> dict[str, str]:
    """site id → its name for the alerts on a page (a site without a name keeps its id)."""
    wanted = sorted(set(site_ids))
    if not wanted:
        return {}
    found = session.execute(select(Site.id, Site.name).where(Site.id.in_(wanted)))
    names = {site_id: site_id for site_id in wanted}
    names.update({site_id: name for site_id, name in found if name})
    return names


@dataclass
class QueueGroup:
    """The open alerts of one rule at one school on this page, in queue order."""

    site_id: str
    rule_id: str
    alerts: list[Alert]
    open_total: int


def queue_groups(rows: Sequence[Alert], open_counts: dict[str, int]) -> list[QueueGroup]:
    """Rows grouped by school and rule; a group sits where its first (most urgent) row was."""
    groups: dict[tuple[str, str], QueueGroup] = {}
    for alert in rows:
        key = (alert.site_id, alert.rule_id)
        if key not in groups:
            total = open_counts.get(alert.group_key, 0)
            groups[key] = QueueGroup(alert.site_id, alert.rule_id, [], total)
        groups[key].alerts.append(alert)
    for group in groups.values():
        group.open_total = max(group.open_total, len(group.alerts))
    return list(groups.values())


def discovered_host(session: DbSession, alert: Alert) -> Asset | None:
    """The register's entry for an unknown-device alert's host (same MAC at the same school).

    The register keeps every discovered host as an unregistered asset; Register and Ignore
    on the alert page act on it through the inventory's confirmation.
    """
    mac = normalize_mac(str((alert.labels or {}).get("mac") or ""))
    if mac is None:
        return None
    return session.scalars(
        select(Asset)
        .join(AssetMac, AssetMac.asset_id == Asset.id)
        .where(AssetMac.mac == mac, Asset.site_id == alert.site_id)
        .order_by(Asset.id)
        .limit(1)
    ).first()


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
        order="severity",
    )
    open_counts = {group.group_key: group.open for group in list_groups(session, site_ids=scope)}
    values = {
        "nav": "alerts",
        "alerts": rows,
        "groups": queue_groups(rows, open_counts),
        "site_names": site_names(session, [alert.site_id for alert in rows]),
        "may_act": user.may(*RESPONDER_ROLES),
        "silence_hours": SILENCE_HOURS,
        "back": _queue_url(request),
        "done": request.query_params.get("done"),
        "skipped": request.query_params.get("skipped"),
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
    host = discovered_host(session, detail.alert) if detail.alert.device_id is None else None
    values = {
        "site_names": site_names(session, [detail.alert.site_id]),
        "host": host,
        "host_name": display_name(host) if host is not None else "",
        "may_register": user.may("admin", "facilities"),
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


def _queue_url(request: Request) -> str:
    """This queue's address without the previous bulk action's outcome."""
    kept = [(k, v) for k, v in request.query_params.multi_items() if k not in ("done", "skipped")]
    return request.url.path + (f"?{urlencode(kept)}" if kept else "")


def _back_to_queue(back: str) -> str:
    """Where a bulk action returns: the queue the user came from, never another page."""
    if back == "/ui/alerts" or back.startswith("/ui/alerts?"):
        return back
    return "/ui/alerts"


@router.post("/bulk")
def bulk_action(
    request: Request,
    session: DbSession,
    context: Context,
    user: PageUser,
    alert_id: Annotated[list[int], Form(max_length=MAX_BULK)],
    action: Annotated[str, Form(max_length=16)],
    csrf_token: Annotated[str, Form()] = "",
    note: Annotated[str, Form(max_length=4000)] = "",
    hours: Annotated[int, Form(ge=1, le=24 * 31)] = 4,
    back: Annotated[str, Form(max_length=2000)] = "",
) -> RedirectResponse:
    """One action and one note for every ticked alert.

    Every alert is looked up and checked on its site before any is touched: one foreign or
    unknown id refuses the whole request (404, as for a single alert) with nothing changed.
    An alert whose state the action does not fit (already acknowledged, already resolved) is
    skipped and counted, since a queue refreshed by someone else is normal on a SOC.
    """
    check_csrf(request, user, csrf_token)
    require_role(user, *RESPONDER_ROLES)
    if action not in BULK_ACTIONS:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "unknown action")
    chosen: list[Alert] = []
    for number in dict.fromkeys(alert_id):
        try:
            alert = get_alert(session, number).alert
        except AlertNotFound:
            raise HTTPException(status.HTTP_404_NOT_FOUND, "not found") from None
        require_visible(user, alert.site_id)
        chosen.append(alert)
    fingerprints = {alert.id: alert.fingerprint for alert in chosen}
    session.close()  # the manager runs its own transactions
    manager = alert_manager(context)
    text = note.strip() or None
    done = skipped = 0
    for number, fingerprint in fingerprints.items():
        try:
            if action == "acknowledge":
                _forward(context, manager.acknowledge(number, user.actor, text))
            elif action == "resolve":
                _forward(context, manager.resolve(number, user.actor, text))
            else:
                manager.create_silence(
                    [{"label": "fingerprint", "op": "=", "value": fingerprint}],
                    utc_now() + timedelta(hours=hours),
                    user.actor,
                    note.strip(),
                )
            done += 1
        except AlertError:
            skipped += 1
    target = _back_to_queue(back)
    separator = "&" if "?" in target else "?"
    return RedirectResponse(f"{target}{separator}done={done}&skipped={skipped}", status_code=303)


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
