"""Mosquitto's password-file hash (``$7$``: PBKDF2-HMAC-SHA512), made without ``mosquitto_passwd``.

Hashing in-process keeps a revocation of one device from spawning a process per device, and
lets the collector host the credential store without Mosquitto's tools installed. The format
is Mosquitto 2.0's: ``$7$<iterations>$<base64 salt>$<base64 hash>``; tests check the broker
accepts it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
from typing import Final

# Mosquitto's own default. The passwords we issue are 32 random bytes, so a slow hash adds no
# protection against guessing, while every device (re)connect pays for it on the broker.
ITERATIONS: Final = 101
SALT_BYTES: Final = 12
PASSWORD_BYTES: Final = 32


def new_password() -> str:
    """A random password that survives URLs, TOML and shell quoting unchanged."""
    return secrets.token_urlsafe(PASSWORD_BYTES)


def hash_password(password: str, *, salt: bytes | None = None, iterations: int = ITERATIONS) -> str:
    salt = secrets.token_bytes(SALT_BYTES) if salt is None else salt
    digest = hashlib.pbkdf2_hmac("sha512", password.encode("utf-8"), salt, iterations)
    return (
        f"$7${iterations}${base64.b64encode(salt).decode('ascii')}"
        f"${base64.b64encode(digest).decode('ascii')}"
    )


def verify_password(password: str, stored_hash: str) -> bool:
    """True when ``password`` matches a ``$7$`` hash; any malformed hash is simply False."""
    parts = stored_hash.split("$")
    if len(parts) != 5 or parts[0] != "" or parts[1] != "7":
        return False
    try:
        iterations = int(parts[2])
        salt = base64.b64decode(parts[3], validate=True)
        expected = base64.b64decode(parts[4], validate=True)
    except (ValueError, binascii.Error):
        return False
    if not 1 <= iterations <= 10_000_000:
        return False
    digest = hashlib.pbkdf2_hmac("sha512", password.encode("utf-8"), salt, iterations)
    return hmac.compare_digest(digest, expected)
