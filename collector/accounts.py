"""User accounts of the web UI: create, list, disable, enable, change password — audited.

One module for every way an account changes (the ``campuswatch user`` commands and the web
UI's admin page), so the rules hold everywhere: names matched whole, a role from the
list, a scope that exists, a password long enough, live UI sessions ended when an account
is disabled or its password changes, and an ``audit_events`` row in the same transaction.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Final

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from campuswatch.collector.db.access import (
    UI_SESSION_PREFIX,
    Grantor,
    GrantRefused,
    check_grant,
    create_user,
    hash_password,
)
from campuswatch.collector.db.models import ROLES, ApiToken, AuditEvent, Site, User, utc_now

MIN_PASSWORD_LENGTH: Final = 12
"""NIST SP 800-63B asks for at least 8; a security product's staff accounts get 12."""
_USERNAME: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}")
LANGUAGES: Final = ("vi", "en")


class AccountError(ValueError):
    """A refused account change; the message is one line for a person, ``reason`` a code a
    page can say in the reader's language."""

    def __init__(self, message: str, reason: str = "invalid") -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class AccountView:
    username: str
    role: str
    site_scope: str | None
    language: str
    disabled: bool
    created_at: str


def record_audit(
    session: Session, *, actor: str, action: str, target: str, **detail: Any
) -> AuditEvent:
    """An audit row in the caller's transaction (never a secret in ``detail``)."""
    event = AuditEvent(actor=actor, action=action, target=target, detail=detail)
    session.add(event)
    return event


def check_password(password: str) -> None:
    if len(password) < MIN_PASSWORD_LENGTH:
        raise AccountError(
            f"a password needs at least {MIN_PASSWORD_LENGTH} characters", "password"
        )
    if "\x00" in password:
        raise AccountError("a password must not contain NUL characters", "password")


def add_account(
    session: Session,
    *,
    username: str,
    password: str,
    role: str,
    site_scope: str | None,
    language: str,
    actor: str,
    granted_by: Grantor | None = None,
) -> User:
    """``granted_by``: the admin's role and sites when a person grants it (the admin page);
    the account is then no higher and no wider than theirs. None on the server's command
    line, which holds the register anyway."""
    if not _USERNAME.fullmatch(username):
        raise AccountError(
            "a user name is 1-64 letters, digits or . _ @ - and starts with a letter or digit",
            "username",
        )
    if role not in ROLES:
        raise AccountError(f"role must be one of {', '.join(ROLES)}", "role")
    if language not in LANGUAGES:
        raise AccountError(f"language must be one of {', '.join(LANGUAGES)}", "language")
    if granted_by is not None:
        # Before the site is looked up: a scoped admin learns nothing about other subtrees.
        try:
            check_grant(*granted_by, role=role, site_scope=site_scope)
        except GrantRefused as exc:
            raise AccountError(str(exc), "grant") from None
    if site_scope is not None and session.get(Site, site_scope) is None:
        raise AccountError(f"site {site_scope!r} does not exist (create it first)", "site")
    if session.scalar(select(User.id).where(User.username == username)) is not None:
        raise AccountError(f"user {username!r} already exists", "exists")
    check_password(password)
    user = create_user(
        session,
        username=username,
        password=password,
        role=role,
        site_scope=site_scope,
        language=language,
    )
    record_audit(
        session,
        actor=actor,
        action="user.add",
        target=f"user:{username}",
        role=role,
        site_scope=site_scope,
    )
    return user


def list_accounts(session: Session) -> list[AccountView]:
    return [
        AccountView(
            user.username,
            user.role,
            user.site_scope,
            user.language,
            user.disabled,
            user.created_at.isoformat(timespec="seconds"),
        )
        for user in session.scalars(select(User).order_by(User.username))
    ]


def _existing(session: Session, username: str) -> User:
    user = session.scalar(select(User).where(User.username == username))
    if user is None:
        raise AccountError(f"no user {username!r}", "unknown")
    return user


def end_sessions(session: Session, username: str) -> int:
    """Revoke the account's live UI sessions; how many there were."""
    result = session.execute(
        update(ApiToken)
        .where(ApiToken.name == f"{UI_SESSION_PREFIX}{username}", ApiToken.revoked_at.is_(None))
        .values(revoked_at=utc_now())
    )
    return int(getattr(result, "rowcount", 0) or 0)


def set_disabled(session: Session, username: str, *, disabled: bool, actor: str) -> User:
    user = _existing(session, username)
    user.disabled = disabled
    ended = end_sessions(session, username) if disabled else 0
    record_audit(
        session,
        actor=actor,
        action="user.disable" if disabled else "user.enable",
        target=f"user:{username}",
        sessions_ended=ended,
    )
    return user


def change_password(session: Session, username: str, password: str, *, actor: str) -> User:
    user = _existing(session, username)
    check_password(password)
    user.password_hash = hash_password(password)
    ended = end_sessions(session, username)
    record_audit(
        session,
        actor=actor,
        action="user.password",
        target=f"user:{username}",
        sessions_ended=ended,
    )
    return user
