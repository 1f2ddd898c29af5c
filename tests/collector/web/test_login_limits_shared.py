"""Several collectors on one PostgreSQL register (docs/scale.md) enforce one login limit.

Each collector here is an app of its own on the shared database, as behind a province's
proxy: guesses spread over them, or a restart between them, must buy no extra tries.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from prometheus_client.registry import CollectorRegistry
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session, sessionmaker

from campuswatch.collector.api.app import create_app
from campuswatch.collector.api.context import ApiContext
from campuswatch.collector.db.access import create_user
from campuswatch.collector.db.engine import make_engine, session_factory, upgrade
from campuswatch.collector.db.models import LoginCounter
from campuswatch.collector.liveness import LivenessTracker
from campuswatch.collector.settings import CollectorSettings
from campuswatch.collector.web import mount
from campuswatch.collector.web.login_limits import (
    LOGIN_LIMITER_KEY,
    PENDING_MAX_S,
    LoginAttempt,
    LoginLimiter,
    Refusal,
)
from tests.collector.web.conftest import PASSWORD, TESTSERVER
from tests.collector.web.test_pages import ORIGIN
from tests.support.ports import free_port


@dataclass
class Collector:
    app: FastAPI
    context: ApiContext
    sessions: sessionmaker[Session]
    engine: Engine

    def attempt(self, username: str, password: str, address: str = "10.0.0.1") -> int:
        client = TestClient(
            self.app, base_url=TESTSERVER, follow_redirects=False, client=(address, 50000)
        )
        client.cookies.set("cw_lang", "en")
        response = client.post(
            "/ui/login", data={"username": username, "password": password}, headers=ORIGIN
        )
        status: int = response.status_code
        return status


CollectorFactory = Callable[[], Collector]


@pytest.fixture
def collectors(fresh_migrated_postgres_url: str, tmp_path: Path) -> Iterator[CollectorFactory]:
    """Collectors' web apps on one migrated PostgreSQL register holding two users."""
    built: list[Collector] = []

    def build() -> Collector:
        engine = make_engine(fresh_migrated_postgres_url)
        sessions = session_factory(engine)
        settings = CollectorSettings(data_dir=tmp_path / f"collector-{len(built)}")
        context = ApiContext(
            settings=settings, sessions=sessions, liveness=LivenessTracker(settings.liveness)
        )
        app = create_app(context)
        mount(app)
        collector = Collector(app, context, sessions, engine)
        built.append(collector)
        return collector

    first = build()
    with first.sessions() as session:
        create_user(session, username="admin", password=PASSWORD, role="admin", language="en")
        create_user(session, username="viewer", password=PASSWORD, role="viewer")
        session.commit()
    try:
        yield build
    finally:
        for collector in built:
            collector.engine.dispose()


def counter_rows(collector: Collector) -> int:
    with collector.sessions() as session:
        return session.scalar(select(func.count()).select_from(LoginCounter)) or 0


def test_failures_spread_over_two_collectors_lock_the_account_on_both(
    collectors: CollectorFactory,
) -> None:
    one, two = collectors(), collectors()
    codes = [(one if n % 2 else two).attempt("admin", f"guess-{n}") for n in range(5)]
    assert codes == [401] * 5
    assert one.attempt("admin", PASSWORD, address="10.0.0.2") == 429
    assert two.attempt("admin", PASSWORD, address="10.0.0.3") == 429
    # Only that account: another user logs in through either collector.
    assert one.attempt("viewer", PASSWORD, address="10.0.0.4") == 303
    assert two.attempt("viewer", PASSWORD, address="10.0.0.4") == 303


def test_the_address_limit_holds_across_collectors(collectors: CollectorFactory) -> None:
    one, two = collectors(), collectors()
    codes = [(one, two)[n % 2].attempt(f"user{n}", "wrong", "192.0.2.7") for n in range(20)]
    assert codes == [401] * 20
    assert one.attempt("viewer", PASSWORD, "192.0.2.7") == 429
    assert two.attempt("viewer", PASSWORD, "192.0.2.7") == 429


def test_a_lockout_outlives_a_restart(collectors: CollectorFactory) -> None:
    before = collectors()
    assert [before.attempt("admin", f"guess-{n}") for n in range(5)] == [401] * 5
    before.engine.dispose()
    after = collectors()  # a fresh process: nothing in memory
    assert after.attempt("admin", PASSWORD, address="10.0.0.9") == 429


# The race needs checks that take time, as the product's do.
@pytest.mark.usefixtures("production_password_cost")
def test_concurrent_guesses_on_two_collectors_get_no_more_than_the_limit(
    collectors: CollectorFactory,
) -> None:
    one, two = collectors(), collectors()
    start = threading.Barrier(20)

    def guess(n: int) -> int:
        start.wait()
        return (one, two)[n % 2].attempt("admin", f"guess-{n}", address=f"10.0.1.{n}")

    with ThreadPoolExecutor(max_workers=20) as pool:
        codes = list(pool.map(guess, range(20)))
    assert codes.count(401) <= 5
    assert sorted(codes) == [401] * codes.count(401) + [429] * (20 - codes.count(401))
    # Once they have all ended the account is locked everywhere.
    assert one.attempt("admin", PASSWORD, address="10.0.2.1") == 429
    assert two.attempt("admin", PASSWORD, address="10.0.2.2") == 429


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


def shared_limiter(collector: Collector, clock: Clock, **limits: int) -> LoginLimiter:
    limiter = LoginLimiter(
        per_account=limits.get("per_account", 5),
        per_address=limits.get("per_address", 20),
        window_s=900,
        lockout_s=900,
        clock=clock,
        max_entries=limits.get("max_entries", 10_000),
        sessions=collector.sessions,
    )
    collector.context.extras[LOGIN_LIMITER_KEY] = limiter
    return limiter


def test_a_flood_of_user_names_keeps_the_table_bounded(collectors: CollectorFactory) -> None:
    one, two = collectors(), collectors()
    clock = Clock()
    # A small cap: four times as many names as it holds prune it over and over, as a
    # real flood would, in a fraction of the logins.
    limiters = [shared_limiter(c, clock, max_entries=10, per_address=10_000) for c in (one, two)]
    assert [one.attempt("admin", "wrong") for _ in range(4)] == [401] * 4
    assert one.attempt("admin", "wrong") == 401  # admin locked before the flood
    for n in range(40):
        assert (one, two)[n % 2].attempt(f"random-{n}", "x", address=f"2001:db8::{n:x}") == 401
    assert counter_rows(one) <= 2 * 10
    assert limiters[0].tracked() <= 2 * 10
    # A flood of new names does not evict a lock that still holds.
    assert two.attempt("admin", PASSWORD, address="10.0.0.5") == 429
    # Rows whose window and lockout have passed are pruned.
    clock.now += 2000
    assert one.attempt("viewer", PASSWORD, address="10.0.0.6") == 303
    assert counter_rows(one) <= 2


def test_a_lockout_expires_by_the_shared_clock(collectors: CollectorFactory) -> None:
    one, two = collectors(), collectors()
    clock = Clock()
    for collector in (one, two):
        shared_limiter(collector, clock)
    assert [(one, two)[n % 2].attempt("admin", "typo") for n in range(5)] == [401] * 5
    clock.now += 899
    assert two.attempt("admin", PASSWORD) == 429
    clock.now += 2
    assert one.attempt("admin", PASSWORD) == 303


def test_a_place_held_by_a_collector_that_died_mid_check_is_given_back(
    collectors: CollectorFactory,
) -> None:
    """A check in flight holds a place in the shared row; a collector killed before it ends
    the attempt must not hold that place for ever."""
    clock = Clock()
    dead = shared_limiter(collectors(), clock, per_account=2)
    assert isinstance(dead.attempt("admin", "10.0.0.1"), LoginAttempt)
    assert isinstance(dead.attempt("admin", "10.0.0.2"), LoginAttempt)  # neither ever ends
    alive = shared_limiter(collectors(), clock, per_account=2)
    refused = alive.attempt("admin", "10.0.0.3")
    assert isinstance(refused, Refusal) and refused.retry_after_s == 1.0
    clock.now += PENDING_MAX_S + 1
    assert isinstance(alive.attempt("admin", "10.0.0.3"), LoginAttempt)


def test_a_failure_is_counted_when_the_request_holds_the_last_pooled_connection(
    fresh_postgres_url: str, tmp_path: Path
) -> None:
    """Counting a failure takes a connection of its own: the request's must be given back
    first, or a pool full of failing logins waits for itself and the failures go uncounted."""
    upgrade(fresh_postgres_url)
    engine = make_engine(fresh_postgres_url, pool_size=1, max_overflow=0, pool_timeout=3)
    try:
        sessions = session_factory(engine)
        settings = CollectorSettings(data_dir=tmp_path)
        context = ApiContext(
            settings=settings, sessions=sessions, liveness=LivenessTracker(settings.liveness)
        )
        app = create_app(context)
        mount(app)
        collector = Collector(app, context, sessions, engine)
        registry = CollectorRegistry(auto_describe=False)
        context.registry = registry
        assert collector.attempt("admin", "wrong") == 401
        errors = registry.get_sample_value("campuswatch_web_login_store_errors_total")
        assert errors == 0
        with sessions() as session:
            row = session.get(LoginCounter, ("account", "admin"))
            assert row is not None and len(row.failures) == 1 and row.pending == []
    finally:
        engine.dispose()


def test_the_locked_gauge_counts_locks_taken_on_any_collector(
    collectors: CollectorFactory,
) -> None:
    one, two = collectors(), collectors()
    registry = CollectorRegistry(auto_describe=False)
    two.context.registry = registry
    assert [one.attempt("admin", f"guess-{n}") for n in range(5)] == [401] * 5
    assert two.attempt("admin", PASSWORD) == 429
    locked = registry.get_sample_value("campuswatch_web_login_locked", {"key": "account"})
    assert locked == 1


def test_an_unreachable_register_refuses_logins_instead_of_skipping_the_limit(
    collectors: CollectorFactory,
) -> None:
    collector = collectors()
    # Counters on a server that is not there (the register going away between two requests).
    gone = make_engine(f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/none")
    limiter = LoginLimiter(
        per_account=5, per_address=20, window_s=900, lockout_s=900, sessions=session_factory(gone)
    )
    collector.context.extras[LOGIN_LIMITER_KEY] = limiter
    client = TestClient(collector.app, base_url=TESTSERVER, follow_redirects=False)
    client.cookies.set("cw_lang", "en")
    response = client.post(
        "/ui/login", data={"username": "admin", "password": PASSWORD}, headers=ORIGIN
    )
    assert response.status_code == 503
    assert "Login is not available right now" in response.text
    assert response.headers["retry-after"] == "60"
    gone.dispose()
