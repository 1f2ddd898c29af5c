"""Alerts: list, filter, acknowledge, resolve, comment, silence (SOC analysts)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Query, status
from pydantic import BaseModel, ConfigDict, Field

from campuswatch.collector.alerts.manager import AlertInputError, AlertManager, AlertStateError
from campuswatch.collector.alerts.queries import AlertNotFound, get_alert, list_alerts
from campuswatch.collector.api.context import ApiContext
from campuswatch.collector.api.deps import (
    Context,
    CurrentPrincipal,
    DbSession,
    Responder,
    ensure_visible,
    refuse_nul,
)
from campuswatch.collector.api.schemas import (
    Page,
    PageNumber,
    RowId,
    problems,
)

router = APIRouter(
    prefix="/api/v1/alerts",
    tags=["alerts"],
    responses=problems(401, 422),
    dependencies=[Depends(refuse_nul)],
)


class AlertOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    fingerprint: str
    rule_id: str
    rule_title: str
    level: str
    state: str
    silenced: bool
    inhibited: bool
    site_id: str
    device_id: str | None
    summary: str
    labels: dict[str, Any]
    tags: list[str]
    first_seen: datetime
    last_seen: datetime
    occurrences: int
    acknowledged_by: str | None
    acknowledged_at: datetime | None
    texts: dict[str, dict[str, str]] = Field(
        default_factory=dict,
        description="The alert's title, summary and description in each language the rules "
        'are written in, as rendered when it fired: {"vi": {"title": …}, "en": {…}}. The '
        "flat fields above are the English ones.",
    )


class EvidenceOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    message_id: str
    kind: str
    ts: datetime
    excerpt: dict[str, Any]


class AuditOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    at: datetime
    action: str
    actor: str
    note: str | None
    from_state: str | None
    to_state: str | None


class AlertDetailOut(AlertOut):
    description: str
    runbook_en: str
    runbook_vi: str
    evidence: list[EvidenceOut]
    audit: list[AuditOut]


class ActionIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    action: Literal["acknowledge", "unacknowledge", "resolve", "comment"]
    note: str | None = Field(default=None, max_length=4000)


MAX_BULK_ALERTS = 500


class BulkActionIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    ids: list[RowId] = Field(min_length=1, max_length=MAX_BULK_ALERTS)
    action: Literal["acknowledge", "unacknowledge", "resolve"]
    note: str | None = Field(default=None, max_length=4000)


class BulkSkipped(BaseModel):
    id: int
    reason: str


class BulkActionOut(BaseModel):
    done: list[int]
    """Alerts the action changed, in the order given."""
    skipped: list[BulkSkipped]
    """Alerts the action did not fit (already acknowledged or resolved, say), with why."""


class Matcher(BaseModel):
    label: str = Field(min_length=1, max_length=64)
    op: Literal["=", "!=", "=~", "!~"] = "="
    value: str = Field(max_length=256)


class SilenceIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    matchers: list[Matcher] = Field(min_length=1)
    ends_at: datetime
    comment: str = Field(default="", max_length=2000)


class SilenceOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    matchers: list[dict[str, Any]]
    starts_at: datetime
    ends_at: datetime
    created_by: str
    comment: str


def _manager(context: ApiContext) -> AlertManager:
    manager = context.extras.get("alert_manager")
    if manager is None:
        manager = AlertManager(context.sessions)
        context.extras["alert_manager"] = manager
    assert isinstance(manager, AlertManager)
    return manager


@router.get("", response_model=Page[AlertOut], responses=problems(404))
def alerts(
    session: DbSession,
    principal: CurrentPrincipal,
    state: Annotated[str | None, Query(pattern="^(open|firing|acknowledged|resolved)$")] = None,
    level: Annotated[str | None, Query(pattern="^(info|low|medium|high|critical)$")] = None,
    site_id: str | None = None,
    rule_id: str | None = None,
    device_id: str | None = None,
    search: Annotated[str | None, Query(max_length=128)] = None,
    page: PageNumber = 1,
    page_size: Annotated[int, Query(ge=1, le=500)] = 50,
) -> dict[str, Any]:
    """The alert queue, newest activity first; scoped users see their sites only. ``search``
    looks in the title and summary in every language, ignoring case and accents."""
    sites: list[str] | None = None
    if site_id is not None:
        ensure_visible(principal, site_id)
        sites = [site_id]
    elif principal.allowed_sites is not None:
        sites = sorted(principal.allowed_sites)
    rows, total = list_alerts(
        session,
        state=state,
        level=level,
        site_ids=sites,
        rule_id=rule_id,
        device_id=device_id,
        search=search,
        page=page,
        page_size=page_size,
    )
    return {"items": rows, "total": total, "page": page, "page_size": page_size}


@router.get("/{alert_id}", response_model=AlertDetailOut, responses=problems(404))
def alert(alert_id: RowId, session: DbSession, principal: CurrentPrincipal) -> dict[str, Any]:
    """One alert with its triggering messages, runbook and full audit trail."""
    try:
        detail = get_alert(session, alert_id)
    except AlertNotFound:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "not found") from None
    ensure_visible(principal, detail.alert.site_id)
    data = AlertOut.model_validate(detail.alert).model_dump()
    data.update(
        description=detail.alert.description,
        runbook_en=detail.alert.runbook_en,
        runbook_vi=detail.alert.runbook_vi,
        evidence=[EvidenceOut.model_validate(e) for e in detail.evidence],
        audit=[AuditOut.model_validate(a) for a in detail.audit],
    )
    return data


@router.post("/actions", response_model=BulkActionOut, responses=problems(400, 403, 404))
def act_on_many(
    body: BulkActionIn, session: DbSession, principal: Responder, context: Context
) -> BulkActionOut:
    """One action and one note for each listed alert, as the web UI's queue does.

    Every alert is looked up and checked on its site first: one unknown or foreign id refuses
    the whole request (404, as for a single alert) with nothing changed. An alert the action
    does not fit (already acknowledged, already resolved) is skipped with the reason, since a
    queue changed by a colleague meanwhile is normal on a SOC."""
    ids = list(dict.fromkeys(body.ids))
    for alert_id in ids:
        try:
            current = get_alert(session, alert_id).alert
        except AlertNotFound:
            raise HTTPException(status.HTTP_404_NOT_FOUND, "not found") from None
        ensure_visible(principal, current.site_id)
    session.close()  # the manager runs its own transactions
    manager = _manager(context)
    act = getattr(manager, body.action)
    actor = f"user:{principal.name}"
    done: list[int] = []
    skipped: list[BulkSkipped] = []
    for alert_id in ids:
        try:
            act(alert_id, actor, body.note)
        except AlertStateError as exc:
            skipped.append(BulkSkipped(id=alert_id, reason=str(exc)))
        else:
            done.append(alert_id)
    notify = context.extras.get("alert_notify")
    if done and callable(notify):
        notify([])
    return BulkActionOut(done=done, skipped=skipped)


@router.post("/{alert_id}/actions", response_model=AlertOut, responses=problems(400, 403, 404, 409))
def act(
    alert_id: RowId, body: ActionIn, session: DbSession, principal: Responder, context: Context
) -> Any:
    """Acknowledge, un-acknowledge, resolve or comment, with a note; forwarded to the SOC."""
    try:
        current = get_alert(session, alert_id).alert
    except AlertNotFound:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "not found") from None
    ensure_visible(principal, current.site_id)
    manager = _manager(context)
    actor = f"user:{principal.name}"
    try:
        if body.action == "comment":
            if not body.note:
                raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, "a comment needs a note")
            manager.comment(alert_id, actor, body.note)
        else:
            getattr(manager, body.action)(alert_id, actor, body.note)
    except AlertStateError as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from None
    notify = context.extras.get("alert_notify")
    if callable(notify):
        notify([])
    session.expire_all()
    return get_alert(session, alert_id).alert


@router.post("/silences", response_model=SilenceOut, status_code=201, responses=problems(400, 403))
def silence(body: SilenceIn, principal: Responder, context: Context) -> Any:
    """Mute alerts matching every matcher until ``ends_at`` (labels: rule_id, site_id,
    device_id, level and the rule's labels). Scoped users must pin their own site."""
    if principal.site_scope is not None and not any(
        m.label == "site_id" and m.op == "=" and principal.can_see(m.value) for m in body.matchers
    ):
        raise HTTPException(
            status.HTTP_403_FORBIDDEN, "a scoped account must silence with site_id=<its site>"
        )
    try:
        return _manager(context).create_silence(
            [m.model_dump() for m in body.matchers],
            body.ends_at,
            f"user:{principal.name}",
            body.comment,
        )
    except AlertInputError as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(exc)) from None
