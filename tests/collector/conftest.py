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
from campuswatch.collector.service import CollectorService
from campuswatch.collector.settings import CollectorSettings
from tests.support.mosquitto import MosquittoBroker

ADMIN_TOKEN = "test-admin-" + secrets.token_urlsafe(16)


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
