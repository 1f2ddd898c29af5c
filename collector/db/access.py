"""API tokens and UI passwords: only hashes are stored.

Tokens are long random strings, so a plain sha256 is enough to look them up; passwords
are chosen by people and get scrypt with a per-user salt.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
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


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def create_api_token(
    session: Session, *, name: str, role: str, site_scope: str | None = None
) -> tuple[ApiToken, str]:
    """A new token row and the plain token, which is shown once and never stored."""
    if role not in ROLES:
        raise ValueError(f"role must be one of {', '.join(ROLES)}")
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
) -> User:
    if role not in ROLES:
        raise ValueError(f"role must be one of {', '.join(ROLES)}")
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
