"""What each broker account may do, written as Mosquitto's password and ACL files.

Every device gets explicit lines naming its own topics (no ``pattern`` with ``%u``): the file
then reads as an audit record — who may write where — and a device whose site changes is
moved by regenerating, not by trusting the client's username to carry the site.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final, Literal

from campuswatch.wire.topics import KINDS, PREFIX, VERSION, build_topic, is_identifier

Role = Literal["device", "scanner", "collector", "edge"]
ROLES: Final[tuple[Role, ...]] = ("device", "scanner", "collector", "edge")
# A school's edge broker logs in to the district broker as ``edge-{site}`` (docs/broker.md).
EDGE_USER_PREFIX: Final = "edge-"

# A device may publish every kind under its own id except ``cmd``: commands come only from
# the collector, so a compromised device cannot order its neighbours (or itself) around.
DEVICE_KINDS: Final = tuple(kind for kind in KINDS if kind != "cmd")
# A network scanner needs availability, birth, its findings, and events about its own runs.
SCANNER_KINDS: Final = ("state", "hello", "discovery", "health", "event")


# Mosquitto 2.0's ``$7$`` (PBKDF2-SHA512) hash: iterations, base64 salt, base64 hash.
_HASH: Final = re.compile(r"\$7\$[1-9][0-9]{0,7}\$[A-Za-z0-9+/]+={0,2}\$[A-Za-z0-9+/]+={0,2}")
# What our ``topic`` lines may name: topic levels of identifier characters, ``+`` or ``#``.
_TOPIC_FILTER: Final = re.compile(r"[A-Za-z0-9_.:+#-]+(/[A-Za-z0-9_.:+#-]+)*")


class BrokerFileError(ValueError):
    """A password or ACL file that Mosquitto would read differently from what we meant."""


def is_password_hash(value: str) -> bool:
    return _HASH.fullmatch(value) is not None


def edge_username(site: str) -> str:
    """The district broker login of ``site``'s edge bridge; one name per school, so the ACL
    and the credential store can tell from the name alone which school a bridge speaks for."""
    return f"{EDGE_USER_PREFIX}{site}"


@dataclass(frozen=True, slots=True)
class BrokerAccount:
    """One login on the broker. Devices and scanners are pinned to ``cw/v1/{site}/{id}``; a
    school's edge bridge (role ``edge``, no device id) to ``cw/v1/{site}/+``."""

    username: str
    role: Role
    password_hash: str
    site: str | None = None
    device_id: str | None = None
    created_at: str = ""


def account_rules(account: BrokerAccount) -> list[str]:
    """The ``topic`` lines for one account (without its ``user`` line)."""
    if account.role == "collector":
        return [
            f"topic read {PREFIX}/{VERSION}/#",
            f"topic write {PREFIX}/{VERSION}/+/+/cmd",
        ]
    if account.role == "edge":
        if account.site is None or not is_identifier(account.site):
            raise ValueError(f"edge account {account.username!r} needs a site")
        # Whatever its school's devices may send, for any device of that school, and their
        # commands down the bridge. Kinds listed one by one: Mosquitto's ACL has no "except
        # cmd", and an edge that could write ``cmd`` could order its school's PCs around.
        school = f"{PREFIX}/{VERSION}/{account.site}/+"
        rules = [f"topic write {school}/{kind}" for kind in DEVICE_KINDS]
        rules.append(f"topic read {school}/cmd")
        return rules
    if account.site is None or account.device_id is None:
        raise ValueError(
            f"{account.role} account {account.username!r} needs a site and a device id"
        )
    kinds = DEVICE_KINDS if account.role == "device" else SCANNER_KINDS
    rules = [f"topic write {build_topic(account.site, account.device_id, kind)}" for kind in kinds]
    rules.append(f"topic read {build_topic(account.site, account.device_id, 'cmd')}")
    return rules


def render_acl(accounts: Iterable[BrokerAccount]) -> str:
    lines = [
        "# Written by CampusWatch (campuswatch broker); regenerated on every enrolment and",
        "# revocation, so edits here are lost. Anything not listed is denied.",
    ]
    for account in sorted(accounts, key=lambda a: (a.role, a.username)):
        where = f" at site {account.site}" if account.site else ""
        lines += ["", f"# {account.role}{where}", f"user {account.username}"]
        lines += account_rules(account)
    return "\n".join(lines) + "\n"


def render_password_file(accounts: Iterable[BrokerAccount]) -> str:
    return "".join(
        f"{account.username}:{account.password_hash}\n"
        for account in sorted(accounts, key=lambda a: a.username)
    )


def parse_password_file(text: str) -> dict[str, str]:
    """User name → hash, read back the way Mosquitto reads the file: one ``user:hash`` a line.

    Stricter than Mosquitto on purpose: anything we would not have written (a bad id, a
    duplicate user, a hash that is not ``$7$``, a missing final newline) is an error.
    """
    if text and not text.endswith("\n"):
        raise BrokerFileError("password file: the last line is cut off (no final newline)")
    users: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        username, colon, password_hash = line.partition(":")
        if not colon or not is_identifier(username) or not is_password_hash(password_hash):
            raise BrokerFileError(f"password file line {number}: not user:$7$hash: {line[:80]!r}")
        if username in users:
            raise BrokerFileError(f"password file line {number}: {username!r} appears twice")
        users[username] = password_hash
    if len(users) != text.count("\n"):
        raise BrokerFileError("password file: a line break inside a line")
    return users


def parse_acl(text: str) -> dict[str, list[str]]:
    """User name → its ``topic`` lines, read back the way Mosquitto reads the ACL file.

    Refuses what we never write and what Mosquitto would read as something else: a ``topic``
    line before any ``user`` line (Mosquitto applies it to every client), ``pattern`` lines,
    a user twice, a bad id, an access or topic filter outside our vocabulary, stray words.
    """
    if text and not text.endswith("\n"):
        raise BrokerFileError("acl: the last line is cut off (no final newline)")
    rules: dict[str, list[str]] = {}
    current: str | None = None
    for number, line in enumerate(text.split("\n")[:-1], start=1):
        if not line or line.startswith("#"):
            continue
        words = line.split(" ")
        if words[0] == "user" and len(words) == 2 and is_identifier(words[1]):
            if words[1] in rules:
                raise BrokerFileError(f"acl line {number}: user {words[1]!r} appears twice")
            current = words[1]
            rules[current] = []
        elif (
            words[0] == "topic"
            and len(words) == 3
            and words[1] in ("read", "write")
            and _TOPIC_FILTER.fullmatch(words[2])
        ):
            if current is None:
                raise BrokerFileError(f"acl line {number}: a topic line outside a user block")
            rules[current].append(line)
        else:
            raise BrokerFileError(f"acl line {number}: not a line we write: {line[:80]!r}")
    return rules
