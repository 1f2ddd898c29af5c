"""How many wrong passwords the login form takes: per user name and per client address.

Two counters, because each alone is easy to get round: per account alone lets one address
try one common password on every user name; per address alone lets a botnet try every
password on one account. A key (a normalised user name, or the client address) with
``limit`` failures inside ``window_s`` is locked for ``lockout_s``: its attempts are refused
before any password is checked, so a locked account is not a slower oracle but no oracle.

The address limit is higher than the account one: a school's staff reach the collector
from one NAT address, and one person's typos must not lock out the staff room.

Kept in memory, bounded: each map holds at most ``max_entries`` keys, the least recently
touched evicted first, so an attacker rotating user names or IPv6 addresses costs a fixed
amount of memory. A restart forgets the counts; a lockout is a brake, not a ban list.
The counts are exported at scrape time (``campuswatch_web_login_*``).
"""

from __future__ import annotations

import math
import threading
import time
from collections import Counter, OrderedDict, deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Final, Literal

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry

from campuswatch.collector.api.context import ApiContext

LOGIN_LIMITER_KEY: Final = "login_limiter"
"""Where the app's limiter lives in ``ApiContext.extras`` (tests put a clocked one there)."""
RefusalReason = Literal["bad_password", "bad_token", "rate_limited"]
REASONS: Final[tuple[RefusalReason, ...]] = ("bad_password", "bad_token", "rate_limited")
KeyKind = Literal["account", "address"]


@dataclass(slots=True)
class _Entry:
    failures: deque[float] = field(default_factory=deque)
    """Times of failed attempts within the window."""
    pending: int = 0
    """Attempts still being checked: they count as failures until they end."""
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


class _Counters:
    """One kind of key: attempt times within the window and lock expiry, LRU-bounded."""

    def __init__(self, limit: int, window_s: float, lockout_s: float, max_entries: int) -> None:
        self.limit = limit
        self.window_s = window_s
        self.lockout_s = lockout_s
        self.max_entries = max_entries
        self.entries: OrderedDict[str, _Entry] = OrderedDict()

    def _touch(self, key: str, now: float) -> _Entry:
        entry = self.entries.pop(key, None) or _Entry()
        self.entries[key] = entry  # most recently touched last
        while len(self.entries) > self.max_entries:
            self.entries.popitem(last=False)
        while entry.failures and entry.failures[0] <= now - self.window_s:
            entry.failures.popleft()
        return entry

    def wait(self, key: str, now: float) -> float:
        """Seconds until ``key`` may try again; 0 when it may now."""
        entry = self.entries.get(key)
        if entry is None:
            return 0.0
        if entry.locked_until > now:
            return entry.locked_until - now
        failures = [at for at in entry.failures if at > now - self.window_s]
        if len(failures) + entry.pending < self.limit:
            return 0.0
        if entry.pending:
            return 1.0  # all tries in flight: one frees its place within a second or so
        return max(1.0, failures[-self.limit] + self.window_s - now)

    def reserve(self, key: str, now: float) -> None:
        self._touch(key, now).pending += 1

    def fail(self, key: str, now: float) -> bool:
        """The attempt reserved for ``key`` failed; True when that locks the key."""
        entry = self._touch(key, now)
        entry.pending = max(0, entry.pending - 1)
        entry.failures.append(now)
        if len(entry.failures) < self.limit or entry.locked_until > now:
            return False
        entry.failures.clear()
        entry.locked_until = now + self.lockout_s
        return True

    def succeed(self, key: str, *, forget_failures: bool) -> None:
        entry = self.entries.get(key)
        if entry is None:
            return
        entry.pending = max(0, entry.pending - 1)
        if forget_failures:
            entry.failures.clear()

    def locked(self, now: float) -> int:
        return sum(1 for entry in self.entries.values() if entry.locked_until > now)


class LoginLimiter(Collector):
    """Per-account and per-address login limits.

    Every login first takes a place (``attempt``): a request being checked counts as a
    failure until it ends, so twenty guesses sent at once, each taking the time a password
    hash takes, get no more tries than twenty sent one after another.
    """

    def __init__(
        self,
        *,
        per_account: int,
        per_address: int,
        window_s: float,
        lockout_s: float,
        clock: Callable[[], float] = time.monotonic,
        max_entries: int = 10_000,
    ) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._accounts = _Counters(per_account, window_s, lockout_s, max_entries)
        self._addresses = _Counters(per_address, window_s, lockout_s, max_entries)
        self._refused: Counter[str] = Counter()
        self._lockouts: Counter[str] = Counter()
        self._registries: list[CollectorRegistry] = []

    @staticmethod
    def account_key(username: str) -> str:
        # " Admin" and "admin" must share a counter, whatever the user table's collation.
        return username.strip().casefold()

    def attempt(self, username: str | None, address: str) -> LoginAttempt | Refusal:
        """A place for one login (then ``failed`` or ``succeeded``), or a counted Refusal
        when the account or the address is locked or has all its tries in flight."""
        account = self.account_key(username) if username else None
        now = self._clock()
        with self._lock:
            wait = self._addresses.wait(address, now)
            if account is not None:
                wait = max(wait, self._accounts.wait(account, now))
            if wait > 0:
                self._refused["rate_limited"] += 1
                return Refusal(wait)
            self._addresses.reserve(address, now)
            if account is not None:
                self._accounts.reserve(account, now)
        return LoginAttempt(account, address)

    def failed(self, attempt: LoginAttempt, *, reason: RefusalReason) -> None:
        now = self._clock()
        with self._lock:
            self._refused[reason] += 1
            if attempt.account is not None and self._accounts.fail(attempt.account, now):
                self._lockouts["account"] += 1
            if self._addresses.fail(attempt.address, now):
                self._lockouts["address"] += 1

    def succeeded(self, attempt: LoginAttempt) -> None:
        """The account's failures are forgotten; the address's are not (an attacker holding
        one account must not wipe its guesses at the others by logging in)."""
        with self._lock:
            if attempt.account is not None:
                self._accounts.succeed(attempt.account, forget_failures=True)
            self._addresses.succeed(attempt.address, forget_failures=False)

    def tracked(self) -> int:
        with self._lock:
            return len(self._accounts.entries) + len(self._addresses.entries)

    def collect(self) -> Iterator[Metric]:
        now = self._clock()
        with self._lock:
            refused = dict(self._refused)
            lockouts = dict(self._lockouts)
            locked = {"account": self._accounts.locked(now), "address": self._addresses.locked(now)}
        refused_family = CounterMetricFamily(
            "campuswatch_web_login_refused",
            "UI logins refused, by reason (rate_limited: refused unchecked during a lockout)",
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
            "User names or client addresses locked now",
            labels=["key"],
        )
        for key in ("account", "address"):
            lockout_family.add_metric([key], lockouts.get(key, 0))
            locked_family.add_metric([key], locked[key])
        yield lockout_family
        yield locked_family

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
        )
        # setdefault: two first logins at once must still end up sharing one limiter.
        limiter = context.extras.setdefault(LOGIN_LIMITER_KEY, fresh)
        assert isinstance(limiter, LoginLimiter)
    if context.registry is not None:
        limiter.expose_in(context.registry)
    return limiter
