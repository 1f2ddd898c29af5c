"""API tokens and UI passwords: only hashes are stored.

Tokens are long random strings, so a plain sha256 is enough to look them up; passwords
are chosen by people and get scrypt with a per-user salt.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Collection
from datetime import datetime, timedelta
from typing import Final

from sqlalchemy import select
from sqlalchemy.orm import Session

from campuswatch.collector.db.models import ROLES, ApiToken, User, utc_now

# scrypt parameters: n=2**14, r=8 needs 16 MiB and ~50 ms, the OWASP-recommended floor.
_SCRYPT_N: Final = 2**14
_SCRYPT_R: Final = 8
_SCRYPT_P: Final = 1
UI_SESSION_PREFIX: Final = "ui-session:"
UI_SESSION_LIFETIME: Final = timedelta(hours=12)
"""A web UI login's token lives this long from login, however it is presented (UI cookie,
API cookie or bearer header); the browser's cookie Max-Age is only a courtesy."""


ROLE_RANK: Final = {"admin": 2, "soc": 1, "facilities": 1, "viewer": 0}
"""admin > soc, facilities > viewer; soc and facilities are siblings, neither above the
other, so neither may grant the other's powers."""

Grantor = tuple[str, Collection[str] | None]
"""Who grants: (role, the sites it may see; None = every site)."""


class GrantRefused(ValueError):
    """A token or account wider in scope, or higher in role, than its grantor's own."""


def check_grant(
    grantor_role: str,
    grantor_sites: Collection[str] | None,
    *,
    role: str,
    site_scope: str | None,
) -> None:
    """Raise GrantRefused unless ``role`` at ``site_scope`` is within what the grantor holds.

    The role must be the grantor's own or below it; a scoped grantor's grant must be scoped
    (never None, which is "every site") to a site it can see.
    """
    if role not in ROLES or grantor_role not in ROLES:
        raise GrantRefused(f"role must be one of {', '.join(ROLES)}")
    if role != grantor_role and ROLE_RANK[role] >= ROLE_RANK[grantor_role]:
        raise GrantRefused(f"a {grantor_role} cannot grant the {role} role")
    if grantor_sites is not None and (site_scope is None or site_scope not in grantor_sites):
        raise GrantRefused("a scoped account grants only scopes inside its own")


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def create_api_token(
    session: Session,
    *,
    name: str,
    role: str,
    site_scope: str | None = None,
    granted_by: Grantor | None = None,
) -> tuple[ApiToken, str]:
    """A new token row and the plain token, which is shown once and never stored.

    ``granted_by`` is the requesting principal (role, visible sites) when a person asks for
    it; None only for the operator's own paths (CLI, start-up, UI login of a stored user).
    """
    if role not in ROLES:
        raise ValueError(f"role must be one of {', '.join(ROLES)}")
    if granted_by is not None:
        check_grant(*granted_by, role=role, site_scope=site_scope)
    plain = secrets.token_urlsafe(32)
    token = ApiToken(name=name, token_hash=hash_token(plain), role=role, site_scope=site_scope)
    session.add(token)
    session.flush()
    return token, plain


def session_expired(token: ApiToken, now: datetime | None = None) -> bool:
    """True for a UI login session older than its lifetime; API tokens do not expire."""
    if not token.name.startswith(UI_SESSION_PREFIX):
        return False
    return token.created_at <= (now or utc_now()) - UI_SESSION_LIFETIME


def find_api_token(session: Session, plain: str) -> ApiToken | None:
    """The live token matching ``plain`` (revoked and expired ones never match); stamps
    last_used_at."""
    token = session.scalar(select(ApiToken).where(ApiToken.token_hash == hash_token(plain)))
    if token is None or token.revoked_at is not None or session_expired(token):
        return None
    token.last_used_at = utc_now()
    return token


def hash_password(password: str) -> str:
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(
        password.encode("utf-8"), salt=salt, n=_SCRYPT_N, r=_SCRYPT_R, p=_SCRYPT_P
    )
    return f"scrypt${_SCRYPT_N}${_SCRYPT_R}${_SCRYPT_P}${salt.hex()}${digest.hex()}"


def verify_password(password: str, stored: str) -> bool:
    try:
        scheme, n, r, p, salt_hex, digest_hex = stored.split("$")
        if scheme != "scrypt":
            return False
        digest = hashlib.scrypt(
            password.encode("utf-8"),
            salt=bytes.fromhex(salt_hex),
            n=int(n),
            r=int(r),
            p=int(p),
            maxmem=64 * 1024 * 1024,
        )
    except ValueError:
        return False
    return hmac.compare_digest(digest.hex(), digest_hex)


def create_user(
    session: Session,
    *,
    username: str,
    password: str,
    role: str,
    site_scope: str | None = None,
    language: str = "vi",
    granted_by: Grantor | None = None,
) -> User:
    """A UI login; ``granted_by`` as for ``create_api_token``."""
    if role not in ROLES:
        raise ValueError(f"role must be one of {', '.join(ROLES)}")
    if granted_by is not None:
        check_grant(*granted_by, role=role, site_scope=site_scope)
    user = User(
        username=username,
        password_hash=hash_password(password),
        role=role,
        site_scope=site_scope,
        language=language,
    )
    session.add(user)
    session.flush()
    return user
