"""How many wrong passwords the login form takes: per user name and per client address.

Two counters, because each alone is easy to get round: per account alone lets one address
try one common password on every user name; per address alone lets a botnet try every
password on one account. A key (a normalised user name, or the client address) with
``limit`` failures inside ``window_s`` is locked for ``lockout_s``: its attempts are refused
before any password is checked, so a locked account is not a slower oracle but no oracle.

The address limit is higher than the account one: a school's staff reach the collector
from one NAT address, and one person's typos must not lock out the staff room.

Where the counts live follows the register (docs/scale.md):

- **PostgreSQL** (several collectors behind one proxy): in the register's
  ``login_counters`` table, so every collector enforces the same limit and a lockout
  outlives a restart. Each login locks its two rows (``INSERT ... ON CONFLICT DO UPDATE
  ... RETURNING`` in one transaction) before it decides, so two collectors counting one key
  at once cannot both take its last try. Times are wall-clock Unix seconds (collectors'
  clocks are NTP-synchronised; a skew of a second shifts a 15-minute window by a second).
  Bounded: rows idle longer than the window are deleted, and past ``max_entries`` per kind
  the least recently touched are evicted, locked keys last. When the counters cannot be
  read the login is refused (503), not let through uncounted: with the register down no
  password could be checked anyway.
- **SQLite** (one collector; the register file is not shared): in memory, bounded the same
  way (LRU). A restart forgets the counts there, a brake rather than a ban list; keeping
  them in memory keeps the single-writer register free for ingest.

The attempts and refusals of each process are exported at scrape time
(``campuswatch_web_login_*``); ``..._locked`` counts the shared locks where they are shared.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry
from sqlalchemy import delete, func, literal_column, select, tuple_, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from campuswatch.collector.api.context import ApiContext
from campuswatch.collector.db.models import LoginCounter

log = logging.getLogger(__name__)
LOGIN_LIMITER_KEY: Final = "login_limiter"
"""Where the app's limiter lives in ``ApiContext.extras`` (tests put a clocked one there)."""
RefusalReason = Literal["bad_password", "bad_token", "rate_limited", "unavailable"]
REASONS: Final[tuple[RefusalReason, ...]] = (
    "bad_password",
    "bad_token",
    "rate_limited",
    "unavailable",
)
KeyKind = Literal["account", "address"]
KINDS: Final[tuple[KeyKind, ...]] = ("account", "address")
PENDING_MAX_S: Final = 60.0
"""An attempt still "being checked" after this long no longer holds a place: its collector
died mid-check (a shared row would otherwise keep the place for ever) or it hung."""


class LoginLimitsUnavailable(Exception):
    """The shared counters could not be read: the login is refused, not let through."""


@dataclass(slots=True)
class _Entry:
    failures: list[float] = field(default_factory=list)
    """Times of failed attempts within the window (the newest ``limit`` at most)."""
    pending: list[float] = field(default_factory=list)
    """Start times of attempts still being checked: they count as failures until they end."""
    locked_until: float = 0.0


@dataclass(frozen=True, slots=True)
class Refusal:
    retry_after_s: float

    @property
    def minutes(self) -> int:
        return max(1, math.ceil(self.retry_after_s / 60))


@dataclass(frozen=True, slots=True)
class LoginAttempt:
    """A login being checked: it holds a place in both counters until it ends."""

    account: str | None
    address: str
    at: float = 0.0
    """When it took its place (which place to give back)."""


@dataclass(frozen=True, slots=True)
class _Limits:
    """The rule for one kind of key; the same code runs on memory and database entries."""

    limit: int
    window_s: float
    lockout_s: float

    def forget_old(self, entry: _Entry, now: float) -> None:
        entry.failures = [at for at in entry.failures if at > now - self.window_s]
        entry.pending = [at for at in entry.pending if at > now - PENDING_MAX_S]

    def wait(self, entry: _Entry, now: float) -> float:
        """Seconds until the key may try again; 0 when it may now."""
        if entry.locked_until > now:
            return entry.locked_until - now
        failures = [at for at in entry.failures if at > now - self.window_s]
        pending = [at for at in entry.pending if at > now - PENDING_MAX_S]
        if len(failures) + len(pending) < self.limit:
            return 0.0
        if pending:
            return 1.0  # all tries in flight: one frees its place within a second or so
        return max(1.0, failures[-self.limit] + self.window_s - now)

    @staticmethod
    def end(entry: _Entry, at: float) -> None:
        if at in entry.pending:
            entry.pending.remove(at)

    def fail(self, entry: _Entry, at: float, now: float) -> bool:
        """The attempt started at ``at`` failed; True when that locks the key."""
        self.forget_old(entry, now)
        self.end(entry, at)
        entry.failures.append(now)
        del entry.failures[: -self.limit]
        if len(entry.failures) < self.limit or entry.locked_until > now:
            return False
        entry.failures.clear()
        entry.locked_until = now + self.lockout_s
        return True

    def succeed(self, entry: _Entry, at: float, *, forget_failures: bool) -> None:
        self.end(entry, at)
        if forget_failures:
            entry.failures.clear()


Key = tuple[KeyKind, str]


class _MemoryCounters:
    """Entries of one process, each kind LRU-bounded to ``max_entries``."""

    def __init__(self, max_entries: int) -> None:
        self.max_entries = max_entries
        self.maps: dict[KeyKind, OrderedDict[str, _Entry]] = {kind: OrderedDict() for kind in KINDS}

    def get(self, key: Key) -> _Entry:
        return self.maps[key[0]].get(key[1]) or _Entry()

    def touch(self, key: Key) -> _Entry:
        entries = self.maps[key[0]]
        entry = entries.pop(key[1], None) or _Entry()
        entries[key[1]] = entry  # most recently touched last
        while len(entries) > self.max_entries:
            entries.popitem(last=False)
        return entry

    def locked(self, now: float) -> dict[KeyKind, int]:
        return {
            kind: sum(1 for entry in entries.values() if entry.locked_until > now)
            for kind, entries in self.maps.items()
        }

    def tracked(self) -> int:
        return sum(len(entries) for entries in self.maps.values())


class _SharedCounters:
    """Entries in the register's ``login_counters`` table (PostgreSQL), shared by collectors."""

    def __init__(
        self, sessions: sessionmaker[Session], limits: dict[KeyKind, _Limits], max_entries: int
    ) -> None:
        self.sessions = sessions
        self.limits = limits
        self.max_entries = max_entries

    def lock(self, session: Session, keys: list[Key], now: float) -> tuple[dict[Key, _Entry], bool]:
        """The keys' entries, their rows created if new and locked until the transaction
        ends; and whether a row was created."""
        ordered = sorted(set(keys))  # one order everywhere: two logins cannot deadlock
        insert = pg_insert(LoginCounter).values(
            [
                {"kind": kind, "key": key, "failures": [], "pending": [], "locked_until": 0.0,
                 "touched": now}
                for kind, key in ordered
            ]
        )  # fmt: skip
        upsert: Any = insert.on_conflict_do_update(
            index_elements=[LoginCounter.kind, LoginCounter.key],
            set_={"touched": func.greatest(LoginCounter.touched, insert.excluded.touched)},
        ).returning(
            LoginCounter.kind,
            LoginCounter.key,
            LoginCounter.failures,
            LoginCounter.pending,
            LoginCounter.locked_until,
            literal_column("xmax = 0").label("created"),
        )
        entries: dict[Key, _Entry] = {}
        created = False
        for row in session.execute(upsert):
            entries[(row.kind, row.key)] = _Entry(
                [float(at) for at in row.failures or []],
                [float(at) for at in row.pending or []],
                float(row.locked_until),
            )
            created = created or bool(row.created)
        return entries, created

    @staticmethod
    def store(session: Session, entries: dict[Key, _Entry], now: float) -> None:
        session.execute(
            update(LoginCounter),
            [
                {"kind": kind, "key": key, "failures": entry.failures, "pending": entry.pending,
                 "locked_until": entry.locked_until, "touched": now}
                for (kind, key), entry in entries.items()
            ],
        )  # fmt: skip

    def prune(self, session: Session, keys: list[Key], now: float) -> None:
        """Delete rows that no longer hold anything; past the cap, the least recently used
        down to nine tenths of it (the sort is paid once per tenth of the cap new rows,
        not by every new name of a flood).

        SKIP LOCKED: rows another login holds are its business; waiting for them here while
        it waits for ours would be a deadlock."""
        window = max(limits.window_s for limits in self.limits.values())
        columns = tuple_(LoginCounter.kind, LoginCounter.key)
        for kind in KINDS:
            idle = (
                select(LoginCounter.kind, LoginCounter.key)
                .where(LoginCounter.kind == kind)  # (kind, touched): an index range
                .where(LoginCounter.touched <= now - window - PENDING_MAX_S)
                .where(LoginCounter.locked_until <= now)
                .with_for_update(skip_locked=True)
            )
            session.execute(delete(LoginCounter).where(columns.in_(idle.scalar_subquery())))
            over = (
                select(LoginCounter.key)
                .where(LoginCounter.kind == kind)
                .order_by(LoginCounter.touched)
                .offset(self.max_entries)
                .limit(1)
            )
            if session.scalar(over) is None:
                continue
            surplus = (
                select(LoginCounter.kind, LoginCounter.key)
                .where(LoginCounter.kind == kind)
                .order_by(
                    columns.in_(keys).desc(),  # the login at hand keeps its own rows
                    (LoginCounter.locked_until > now).desc(),
                    LoginCounter.touched.desc(),
                )
                .offset(max(1, self.max_entries * 9 // 10))
                .with_for_update(skip_locked=True)
            )
            session.execute(delete(LoginCounter).where(columns.in_(surplus.scalar_subquery())))

    def locked(self, now: float) -> dict[KeyKind, int]:
        query = (
            select(LoginCounter.kind, func.count())
            .where(LoginCounter.locked_until > now)
            .group_by(LoginCounter.kind)
        )
        with self.sessions() as session:
            counts: dict[Any, int] = dict(session.execute(query).tuples().all())
        return {kind: counts.get(kind, 0) for kind in KINDS}

    def tracked(self) -> int:
        with self.sessions() as session:
            return session.scalar(select(func.count()).select_from(LoginCounter)) or 0


class LoginLimiter(Collector):
    """Per-account and per-address login limits.

    Every login first takes a place (``attempt``): a request being checked counts as a
    failure until it ends, so twenty guesses sent at once, each taking the time a password
    hash takes, get no more tries than twenty sent one after another. With ``sessions``
    (a PostgreSQL register) the counts are those every collector on it shares.
    """

    def __init__(
        self,
        *,
        per_account: int,
        per_address: int,
        window_s: float,
        lockout_s: float,
        clock: Callable[[], float] | None = None,
        max_entries: int = 10_000,
        sessions: sessionmaker[Session] | None = None,
    ) -> None:
        # Shared counts need one clock for every collector: the wall clock, not monotonic.
        self._clock = clock or (time.monotonic if sessions is None else time.time)
        self._lock = threading.Lock()
        self._limits: dict[KeyKind, _Limits] = {
            "account": _Limits(per_account, window_s, lockout_s),
            "address": _Limits(per_address, window_s, lockout_s),
        }
        self._memory = _MemoryCounters(max_entries)
        self._shared = (
            None if sessions is None else _SharedCounters(sessions, self._limits, max_entries)
        )
        self._refused: Counter[str] = Counter()
        self._lockouts: Counter[str] = Counter()
        self._store_errors = 0
        self._registries: list[CollectorRegistry] = []

    @staticmethod
    def account_key(username: str) -> str:
        # " Admin" and "admin" must share a counter, whatever the user table's collation.
        return username.strip().casefold()

    @staticmethod
    def _keys(account: str | None, address: str) -> list[Key]:
        keys: list[Key] = [("address", address)]
        if account is not None:
            keys.append(("account", account))
        return keys

    def attempt(self, username: str | None, address: str) -> LoginAttempt | Refusal:
        """A place for one login (then ``failed`` or ``succeeded``), or a counted Refusal
        when the account or the address is locked or has all its tries in flight.

        Raises LoginLimitsUnavailable when the shared counters cannot be read."""
        account = self.account_key(username) if username else None
        keys = self._keys(account, address)
        now = self._clock()
        if self._shared is not None:
            try:
                with self._shared.sessions.begin() as session:
                    entries, created = self._shared.lock(session, keys, now)
                    refusal = self._refusal(entries, now)
                    if refusal is None:
                        self._reserve(entries, now)
                    self._shared.store(session, entries, now)
                    if created:
                        self._shared.prune(session, keys, now)
            except SQLAlchemyError as exc:
                log.warning("login refused: shared login counters unavailable: %s", exc)
                with self._lock:
                    self._refused["unavailable"] += 1
                    self._store_errors += 1
                raise LoginLimitsUnavailable(str(exc)) from exc
        else:
            with self._lock:
                refusal = self._refusal({key: self._memory.get(key) for key in keys}, now)
                if refusal is None:
                    self._reserve({key: self._memory.touch(key) for key in keys}, now)
        if refusal is not None:
            with self._lock:
                self._refused["rate_limited"] += 1
            return refusal
        return LoginAttempt(account, address, now)

    def _refusal(self, entries: dict[Key, _Entry], now: float) -> Refusal | None:
        wait = max(self._limits[key[0]].wait(entry, now) for key, entry in entries.items())
        return Refusal(wait) if wait > 0 else None

    def _reserve(self, entries: dict[Key, _Entry], now: float) -> None:
        for (kind, _), entry in entries.items():
            self._limits[kind].forget_old(entry, now)
            entry.pending.append(now)

    def _end(
        self, attempt: LoginAttempt, change: Callable[[dict[Key, _Entry], float], None]
    ) -> None:
        keys = self._keys(attempt.account, attempt.address)
        now = self._clock()
        if self._shared is None:
            with self._lock:
                change({key: self._memory.touch(key) for key in keys}, now)
            return
        try:
            with self._shared.sessions.begin() as session:
                entries, created = self._shared.lock(session, keys, now)
                change(entries, now)
                self._shared.store(session, entries, now)
                if created:  # evicted while it was being checked
                    self._shared.prune(session, keys, now)
        except SQLAlchemyError as exc:
            # Its place stays taken (a failure) until PENDING_MAX_S; nothing is let through.
            log.warning("shared login counters unavailable, attempt not recorded: %s", exc)
            with self._lock:
                self._store_errors += 1

    def failed(self, attempt: LoginAttempt, *, reason: RefusalReason) -> None:
        locked: list[KeyKind] = []

        def fail(entries: dict[Key, _Entry], now: float) -> None:
            locked.clear()  # a retried transaction starts again
            for (kind, _), entry in entries.items():
                if self._limits[kind].fail(entry, attempt.at, now):
                    locked.append(kind)

        self._end(attempt, fail)
        with self._lock:
            self._refused[reason] += 1
            self._lockouts.update(locked)

    def succeeded(self, attempt: LoginAttempt) -> None:
        """The account's failures are forgotten; the address's are not (an attacker holding
        one account must not wipe its guesses at the others by logging in)."""

        def succeed(entries: dict[Key, _Entry], now: float) -> None:
            for (kind, _), entry in entries.items():
                self._limits[kind].succeed(entry, attempt.at, forget_failures=kind == "account")

        self._end(attempt, succeed)

    def tracked(self) -> int:
        if self._shared is not None:
            return self._shared.tracked()
        with self._lock:
            return self._memory.tracked()

    def collect(self) -> Iterator[Metric]:
        now = self._clock()
        locked: dict[KeyKind, int] | None
        if self._shared is not None:
            try:
                locked = self._shared.locked(now)
            except SQLAlchemyError as exc:
                log.warning("shared login counters unavailable at scrape: %s", exc)
                locked = None
        with self._lock:
            refused = dict(self._refused)
            lockouts = dict(self._lockouts)
            store_errors = self._store_errors
            if self._shared is None:
                locked = self._memory.locked(now)
        refused_family = CounterMetricFamily(
            "campuswatch_web_login_refused",
            "UI logins refused, by reason (rate_limited: refused unchecked during a lockout;"
            " unavailable: refused because the shared counters could not be read)",
            labels=["reason"],
        )
        for reason in REASONS:
            refused_family.add_metric([reason], refused.get(reason, 0))
        yield refused_family
        lockout_family = CounterMetricFamily(
            "campuswatch_web_login_lockouts",
            "User names or client addresses locked after too many failed logins",
            labels=["key"],
        )
        locked_family = GaugeMetricFamily(
            "campuswatch_web_login_locked",
            "User names or client addresses locked now (on every collector sharing the register)",
            labels=["key"],
        )
        for key in KINDS:
            lockout_family.add_metric([key], lockouts.get(key, 0))
            if locked is not None:
                locked_family.add_metric([key], locked[key])
        yield lockout_family
        yield locked_family
        yield CounterMetricFamily(
            "campuswatch_web_login_store_errors",
            "Reads or writes of the shared login counters that failed",
            value=store_errors,
        )

    def expose_in(self, registry: CollectorRegistry) -> None:
        """Register once per registry, however many apps are built on one context."""
        with self._lock:
            if any(known is registry for known in self._registries):
                return
            self._registries.append(registry)
        registry.register(self)


def login_limiter(context: ApiContext) -> LoginLimiter:
    """The app's limiter, made from the settings on first use."""
    limiter = context.extras.get(LOGIN_LIMITER_KEY)
    if not isinstance(limiter, LoginLimiter):
        settings = context.settings
        fresh = LoginLimiter(
            per_account=settings.login_failures_per_account,
            per_address=settings.login_failures_per_address,
            window_s=settings.login_window_s,
            lockout_s=settings.login_lockout_s,
            sessions=context.sessions if _is_postgresql(context.sessions) else None,
        )
        # setdefault: two first logins at once must still end up sharing one limiter.
        limiter = context.extras.setdefault(LOGIN_LIMITER_KEY, fresh)
        assert isinstance(limiter, LoginLimiter)
    if context.registry is not None:
        limiter.expose_in(context.registry)
    return limiter


def _is_postgresql(sessions: sessionmaker[Session]) -> bool:
    bind = sessions.kw.get("bind")
    return bind is not None and bind.dialect.name == "postgresql"
