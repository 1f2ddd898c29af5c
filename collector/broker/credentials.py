"""The broker's account store, kept in step with enrolment and revocation.

``credentials.json`` (mode 0600) holds every account's *hash*, never a password. Each change
rewrites Mosquitto's ``passwd`` and ``acl`` files from it — each written to a temporary file
and renamed over the old one, so Mosquitto never reads half a file — and then sends SIGHUP,
which makes Mosquitto re-read both and drop connected clients that no longer pass.
The password file is replaced before the ACL: in between, a new device may log in but do
nothing, and a revoked device can no longer log in, so no order of events grants too much.
"""

from __future__ import annotations

import builtins
import contextlib
import fcntl
import grp
import json
import logging
import os
import signal
import tempfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from campuswatch.collector.broker.acl import (
    ROLES,
    BrokerAccount,
    Role,
    render_acl,
    render_password_file,
)
from campuswatch.collector.broker.passwords import hash_password, new_password, verify_password
from campuswatch.wire.topics import is_identifier

log = logging.getLogger(__name__)

STORE_FILE: Final = "credentials.json"
PASSWORD_FILE: Final = "passwd"
ACL_FILE: Final = "acl"
LOCK_FILE: Final = ".credentials.lock"


class CredentialsError(ValueError):
    """A request the store refuses (bad id, name clash, unreadable store)."""


@dataclass(frozen=True, slots=True)
class RevokedAccount:
    username: str
    role: Role
    site: str | None
    revoked_at: str


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def write_atomically(path: Path, text: str, *, mode: int, group: str | None = None) -> None:
    """Replace ``path`` in one rename so readers see the old or the new file, never half."""
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as stream:
            stream.write(text)
            stream.flush()
            os.fsync(stream.fileno())
        os.chmod(temporary, mode)
        gid = _group_id(group)
        if gid is not None:
            os.chown(temporary, -1, gid)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise


def _group_id(group: str | None) -> int | None:
    # Mosquitto drops root for its own user and re-reads these files as that user on SIGHUP.
    if group is None or os.geteuid() != 0:
        return None
    try:
        return grp.getgrnam(group).gr_gid
    except KeyError:
        return None


class BrokerCredentials:
    """Accounts of one broker: add, rotate, revoke, list; every change reloads Mosquitto."""

    def __init__(
        self,
        directory: Path,
        *,
        pid_file: Path | None = None,
        pid: int | None = None,
        file_group: str | None = None,
    ) -> None:
        self.directory = directory
        self.store_path = directory / STORE_FILE
        self.password_path = directory / PASSWORD_FILE
        self.acl_path = directory / ACL_FILE
        settings = self._load().get("settings", {})
        self.pid_file = pid_file or _optional_path(settings.get("pid_file"))
        self.pid = pid
        self.file_group = file_group if file_group is not None else settings.get("file_group")

    # --- public API --------------------------------------------------------------------

    def add_device(self, site: str, device_id: str, *, role: Role = "device") -> str:
        """Create or re-enrol a device (new password, possibly new site); return the password.

        The password is returned once and never stored; losing it means enrolling again.
        """
        if role not in ("device", "scanner"):
            raise CredentialsError(f"role {role!r} is not a device role")
        for label, value in (("site", site), ("device id", device_id)):
            if not is_identifier(value):
                raise CredentialsError(f"{label} {value[:80]!r} is not a valid identifier")
        password = new_password()
        with self._locked() as data:
            accounts = _accounts(data)
            existing = accounts.get(device_id)
            if existing is not None and existing.role == "collector":
                raise CredentialsError(f"{device_id!r} is the name of a service account")
            accounts[device_id] = BrokerAccount(
                username=device_id,
                role=role,
                password_hash=hash_password(password),
                site=site,
                device_id=device_id,
                created_at=_now(),
            )
            self._save(data, accounts)
        self.reload()
        return password

    def add_scanner(self, site: str, device_id: str) -> str:
        return self.add_device(site, device_id, role="scanner")

    def ensure_service_account(self, username: str, password: str | None = None) -> str:
        """The collector's login: kept if ``password`` still matches, otherwise (re)created."""
        if not is_identifier(username):
            raise CredentialsError(f"user name {username[:80]!r} is not a valid identifier")
        with self._locked() as data:
            accounts = _accounts(data)
            existing = accounts.get(username)
            if existing is not None and existing.role != "collector":
                raise CredentialsError(f"{username!r} is already a {existing.role} account")
            if (
                existing is not None
                and password is not None
                and verify_password(password, existing.password_hash)
            ):
                self._save(data, accounts)
                return password
            password = new_password()
            accounts[username] = BrokerAccount(
                username, "collector", hash_password(password), created_at=_now()
            )
            self._save(data, accounts)
        self.reload()
        return password

    def revoke_device(self, device_id: str) -> bool:
        """Remove a device's login; False if there was none. Takes effect at once (SIGHUP)."""
        with self._locked() as data:
            accounts = _accounts(data)
            account = accounts.get(device_id)
            if account is None or account.role == "collector":
                return False
            del accounts[device_id]
            revoked = data.setdefault("revoked", [])
            revoked.append(asdict(RevokedAccount(device_id, account.role, account.site, _now())))
            self._save(data, accounts)
        self.reload()
        return True

    def revoked(self) -> builtins.list[RevokedAccount]:
        entries = self._load().get("revoked", [])
        return [RevokedAccount(**entry) for entry in entries if isinstance(entry, dict)]

    def write_files(self) -> None:
        """Regenerate ``passwd`` and ``acl`` from the store (no reload)."""
        with self._locked() as data:
            self._save(data, _accounts(data))

    def remember_settings(self, *, pid_file: Path | None, file_group: str | None) -> None:
        """Record how to reach this broker so later callers need only the directory."""
        self.pid_file, self.file_group = pid_file, file_group
        with self._locked() as data:
            data["settings"] = {
                "pid_file": str(pid_file) if pid_file else None,
                "file_group": file_group,
            }
            self._save(data, _accounts(data))

    def reload(self) -> bool:
        """SIGHUP Mosquitto so it re-reads passwd and acl; False if it is not running."""
        pid = self.pid if self.pid is not None else self._pid_from_file()
        if pid is None:
            return False
        try:
            os.kill(pid, signal.SIGHUP)
        except ProcessLookupError:
            log.warning("broker pid %d is not running; files updated, no reload sent", pid)
            return False
        except PermissionError:
            log.warning("not allowed to signal broker pid %d; reload it yourself", pid)
            return False
        return True

    def list(self) -> builtins.list[BrokerAccount]:
        """Every current account, service accounts first."""
        accounts = _accounts(self._load()).values()
        return sorted(accounts, key=lambda a: (a.role != "collector", a.site or "", a.username))

    # --- internals ---------------------------------------------------------------------

    def _pid_from_file(self) -> int | None:
        if self.pid_file is None:
            return None
        try:
            text = self.pid_file.read_text(encoding="ascii").strip()
        except (OSError, UnicodeDecodeError):
            return None
        return int(text) if text.isdigit() and int(text) > 1 else None

    def _load(self) -> dict[str, Any]:
        try:
            text = self.store_path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return {"version": 1, "accounts": [], "revoked": []}
        except OSError as exc:
            raise CredentialsError(f"cannot read {self.store_path}: {exc.strerror}") from None
        try:
            data = json.loads(text)
        except ValueError:
            raise CredentialsError(f"{self.store_path} is not valid JSON") from None
        if not isinstance(data, dict) or not isinstance(data.get("accounts"), builtins.list):
            raise CredentialsError(f"{self.store_path} is not a CampusWatch credential store")
        return data

    @contextlib.contextmanager
    def _locked(self) -> Iterator[dict[str, Any]]:
        """Serialise read-modify-write between the collector's API and the command line."""
        self.directory.mkdir(parents=True, exist_ok=True)
        with (self.directory / LOCK_FILE).open("a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield self._load()
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _save(self, data: dict[str, Any], accounts: dict[str, BrokerAccount]) -> None:
        data["version"] = 1
        data["accounts"] = [asdict(account) for account in accounts.values()]
        group = self.file_group
        write_atomically(self.store_path, json.dumps(data, indent=2) + "\n", mode=0o600)
        write_atomically(
            self.password_path, render_password_file(accounts.values()), mode=0o640, group=group
        )
        write_atomically(self.acl_path, render_acl(accounts.values()), mode=0o640, group=group)


def _accounts(data: dict[str, Any]) -> dict[str, BrokerAccount]:
    accounts: dict[str, BrokerAccount] = {}
    for entry in data.get("accounts", []):
        try:
            if not isinstance(entry, dict) or entry.get("role") not in ROLES:
                raise TypeError("no valid role")
            account = BrokerAccount(**entry)
        except TypeError as exc:
            # A hand-damaged entry must not take every other device down with it.
            log.warning("ignoring unusable entry in the credential store: %s", exc)
            continue
        accounts[account.username] = account
    return accounts


def _optional_path(value: object) -> Path | None:
    return Path(value) if isinstance(value, str) and value else None
