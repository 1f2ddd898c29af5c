"""The broker's account store, kept in step with enrolment and revocation.

``credentials.json`` (mode 0600) holds every account's *hash*, never a password. Each change
rewrites Mosquitto's ``passwd`` and ``acl`` files from it — each written to a temporary file
and renamed over the old one, so Mosquitto never reads half a file — and then sends SIGHUP,
which makes Mosquitto re-read both and drop connected clients that no longer pass.

Both files are parsed back before they replace anything: Mosquitto that meets a line it
cannot parse on SIGHUP keeps running *without an ACL*, and refuses to start after a restart.
A store entry that is not a valid account (a hand edit, or an id such as "evil\n" that an
older version let through) is left out of the files and logged; files that do not read back
as exactly the accounts meant are never installed, and Mosquitto is not signalled.
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
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final

from campuswatch.collector.broker.acl import (
    ROLES,
    BrokerAccount,
    BrokerFileError,
    Role,
    account_rules,
    edge_username,
    is_password_hash,
    parse_acl,
    parse_password_file,
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


class DeviceRevokedError(CredentialsError):
    """The id was revoked and no administrator has reinstated it."""


class ReenrolmentRefusedError(CredentialsError):
    """The id has a login (or an enrolment) and the request neither proves it holds that
    login nor has an administrator's approval for this site."""


@dataclass(frozen=True, slots=True)
class RevokedAccount:
    username: str
    role: Role
    site: str | None
    revoked_at: str
    reinstated_at: str | None = None
    reinstated_by: str | None = None


@dataclass(frozen=True, slots=True)
class ReenrolmentApproval:
    """An administrator's leave for one enrolment of an existing id, into ``site``."""

    device_id: str
    site: str
    approved_by: str
    approved_at: str
    expires_at: str

    def is_valid(self, now: datetime) -> bool:
        try:
            return datetime.fromisoformat(self.expires_at) > now
        except ValueError:
            return False


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def write_atomically(path: Path, text: str, *, mode: int, group: str | None = None) -> None:
    """Replace ``path`` in one rename so readers see the old or the new file, never half.

    The mode is set on the open descriptor before the first byte, whatever the umask, and
    the rename is made durable (the folder is fsynced) before this returns.
    """
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(handle, mode)
        gid = _group_id(group)
        if gid is not None:
            os.fchown(handle, -1, gid)
        with os.fdopen(handle, "w", encoding="utf-8") as stream:
            stream.write(text)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
    _fsync_directory(path.parent)


def _fsync_directory(directory: Path) -> None:
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


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
        """An administrator's (re)issue of a device login, possibly at a new site; returns the
        password. A revoked id is refused until ``reinstate_device``.

        The password is returned once and never stored; losing it means enrolling again.
        """

        def admit(data: dict[str, Any], existing: BrokerAccount | None) -> None:
            _refuse_if_revoked(data, device_id)

        return self._issue(site, device_id, role, admit)

    def enrol_device(self, site: str, device_id: str, *, proof: str | None, enrolled: bool) -> str:
        """Issue a login to an enrolling device without letting it take over another's.

        A new id gets one. An id that already has a login — or an enrolment record
        (``enrolled``) — gets a new one only if ``proof`` is its current password and the site
        stays the same, or if an administrator approved one re-enrolment into ``site``
        (``approve_reenrolment``, used up here). A revoked id is refused. All of it is decided
        under the store's lock, so two requests cannot both pass on the same old login.
        """

        def admit(data: dict[str, Any], existing: BrokerAccount | None) -> None:
            _refuse_if_revoked(data, device_id)
            approvals: dict[str, Any] = data.setdefault("approvals", {})
            approval = _approval(approvals.get(device_id), device_id)
            if approval is not None and not approval.is_valid(datetime.now(UTC)):
                approval = None
            if approval is not None and approval.site == site:
                del approvals[device_id]  # one approval, one enrolment
                log.info("re-enrolment of %s approved by %s used", device_id, approval.approved_by)
                return
            if existing is None and not enrolled:
                return  # a new device
            holds_login = (
                existing is not None
                and proof is not None
                and verify_password(proof, existing.password_hash)
            )
            if holds_login and existing is not None and existing.site == site:
                return
            where = existing.site if existing is not None else None
            if holds_login:
                why = f"it belongs to site {where}, and moving it to {site} needs"
            elif proof is not None:
                why = "the login it presented is not its current one; it needs"
            else:
                why = "re-enrolling it needs its current broker login (the agent sends it) or"
            raise ReenrolmentRefusedError(
                f"device id {device_id} is already enrolled; {why} an administrator's approval "
                f"(POST /api/v1/devices/{device_id}/approve-reenrolment)"
            )

        return self._issue(site, device_id, "device", admit)

    def approve_reenrolment(
        self, device_id: str, site: str, *, by: str, lifetime: timedelta
    ) -> ReenrolmentApproval:
        """Allow one enrolment of ``device_id`` into ``site`` within ``lifetime``."""
        for label, value in (("site", site), ("device id", device_id)):
            if not is_identifier(value):
                raise CredentialsError(f"{label} {value[:80]!r} is not a valid identifier")
        now = datetime.now(UTC)
        approval = ReenrolmentApproval(
            device_id=device_id,
            site=site,
            approved_by=by,
            approved_at=now.isoformat(timespec="seconds"),
            expires_at=(now + lifetime).isoformat(timespec="seconds"),
        )
        with self._locked() as data:
            data.setdefault("approvals", {})[device_id] = asdict(approval)
            self._save(data, _accounts(data))
        log.warning("re-enrolment of %s into %s approved by %s", device_id, site, by)
        return approval

    def approval(self, device_id: str) -> ReenrolmentApproval | None:
        """The pending, unexpired approval for ``device_id``, if any."""
        approvals = self._load().get("approvals")
        entry = approvals.get(device_id) if isinstance(approvals, dict) else None
        approval = _approval(entry, device_id)
        return approval if approval and approval.is_valid(datetime.now(UTC)) else None

    def _issue(
        self,
        site: str,
        device_id: str,
        role: Role,
        admit: Callable[[dict[str, Any], BrokerAccount | None], None],
    ) -> str:
        if role not in ("device", "scanner"):
            raise CredentialsError(f"role {role!r} is not a device role")
        for label, value in (("site", site), ("device id", device_id)):
            if not is_identifier(value):
                raise CredentialsError(f"{label} {value[:80]!r} is not a valid identifier")
        password = new_password()
        with self._locked() as data:
            accounts = _accounts(data)
            existing = accounts.get(device_id)
            if existing is not None and existing.role in ("collector", "edge"):
                raise CredentialsError(f"{device_id!r} is the name of a {existing.role} account")
            only_site = data.get("settings", {}).get("only_site")
            if only_site is not None and site != only_site:
                # A school's edge broker carries its own school's devices and no others: the
                # district's ACL would refuse their messages anyway, silently.
                raise CredentialsError(
                    f"this broker is the edge of site {only_site}; it has no logins for {site}"
                )
            admit(data, existing)
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

    def add_edge(self, site: str) -> tuple[str, str]:
        """A (new) login for ``site``'s edge bridge on this, the district's, broker; returns
        (user name, password). Re-running it rotates the password (the old edge is cut off
        at the reload). A revoked edge is refused until reinstated, as a device is."""
        if not is_identifier(site):
            raise CredentialsError(f"site {site[:80]!r} is not a valid identifier")
        username = edge_username(site)
        if not is_identifier(username):
            raise CredentialsError(f"site {site[:40]!r} is too long for an edge login {username!r}")
        password = new_password()
        with self._locked() as data:
            _refuse_if_revoked(data, username)
            accounts = _accounts(data)
            existing = accounts.get(username)
            if existing is not None and existing.role != "edge":
                raise CredentialsError(f"{username!r} is already a {existing.role} account")
            accounts[username] = BrokerAccount(
                username=username,
                role="edge",
                password_hash=hash_password(password),
                site=site,
                created_at=_now(),
            )
            self._save(data, accounts)
        self.reload()
        return username, password

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
        """Every revocation on record, reinstated ones included (``reinstated_at``)."""
        return _revocations(self._load())

    def revocation(self, device_id: str) -> RevokedAccount | None:
        """The revocation still in force for ``device_id``, if any."""
        return _in_force(self._load(), device_id)

    def reinstate_device(self, device_id: str, *, by: str) -> RevokedAccount | None:
        """Lift the revocation of ``device_id`` (its login is not restored: it must enrol
        again); returns the revocation lifted, None if there was none."""
        with self._locked() as data:
            revocation = _in_force(data, device_id)
            if revocation is None:
                return None
            now = _now()
            for entry in data.get("revoked", []):
                if isinstance(entry, dict) and entry.get("username") == device_id:
                    entry.setdefault("reinstated_at", None)
                    if entry["reinstated_at"] is None:
                        entry["reinstated_at"], entry["reinstated_by"] = now, by
            self._save(data, _accounts(data))
        log.warning("device %s reinstated by %s", device_id, by)
        return revocation

    def write_files(self) -> None:
        """Regenerate ``passwd`` and ``acl`` from the store (no reload)."""
        with self._locked() as data:
            self._save(data, _accounts(data))

    def remember_settings(
        self, *, pid_file: Path | None, file_group: str | None, only_site: str | None = None
    ) -> None:
        """Record how to reach this broker so later callers need only the directory, and,
        on a school's edge broker, the one site whose devices it may have logins for."""
        self.pid_file, self.file_group = pid_file, file_group
        with self._locked() as data:
            data["settings"] = {
                "pid_file": str(pid_file) if pid_file else None,
                "file_group": file_group,
                "only_site": only_site,
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
        descriptor = os.open(self.directory / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
        with os.fdopen(descriptor, "r+") as lock:
            os.fchmod(lock.fileno(), 0o600)  # the umask could have widened an older one
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield self._load()
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _save(self, data: dict[str, Any], accounts: dict[str, BrokerAccount]) -> None:
        data["version"] = 1
        data["accounts"] = [asdict(account) for account in accounts.values()]
        password_text = render_password_file(accounts.values())
        acl_text = render_acl(accounts.values())
        # Nothing is replaced unless both files read back as exactly these accounts.
        _check_round_trip(accounts, password_text, acl_text)
        group = self.file_group
        write_atomically(self.store_path, json.dumps(data, indent=2) + "\n", mode=0o600)
        write_atomically(self.password_path, password_text, mode=0o640, group=group)
        write_atomically(self.acl_path, acl_text, mode=0o640, group=group)


def _check_round_trip(
    accounts: dict[str, BrokerAccount], password_text: str, acl_text: str
) -> None:
    try:
        hashes = parse_password_file(password_text)
    except BrokerFileError as exc:
        raise CredentialsError(f"refusing to write passwd: {exc}") from None
    if hashes != {name: account.password_hash for name, account in accounts.items()}:
        raise CredentialsError("refusing to write passwd: it does not read back as the accounts")
    try:
        rules = parse_acl(acl_text)
    except BrokerFileError as exc:
        raise CredentialsError(f"refusing to write acl: {exc}") from None
    if rules != {name: account_rules(account) for name, account in accounts.items()}:
        raise CredentialsError("refusing to write acl: it does not read back as the accounts")


def account_problem(account: BrokerAccount) -> str | None:
    """Why ``account`` cannot go into Mosquitto's files, or None when it can."""
    if account.role not in ROLES:
        return f"role {account.role!r}"
    if not is_identifier(account.username):
        return f"user name {account.username[:80]!r} is not a valid identifier"
    if not is_password_hash(account.password_hash):
        return "the password hash is not a $7$ hash"
    if account.role == "collector":
        return None
    if account.site is None or not is_identifier(account.site):
        return f"site {str(account.site)[:80]!r} is not a valid identifier"
    if account.role == "edge":
        if account.username != edge_username(account.site) or account.device_id is not None:
            # The ACL grants an edge its school by site; the name must say which school.
            return f"edge login {account.username[:80]!r} is not {edge_username(account.site)!r}"
        return None
    if account.device_id != account.username:
        # The ACL pins a login to the topics of its device id: they must be one name.
        return f"device id {str(account.device_id)[:80]!r} is not its user name"
    return None


def _accounts(data: dict[str, Any]) -> dict[str, BrokerAccount]:
    accounts: dict[str, BrokerAccount] = {}
    for entry in data.get("accounts", []):
        try:
            if not isinstance(entry, dict) or entry.get("role") not in ROLES:
                raise TypeError("no valid role")
            account = BrokerAccount(**entry)
            if any(not isinstance(value, str | None) for value in asdict(account).values()):
                raise TypeError("a field is not text")
            problem = account_problem(account)
            if problem is not None:
                raise TypeError(problem)
        except TypeError as exc:
            # A hand-damaged entry (or one an older version let through) must not take every
            # other device down with it, nor reach Mosquitto's files.
            log.warning("ignoring unusable entry in the credential store: %s", exc)
            continue
        accounts[account.username] = account
    return accounts


def _revocations(data: dict[str, Any]) -> builtins.list[RevokedAccount]:
    revocations = []
    for entry in data.get("revoked", []):
        try:
            revocations.append(RevokedAccount(**entry))
        except TypeError:
            log.warning("ignoring unusable revocation in the credential store: %r", entry)
    return revocations


def _in_force(data: dict[str, Any], device_id: str) -> RevokedAccount | None:
    return next(
        (
            revocation
            for revocation in reversed(_revocations(data))
            if revocation.username == device_id and revocation.reinstated_at is None
        ),
        None,
    )


def _refuse_if_revoked(data: dict[str, Any], device_id: str) -> None:
    revocation = _in_force(data, device_id)
    if revocation is not None:
        raise DeviceRevokedError(
            f"device {device_id} was revoked at {revocation.revoked_at}; an administrator must "
            "reinstate it first"
        )


def _approval(entry: object, device_id: str) -> ReenrolmentApproval | None:
    if not isinstance(entry, dict):
        return None
    try:
        approval = ReenrolmentApproval(**entry)
    except TypeError:
        return None
    return approval if approval.device_id == device_id else None


def _optional_path(value: object) -> Path | None:
    return Path(value) if isinstance(value, str) and value else None
