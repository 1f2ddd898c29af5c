"""The administrators' page: accounts, API tokens, display tokens for walls, enrolment
tokens, and the audit log of every change made to them.

Each form calls what the command line and the API call (``collector.accounts``,
``db.access.create_api_token``, ``api.admin``, the enrolment service), so the same rules
hold: names matched whole, grants no higher and no wider than the admin's own, a scoped
admin sees and changes only its subtree. Every change writes an ``audit_events`` row in
its own transaction. A new secret is shown once, in the answer to the form that made it
(never in a URL); only its hash is stored.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Annotated, Any, Final
from urllib.parse import quote

from fastapi import APIRouter, Form, HTTPException, Request, status
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy import select
from sqlalchemy.orm import Session

from campuswatch.collector.accounts import (
    MIN_PASSWORD_LENGTH,
    AccountError,
    AccountView,
    add_account,
    change_password,
    list_accounts,
    set_disabled,
)
from campuswatch.collector.api.admin import (
    DISPLAY_PREFIX,
    TokenNameInUse,
    grant_token,
    is_display_token,
    list_tokens,
    revoke_visible_token,
)
from campuswatch.collector.api.context import ApiContext
from campuswatch.collector.api.deps import Context, DbSession
from campuswatch.collector.api.enrolment import (
    enrolment_service,
    issue_enrolment_token,
    list_enrolment_tokens,
    withdraw_enrolment_token,
)
from campuswatch.collector.api.schemas import RowId
from campuswatch.collector.db.access import UI_SESSION_PREFIX, GrantRefused
from campuswatch.collector.db.models import ROLES, ApiToken, AuditEvent
from campuswatch.collector.enrolment.models import EnrolmentToken
from campuswatch.collector.enrolment.service import (
    MAX_TOKEN_LIFETIME,
    EnrolmentNotFound,
    EnrolmentRefused,
)
from campuswatch.collector.web.auth import UiUser, check_csrf
from campuswatch.collector.web.deps import PageUser
from campuswatch.collector.web.i18n import LANGUAGES
from campuswatch.collector.web.labels import N_
from campuswatch.collector.web.pages_reports import SiteChoice, site_choices
from campuswatch.collector.web.rendering import render

router = APIRouter(prefix="/ui/admin")

AUDIT_ROWS: Final = 50
AUDIT_SCAN: Final = 2000
"""A scoped admin's log is filtered row by row; this many recent rows are read for it."""
MAX_NAME: Final = 100
MAX_NOTE: Final = 256
MAX_ENROLMENT_USES: Final = 100_000
MAX_ENROLMENT_HOURS: Final = int(MAX_TOKEN_LIFETIME.total_seconds() // 3600)
_CONTROL: Final = re.compile(r"[\x00-\x1f\x7f]")

ERRORS: Final = {
    "username": N_(
        "A user name is 1 to 64 letters, digits or . _ @ - and starts with a letter or digit."
    ),
    "role": N_("Choose a role from the list."),
    "language": N_("Choose a language from the list."),
    "site": N_("Choose a site from the list."),
    "exists": N_("This user name is already taken."),
    "taken": N_(
        "A valid token with this name exists: revoke it first, or choose another name. "
        "(Reloading the page that showed a new token sends its form again.)"
    ),
    "password": N_("A password needs at least %(count)s characters and no control characters."),
    "grant": N_("You cannot grant a role above your own or a scope outside yours."),
    "unknown": N_("There is no such account in your scope."),
    "self": N_("You cannot disable your own account."),
    "name": N_("A name is 1 to 100 characters, without line breaks or control characters."),
    "note": N_("A note is at most 256 characters, without line breaks or control characters."),
    "hours": N_("The validity is a whole number of hours from 1 to %(count)s."),
    "uses": N_("The number of uses is a whole number from 1 to %(count)s."),
    "enrolment": N_(
        "Enrolment is not configured on this collector (set CW_COLLECTOR_BROKER_DIR and "
        "CW_COLLECTOR_AGENT_BROKER_URL)."
    ),
    "token": N_("There is no such token in your scope."),
    "invalid": N_("The change was refused: check the form."),
}
ERROR_STATUS: Final = {
    "grant": 403,
    "unknown": 404,
    "token": 404,
    "self": 409,
    "exists": 409,
    "taken": 409,
}
DONE: Final = {
    "user.add": N_("Account %(name)s added."),
    "user.disable": N_("Account %(name)s disabled; its open sessions ended."),
    "user.enable": N_("Account %(name)s enabled."),
    "user.password": N_("Password of %(name)s changed; its open sessions ended."),
    "token.revoke": N_("Token %(name)s revoked."),
    "enrolment_token.revoke": N_("Enrolment token %(name)s revoked."),
}
ACTIONS: Final = {
    "user.add": N_("account added"),
    "user.disable": N_("account disabled"),
    "user.enable": N_("account enabled"),
    "user.password": N_("password changed"),
    "token.create": N_("API token created"),
    "token.revoke": N_("API token revoked"),
    "display_token.create": N_("display token created"),
    "display_token.revoke": N_("display token revoked"),
    "enrolment_token.create": N_("enrolment token created"),
    "enrolment_token.revoke": N_("enrolment token revoked"),
}
TOKEN_STATE: Final = {
    "active": N_("active"),
    "expired": N_("expired"),
    "exhausted": N_("used up"),
    "revoked": N_("revoked"),
}


class Refused(Exception):
    """A form the page answers with a message (``ERRORS[reason]``) and nothing changed."""

    def __init__(self, reason: str, form: str) -> None:
        super().__init__(reason)
        self.reason = reason
        self.form = form


@dataclass(frozen=True, slots=True)
class NewSecret:
    kind: str
    """``api``, ``display`` or ``enrolment``."""
    name: str
    secret: str
    wall_url: str | None = None


def _admin(user: UiUser) -> None:
    if not user.may("admin"):
        raise HTTPException(status.HTTP_403_FORBIDDEN, "administrators only")


def _scope_visible(user: UiUser, site_scope: str | None) -> bool:
    """An unscoped object (every site) is visible to unscoped admins only."""
    allowed = user.principal.allowed_sites
    return allowed is None or (site_scope is not None and site_scope in allowed)


def _visible_accounts(session: Session, user: UiUser) -> list[AccountView]:
    return [a for a in list_accounts(session) if _scope_visible(user, a.site_scope)]


def _account_in_scope(session: Session, user: UiUser, username: str, form: str) -> AccountView:
    for account in _visible_accounts(session, user):
        if account.username == username:
            return account
    raise Refused("unknown", form)


def _site_ids(choices: Sequence[SiteChoice]) -> set[str]:
    return {choice.id for choice in choices}


def _chosen_site(session: Session, user: UiUser, value: str, form: str) -> str | None:
    """Only a site the form offered: one answer for unknown and out-of-scope sites."""
    site = value.strip() or None
    if site is None:
        if user.principal.allowed_sites is not None:
            raise Refused("grant", form)
        return None
    if site not in _site_ids(site_choices(session, user)):
        raise Refused("site", form)
    return site


def _label(value: str, form: str, *, limit: int = MAX_NAME, reason: str = "name") -> str:
    text = value.strip()
    if len(text) > limit or _CONTROL.search(text) or (reason == "name" and not text):
        raise Refused(reason, form)
    return text


def _whole_number(value: str, low: int, high: int, reason: str, form: str) -> int:
    text = value.strip()
    if not text.isdecimal() or not low <= int(text) <= high:
        raise Refused(reason, form)
    return int(text)


def _is_session(token: ApiToken) -> bool:
    return token.name.startswith(UI_SESSION_PREFIX)


def _audit_visible(user: UiUser, event: AuditEvent, account_scopes: dict[str, str | None]) -> bool:
    """A scoped admin reads the rows about its own subtree: the site the row names, or for
    an account the account's scope."""
    if user.principal.allowed_sites is None:
        return True
    detail = event.detail or {}
    site = detail.get("site_scope", detail.get("site_id"))
    if site is None and event.target.startswith("user:"):
        site = account_scopes.get(event.target.removeprefix("user:"))
    return isinstance(site, str) and site in user.principal.allowed_sites


def _audit_rows(session: Session, user: UiUser) -> list[AuditEvent]:
    scan = AUDIT_ROWS if user.principal.allowed_sites is None else AUDIT_SCAN
    rows = session.scalars(select(AuditEvent).order_by(AuditEvent.id.desc()).limit(scan)).all()
    scopes = {a.username: a.site_scope for a in list_accounts(session)}
    return [row for row in rows if _audit_visible(user, row, scopes)][:AUDIT_ROWS]


def _enrolment_configured(context: ApiContext) -> bool:
    service = enrolment_service(context)
    return service.broker_dir is not None and bool(service.agent_broker_url)


def _wall_url(request: Request, context: ApiContext, secret: str) -> str:
    base = (context.settings.public_url or str(request.base_url)).rstrip("/")
    return f"{base}/ui/wall?token={quote(secret, safe='')}"


def _page(
    request: Request,
    session: Session,
    context: ApiContext,
    user: UiUser,
    *,
    error: Refused | None = None,
    form: dict[str, str] | None = None,
    secret: NewSecret | None = None,
    status_code: int = 200,
) -> HTMLResponse:
    tokens = [t for t in list_tokens(session, user.principal) if t.revoked_at is None]
    sites = site_choices(session, user)
    site_names = {choice.id: choice.name for choice in sites}
    done = request.query_params.get("done", "")
    values: dict[str, Any] = {
        "nav": "admin",
        "accounts": _visible_accounts(session, user),
        "api_tokens": [t for t in tokens if not _is_session(t) and not is_display_token(t)],
        "display_tokens": [t for t in tokens if is_display_token(t)],
        "display_prefix": DISPLAY_PREFIX,
        "configured_display": context.settings.display_token is not None
        and user.principal.allowed_sites is None,
        "enrolment_tokens": [
            row
            for row in list_enrolment_tokens(session, user.principal)
            if row["state"] != "revoked"
        ],
        "enrolment_configured": _enrolment_configured(context),
        "audit": _audit_rows(session, user),
        "actions": ACTIONS,
        "token_states": TOKEN_STATE,
        "sites": sites,
        "site_names": site_names,
        "may_grant_all": user.principal.allowed_sites is None,
        "roles": ROLES,
        "account_languages": LANGUAGES,
        "me": user.display_name if user.session_token else None,
        "min_password": MIN_PASSWORD_LENGTH,
        "max_hours": MAX_ENROLMENT_HOURS,
        "max_uses": MAX_ENROLMENT_USES,
        "error": error,
        "error_text": ERRORS.get(error.reason, ERRORS["invalid"]) if error else None,
        "error_count": {"password": MIN_PASSWORD_LENGTH, "hours": MAX_ENROLMENT_HOURS}.get(
            error.reason if error else "", MAX_ENROLMENT_USES
        ),
        "form": form or {},
        "secret": secret,
        "done": DONE.get(done),
        "done_name": request.query_params.get("name", ""),
    }
    return render(request, "admin.html", values, user=user, status_code=status_code)


def _refused(
    request: Request,
    session: Session,
    context: ApiContext,
    user: UiUser,
    error: Refused,
    form: dict[str, str],
) -> HTMLResponse:
    session.rollback()
    code = ERROR_STATUS.get(error.reason, status.HTTP_422_UNPROCESSABLE_CONTENT)
    return _page(request, session, context, user, error=error, form=form, status_code=code)


def _done(action: str, name: str) -> RedirectResponse:
    return RedirectResponse(
        f"/ui/admin?done={quote(action)}&name={quote(name, safe='')}", status_code=303
    )


@router.get("", response_class=HTMLResponse)
def admin_page(
    request: Request, session: DbSession, context: Context, user: PageUser
) -> HTMLResponse:
    if not user.may("admin"):
        return render(request, "forbidden.html", {"nav": "admin"}, user=user, status_code=403)
    return _page(request, session, context, user)


# --- accounts --------------------------------------------------------------------------------


@router.post("/users", response_model=None)
def add_user(
    request: Request,
    session: DbSession,
    context: Context,
    user: PageUser,
    csrf_token: Annotated[str, Form()] = "",
    username: Annotated[str, Form()] = "",
    role: Annotated[str, Form()] = "",
    site_scope: Annotated[str, Form()] = "",
    language: Annotated[str, Form()] = "vi",
    password: Annotated[str, Form()] = "",
) -> Response:
    check_csrf(request, user, csrf_token)
    _admin(user)
    form = {
        "form": "user",
        "username": username,
        "role": role,
        "site_scope": site_scope,
        "language": language,
    }
    name = username.strip()
    try:
        if role not in ROLES:
            raise Refused("role", "user")
        site = _chosen_site(session, user, site_scope, "user")
        add_account(
            session,
            username=name,
            password=password,
            role=role,
            site_scope=site,
            language=language,
            actor=user.principal.actor,
            granted_by=user.principal.grantor,
        )
    except AccountError as exc:
        return _refused(request, session, context, user, Refused(exc.reason, "user"), form)
    except Refused as exc:
        return _refused(request, session, context, user, exc, form)
    session.commit()
    return _done("user.add", name)


@router.post("/users/{action}", response_model=None)
def change_user(
    action: str,
    request: Request,
    session: DbSession,
    context: Context,
    user: PageUser,
    csrf_token: Annotated[str, Form()] = "",
    username: Annotated[str, Form()] = "",
    password: Annotated[str, Form()] = "",
) -> Response:
    check_csrf(request, user, csrf_token)
    _admin(user)
    if action not in ("disable", "enable", "password"):
        raise HTTPException(status.HTTP_404_NOT_FOUND, "unknown action")
    form = {"form": f"user-{action}", "username": username}
    try:
        account = _account_in_scope(session, user, username, f"user-{action}")
        if action == "password":
            change_password(session, account.username, password, actor=user.principal.actor)
        else:
            disabled = action == "disable"
            if disabled and user.session_token and account.username == user.display_name:
                raise Refused("self", "user-disable")
            set_disabled(session, account.username, disabled=disabled, actor=user.principal.actor)
    except AccountError as exc:
        return _refused(request, session, context, user, Refused(exc.reason, form["form"]), form)
    except Refused as exc:
        return _refused(request, session, context, user, exc, form)
    session.commit()
    return _done(f"user.{action}", account.username)


# --- API and display tokens -----------------------------------------------------------------


@router.post("/tokens", response_model=None)
def create_token(
    request: Request,
    session: DbSession,
    context: Context,
    user: PageUser,
    csrf_token: Annotated[str, Form()] = "",
    kind: Annotated[str, Form()] = "api",
    name: Annotated[str, Form()] = "",
    role: Annotated[str, Form()] = "viewer",
    site_scope: Annotated[str, Form()] = "",
) -> Response:
    """An API token (any role up to the admin's) or a display token (viewer, for a wall)."""
    check_csrf(request, user, csrf_token)
    _admin(user)
    display = kind == "display"
    form_name = "display" if display else "api"
    form = {"form": form_name, "name": name, "role": role, "site_scope": site_scope}
    try:
        label = _label(name, form_name)
        token_role = "viewer" if display else role
        if token_role not in ROLES:
            raise Refused("role", form_name)
        site = _chosen_site(session, user, site_scope, form_name)
        stored_name = f"{DISPLAY_PREFIX}{label}" if display else label
        if not display and (stored_name.startswith((UI_SESSION_PREFIX, DISPLAY_PREFIX))):
            raise Refused("name", form_name)
        try:
            _, plain = grant_token(
                session, user.principal, name=stored_name, role=token_role, site_scope=site
            )
        except GrantRefused:
            raise Refused("grant", form_name) from None
        except TokenNameInUse:
            raise Refused("taken", form_name) from None
    except Refused as exc:
        return _refused(request, session, context, user, exc, form)
    session.commit()
    secret = NewSecret(
        form_name,
        label,
        plain,
        _wall_url(request, context, plain) if display else None,
    )
    return _page(request, session, context, user, secret=secret, status_code=201)


@router.post("/tokens/{token_id}/revoke", response_model=None)
def revoke_token(
    token_id: RowId,
    request: Request,
    session: DbSession,
    context: Context,
    user: PageUser,
    csrf_token: Annotated[str, Form()] = "",
) -> Response:
    check_csrf(request, user, csrf_token)
    _admin(user)
    token = revoke_visible_token(session, user.principal, token_id)
    if token is None:
        return _refused(request, session, context, user, Refused("token", "revoke"), {})
    session.commit()
    return _done("token.revoke", token.name.removeprefix(DISPLAY_PREFIX))


# --- enrolment tokens ----------------------------------------------------------------------


@router.post("/enrolment-tokens", response_model=None)
def create_enrolment_token(
    request: Request,
    session: DbSession,
    context: Context,
    user: PageUser,
    csrf_token: Annotated[str, Form()] = "",
    site_id: Annotated[str, Form()] = "",
    hours: Annotated[str, Form()] = "72",
    max_uses: Annotated[str, Form()] = "100",
    note: Annotated[str, Form()] = "",
) -> Response:
    """A token for one school's PCs (the same service as ``POST /api/v1/enrolment-tokens``)."""
    check_csrf(request, user, csrf_token)
    _admin(user)
    form = {
        "form": "enrolment",
        "site_id": site_id,
        "hours": hours,
        "max_uses": max_uses,
        "note": note,
    }
    try:
        if not _enrolment_configured(context):
            raise Refused("enrolment", "enrolment")
        site = _chosen_site(session, user, site_id, "enrolment")
        if site is None:
            raise Refused("site", "enrolment")
        lifetime = _whole_number(hours, 1, MAX_ENROLMENT_HOURS, "hours", "enrolment")
        uses = _whole_number(max_uses, 1, MAX_ENROLMENT_USES, "uses", "enrolment")
        text = _label(note, "enrolment", limit=MAX_NOTE, reason="note")
        try:
            created = issue_enrolment_token(
                context,
                session,
                user.principal,
                site_id=site,
                lifetime=timedelta(hours=lifetime),
                max_uses=uses,
                note=text,
            )
        except EnrolmentRefused:
            raise Refused("enrolment", "enrolment") from None
        except (EnrolmentNotFound, ValueError):
            raise Refused("site", "enrolment") from None
    except Refused as exc:
        return _refused(request, session, context, user, exc, form)
    session.commit()
    secret = NewSecret("enrolment", _site_name(session, user, site), created.token)
    return _page(request, session, context, user, secret=secret, status_code=201)


def _site_name(session: Session, user: UiUser, site_id: str) -> str:
    return next((c.name for c in site_choices(session, user) if c.id == site_id), site_id)


@router.post("/enrolment-tokens/{token_id}/revoke", response_model=None)
def revoke_enrolment_token(
    token_id: RowId,
    request: Request,
    session: DbSession,
    context: Context,
    user: PageUser,
    csrf_token: Annotated[str, Form()] = "",
) -> Response:
    check_csrf(request, user, csrf_token)
    _admin(user)
    existing = session.get(EnrolmentToken, token_id)
    if existing is None or not user.principal.can_see(existing.site_id):
        return _refused(request, session, context, user, Refused("token", "revoke"), {})
    row = withdraw_enrolment_token(context, session, user.principal, token_id)
    session.commit()
    return _done("enrolment_token.revoke", f"#{row.id}")
