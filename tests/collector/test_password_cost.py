"""UI passwords are hashed at the product's cost, whatever cost the other tests use.

tests/collector/conftest.py makes hashing cheap for the rest of the suite; these tests put
the product's own cost back and pin it: scrypt n=2**14, r=8, p=1 (the OWASP floor), for
stored passwords and for the dummy hash an unknown user's password is checked against, so
a login for a name that does not exist takes as long as one for a name that does.
"""

from __future__ import annotations

import hashlib

import pytest

from campuswatch.collector.db.access import hash_password, verify_password
from campuswatch.collector.web import auth

pytestmark = pytest.mark.usefixtures("production_password_cost")


def test_a_stored_password_is_scrypt_at_the_owasp_floor() -> None:
    stored = hash_password("correct horse")
    scheme, n, r, p, salt, digest = stored.split("$")
    assert (scheme, int(n), int(r), int(p)) == ("scrypt", 2**14, 8, 1)
    assert len(bytes.fromhex(salt)) == 16 and len(bytes.fromhex(digest)) == 64
    assert verify_password("correct horse", stored)
    assert not verify_password("correct horsf", stored)


def test_an_unknown_user_is_checked_against_a_hash_of_the_same_cost() -> None:
    assert auth._DUMMY_PASSWORD_HASH.split("$")[1:4] == ["16384", "8", "1"]


def test_a_hash_made_at_another_cost_still_verifies() -> None:
    """Hashes carry their parameters: one stored at the tests' cost (or an older product
    cost) checks the same way."""
    digest = hashlib.scrypt(b"pw", salt=b"s" * 16, n=2**10, r=8, p=1)
    stored = f"scrypt${2**10}$8$1${(b's' * 16).hex()}${digest.hex()}"
    assert verify_password("pw", stored) and not verify_password("px", stored)
