"""A running collector against the test's private broker, with an API client."""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from campuswatch.collector.api.app import create_app
from campuswatch.collector.db.access import _SCRYPT_N as PRODUCT_SCRYPT_N
from campuswatch.collector.service import CollectorService
from campuswatch.collector.settings import CollectorSettings
from tests.support.mosquitto import MosquittoBroker

ADMIN_TOKEN = "test-admin-" + secrets.token_urlsafe(16)

TEST_SCRYPT_N = 2**10
"""The scrypt cost tests hash passwords at: 2.5 ms a hash instead of the product's 60 ms."""


def _use_scrypt_cost(monkeypatch: pytest.MonkeyPatch, n: int) -> None:
    """New password hashes, and the dummy hash an unknown user's password is checked
    against, at cost ``n``. A hash carries its own parameters, so verifying runs the same
    code at any cost."""
    from campuswatch.collector.db import access
    from campuswatch.collector.web import auth

    monkeypatch.setattr(access, "_SCRYPT_N", n)
    monkeypatch.setattr(auth, "_DUMMY_PASSWORD_HASH", access.hash_password("dummy"))


@pytest.fixture(autouse=True, scope="session")
def cheap_password_hashing() -> Iterator[None]:
    """The product hashes UI passwords at the OWASP floor (scrypt n=2**14, ~60 ms); tests
    seed users and log in thousands of times, so they hash at TEST_SCRYPT_N. The product's
    cost is checked by tests/collector/test_password_cost.py, and the tests that race
    logins, which need a check that takes time, ask for ``production_password_cost``."""
    patch = pytest.MonkeyPatch()
    _use_scrypt_cost(patch, TEST_SCRYPT_N)
    yield
    patch.undo()


@pytest.fixture
def production_password_cost(cheap_password_hashing: None) -> Iterator[None]:
    """Passwords hashed and checked at the product's own cost for one test."""
    patch = pytest.MonkeyPatch()
    _use_scrypt_cost(patch, PRODUCT_SCRYPT_N)
    yield
    patch.undo()


class RunningCollector:
    def __init__(self, service: CollectorService) -> None:
        self.service = service
        self.api = TestClient(create_app(service.api_context))
        self.api.headers["Authorization"] = f"Bearer {ADMIN_TOKEN}"

    def get(self, path: str, **params: Any) -> Any:
        response = self.api.get(path, params=params)
        assert response.status_code == 200, response.text
        return response.json()


CollectorFactory = Callable[..., RunningCollector]


@contextlib.contextmanager
def collectors_on(broker_url: str, tmp_path: Path) -> Iterator[CollectorFactory]:
    """A factory of in-process collectors on ``broker_url``, all stopped at the end."""
    started: list[CollectorService] = []

    def start(**overrides: Any) -> RunningCollector:
        values: dict[str, Any] = {
            "broker": broker_url,
            "data_dir": tmp_path / f"collector-{len(started)}",
            "admin_token": ADMIN_TOKEN,
            "batch_wait_s": 0.02,
            **overrides,
        }
        settings = CollectorSettings(**values)
        service = CollectorService(settings)
        service.start()
        assert service.ingestor.connection.wait_connected(10)
        started.append(service)
        return RunningCollector(service)

    try:
        yield start
    finally:
        for service in started:
            service.stop()


@pytest.fixture
def collector_factory(mosquitto: MosquittoBroker, tmp_path: Path) -> Iterator[CollectorFactory]:
    with collectors_on(mosquitto.url, tmp_path) as start:
        yield start


@pytest.fixture
def collector(collector_factory: CollectorFactory) -> RunningCollector:
    return collector_factory()
