"""What each broker account may do, written as Mosquitto's password and ACL files.

Every device gets explicit lines naming its own topics (no ``pattern`` with ``%u``): the file
then reads as an audit record — who may write where — and a device whose site changes is
moved by regenerating, not by trusting the client's username to carry the site.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final, Literal

from campuswatch.wire.topics import KINDS, PREFIX, VERSION, build_topic

Role = Literal["device", "scanner", "collector"]
ROLES: Final[tuple[Role, ...]] = ("device", "scanner", "collector")

# A device may publish every kind under its own id except ``cmd``: commands come only from
# the collector, so a compromised device cannot order its neighbours (or itself) around.
DEVICE_KINDS: Final = tuple(kind for kind in KINDS if kind != "cmd")
# A network scanner needs availability, birth, its findings, and events about its own runs.
SCANNER_KINDS: Final = ("state", "hello", "discovery", "health", "event")


@dataclass(frozen=True, slots=True)
class BrokerAccount:
    """One login on the broker. Devices and scanners are pinned to ``cw/v1/{site}/{id}``."""

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
