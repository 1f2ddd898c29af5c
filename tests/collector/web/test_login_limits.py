"""Guessing passwords through the login form: limited per account and per client address."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import httpx
import pytest
from fastapi.testclient import TestClient
from prometheus_client.registry import CollectorRegistry
from sqlalchemy import Engine

from campuswatch.collector.cli import http_server_config
from campuswatch.collector.db.engine import make_engine, session_factory
from campuswatch.collector.settings import CollectorSettings
from campuswatch.collector.web.login_limits import (
    LOGIN_LIMITER_KEY,
    LoginAttempt,
    LoginLimiter,
    Refusal,
)
from tests.collector.web.conftest import PASSWORD, TESTSERVER, WebApp
from tests.collector.web.test_pages import ORIGIN
from tests.support.http_server import served_app
from tests.support.ports import free_port


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


Installer = Callable[..., LoginLimiter]


@pytest.fixture(params=["memory", "postgresql"])
def install_limiter(request: pytest.FixtureRequest) -> Iterator[Installer]:
    """Puts a clocked limiter in the app: counts in memory (a SQLite register) or in a
    PostgreSQL register's table (collectors sharing one), the same rules either way."""
    engines: list[Engine] = []

    def install(web: WebApp, clock: Clock, **limits: int) -> LoginLimiter:
        sessions = None
        if request.param == "postgresql":
            url = request.getfixturevalue("fresh_migrated_postgres_url")
            engines.append(make_engine(url))
            sessions = session_factory(engines[-1])
        limiter = LoginLimiter(
            per_account=limits.get("per_account", 5),
            per_address=limits.get("per_address", 20),
            window_s=900,
            lockout_s=900,
            clock=clock,
            max_entries=limits.get("max_entries", 10_000),
            sessions=sessions,
        )
        web.context.extras[LOGIN_LIMITER_KEY] = limiter
        return limiter

    yield install
    for engine in engines:
        engine.dispose()


def client_from(web: WebApp, address: str, language: str = "en") -> TestClient:
    client = TestClient(
        web.app, base_url=TESTSERVER, follow_redirects=False, client=(address, 50000)
    )
    client.cookies.set("cw_lang", language)
    return client


def attempt(client: TestClient, username: str, password: str) -> int:
    response = client.post(
        "/ui/login", data={"username": username, "password": password}, headers=ORIGIN
    )
    status: int = response.status_code
    return status


def test_an_account_is_locked_after_five_failures_until_the_lockout_passes(
    web: WebApp, install_limiter: Installer
) -> None:
    clock = Clock()
    install_limiter(web, clock)
    client = client_from(web, "10.0.0.1")
    assert [attempt(client, "admin", f"guess-{n}") for n in range(5)] == [401] * 5
    refused = client.post(
        "/ui/login", data={"username": "admin", "password": PASSWORD}, headers=ORIGIN
    )
    assert refused.status_code == 429
    assert "Too many failed logins" in refused.text and "15 minutes" in refused.text
    assert refused.headers["retry-after"] == "900"
    # From another address too: the account itself is locked, not only the guesser.
    assert attempt(client_from(web, "10.0.0.2"), "admin", PASSWORD) == 429
    # Other accounts are not locked by guesses at this one.
    assert attempt(client_from(web, "10.0.0.3"), "viewer", PASSWORD) == 303
    clock.now += 899
    assert attempt(client, "admin", PASSWORD) == 429
    clock.now += 2
    assert attempt(client, "admin", PASSWORD) == 303


def test_user_names_differing_in_case_or_spaces_share_one_counter(
    web: WebApp, install_limiter: Installer
) -> None:
    clock = Clock()
    install_limiter(web, clock)
    client = client_from(web, "10.0.0.1")
    for name in ("admin", "Admin", " ADMIN", "admin ", "aDmin"):
        assert attempt(client, name, "wrong") == 401
    assert attempt(client_from(web, "10.0.0.9"), "admin", PASSWORD) == 429


def test_failures_spread_over_more_than_the_window_do_not_lock(
    web: WebApp, install_limiter: Installer
) -> None:
    clock = Clock()
    install_limiter(web, clock)
    client = client_from(web, "10.0.0.1")
    for _ in range(12):
        assert attempt(client, "admin", "wrong") == 401
        clock.now += 300  # four per 15 minutes at most
    assert attempt(client, "admin", PASSWORD) == 303


def test_an_address_rotating_user_names_is_locked_for_every_account(
    web: WebApp, install_limiter: Installer
) -> None:
    clock = Clock()
    install_limiter(web, clock, per_address=20)
    guesser = client_from(web, "192.0.2.7")
    codes = [attempt(guesser, f"user{n}", "wrong") for n in range(20)]
    assert codes == [401] * 20
    assert attempt(guesser, "viewer", PASSWORD) == 429
    # Staff at another address are not affected.
    assert attempt(client_from(web, "192.0.2.8"), "viewer", PASSWORD) == 303


def test_a_success_does_not_reset_the_address_counter(
    web: WebApp, install_limiter: Installer
) -> None:
    clock = Clock()
    install_limiter(web, clock, per_address=6)
    client = client_from(web, "192.0.2.7")
    for n in range(3):
        assert attempt(client, f"user{n}", "wrong") == 401
    # The attacker owns one account and logs into it between guesses at the others.
    assert attempt(client, "viewer", PASSWORD) == 303
    for n in range(3):
        assert attempt(client, f"other{n}", "wrong") == 401
    assert attempt(client, "facility", PASSWORD) == 429


def test_a_success_clears_only_that_accounts_own_failures(
    web: WebApp, install_limiter: Installer
) -> None:
    clock = Clock()
    install_limiter(web, clock)
    client = client_from(web, "10.0.0.1")
    for _ in range(4):
        assert attempt(client, "admin", "typo") == 401
    assert attempt(client, "admin", PASSWORD) == 303
    for _ in range(4):
        assert attempt(client, "admin", "typo") == 401
    assert attempt(client, "admin", PASSWORD) == 303


def test_pasted_token_guesses_count_against_the_address(
    web: WebApp, install_limiter: Installer
) -> None:
    clock = Clock()
    install_limiter(web, clock, per_address=3)
    client = client_from(web, "10.0.0.1")
    for n in range(3):
        response = client.post("/ui/login", data={"token": f"guess-{n}"}, headers=ORIGIN)
        assert response.status_code == 401
    response = client.post("/ui/login", data={"token": web.admin_token}, headers=ORIGIN)
    assert response.status_code == 429


def test_the_refusal_is_in_the_pages_language(web: WebApp, install_limiter: Installer) -> None:
    clock = Clock()
    install_limiter(web, clock, per_account=1)
    client = client_from(web, "10.0.0.1", language="vi")
    assert attempt(client, "admin", "wrong") == 401
    refused = client.post(
        "/ui/login", data={"username": "admin", "password": PASSWORD}, headers=ORIGIN
    )
    assert refused.status_code == 429
    assert "Đăng nhập sai quá nhiều lần" in refused.text
    assert "Too many failed logins" not in refused.text


def test_memory_stays_bounded_when_names_and_addresses_rotate(
    web: WebApp, install_limiter: Installer
) -> None:
    clock = Clock()
    # A small cap: three times as many names as it holds exercise the same eviction as
    # thousands would, in a fraction of the logins.
    limiter = install_limiter(web, clock, max_entries=10, per_address=1000)
    client = client_from(web, "10.0.0.1")
    for n in range(30):
        assert attempt(client, f"random-{n}", "x") == 401
    assert limiter.tracked() <= 2 * 10
    # The newest entries are the ones kept.
    for _ in range(4):
        assert attempt(client, "random-29", "x") == 401
    assert attempt(client, "random-29", "x") == 429


def test_refusals_are_counted_by_reason() -> None:
    clock = Clock()
    registry = CollectorRegistry(auto_describe=False)
    limiter = LoginLimiter(
        per_account=2, per_address=100, window_s=60, lockout_s=60, clock=clock, max_entries=100
    )
    limiter.expose_in(registry)
    limiter.expose_in(registry)  # idempotent
    for n in range(2):
        started = limiter.attempt("admin", "10.0.0.1")
        assert isinstance(started, LoginAttempt), n
        limiter.failed(started, reason="bad_password")
    assert isinstance(limiter.attempt("admin", "10.0.0.1"), Refusal)
    metric = "campuswatch_web_login_refused_total"
    assert registry.get_sample_value(metric, {"reason": "bad_password"}) == 2
    assert registry.get_sample_value(metric, {"reason": "rate_limited"}) == 1
    lockouts = "campuswatch_web_login_lockouts_total"
    assert registry.get_sample_value(lockouts, {"key": "account"}) == 1


def test_the_live_app_exposes_the_login_metric(web: WebApp) -> None:
    registry = CollectorRegistry(auto_describe=False)
    web.context.registry = registry
    client = client_from(web, "10.0.0.1")
    assert attempt(client, "admin", "wrong") == 401
    value = registry.get_sample_value(
        "campuswatch_web_login_refused_total", {"reason": "bad_password"}
    )
    assert value == 1


@contextmanager
def served(web: WebApp, trusted_proxies: list[str]) -> Iterator[str]:
    """The app behind uvicorn configured as ``campuswatch collector run`` configures it."""
    settings = CollectorSettings(trusted_proxies=trusted_proxies)
    config = http_server_config(web.app, settings, "127.0.0.1", free_port())
    with served_app(web.app, config) as base:
        yield base


def login_as(base: str, username: str, password: str, forwarded_for: str) -> int:
    response = httpx.post(
        f"{base}/ui/login",
        data={"username": username, "password": password},
        headers={"Origin": base, "X-Forwarded-For": forwarded_for},
        follow_redirects=False,
    )
    return response.status_code


def test_forwarded_for_is_believed_only_from_a_trusted_proxy(
    web: WebApp, install_limiter: Installer
) -> None:
    clock = Clock()
    install_limiter(web, clock, per_address=2)
    with served(web, trusted_proxies=["127.0.0.1"]) as base:
        # Behind the proxy each client has its own counter.
        assert login_as(base, "ghost1", "x", forwarded_for="203.0.113.5") == 401
        assert login_as(base, "ghost2", "x", forwarded_for="203.0.113.5") == 401
        assert login_as(base, "viewer", PASSWORD, forwarded_for="203.0.113.5") == 429
        assert login_as(base, "viewer", PASSWORD, forwarded_for="203.0.113.6") == 303


def test_forwarded_for_from_anyone_else_is_ignored(web: WebApp, install_limiter: Installer) -> None:
    clock = Clock()
    install_limiter(web, clock, per_address=2)
    with served(web, trusted_proxies=[]) as base:
        # A guesser cannot dodge the address limit by inventing a new X-Forwarded-For.
        assert login_as(base, "ghost1", "x", forwarded_for="203.0.113.5") == 401
        assert login_as(base, "ghost2", "x", forwarded_for="203.0.113.6") == 401
        assert login_as(base, "viewer", PASSWORD, forwarded_for="203.0.113.7") == 429


# The race needs checks that take time, as the product's do.
@pytest.mark.usefixtures("production_password_cost")
def test_parallel_guesses_get_no_more_tries_than_sequential_ones(
    web: WebApp, install_limiter: Installer
) -> None:
    """Twenty wrong passwords at once: checking a password takes time, and each request
    must not find the account unlocked only because the others have not failed yet."""
    clock = Clock()
    install_limiter(web, clock, per_account=5)
    start = threading.Barrier(20)

    def guess(n: int) -> int:
        client = client_from(web, f"10.0.1.{n}")
        start.wait()
        return attempt(client, "admin", f"guess-{n}")

    with ThreadPoolExecutor(max_workers=20) as pool:
        codes = list(pool.map(guess, range(20)))
    assert sorted(codes) == [401] * 5 + [429] * 15


def test_an_attempt_in_flight_is_counted_until_it_ends() -> None:
    clock = Clock()
    limiter = LoginLimiter(
        per_account=2, per_address=100, window_s=60, lockout_s=60, clock=clock, max_entries=100
    )
    first = limiter.attempt("admin", "10.0.0.1")
    second = limiter.attempt("admin", "10.0.0.2")
    assert isinstance(first, LoginAttempt) and isinstance(second, LoginAttempt)
    assert isinstance(limiter.attempt("admin", "10.0.0.3"), Refusal)
    limiter.succeeded(first)  # a right password frees its place at once
    third = limiter.attempt("admin", "10.0.0.3")
    assert isinstance(third, LoginAttempt)
    limiter.failed(second, reason="bad_password")
    limiter.failed(third, reason="bad_password")
    assert isinstance(limiter.attempt("admin", "10.0.0.4"), Refusal)
    clock.now += 61
    assert isinstance(limiter.attempt("admin", "10.0.0.4"), LoginAttempt)
