"""Fixtures for the forwarding tests: a migrated register database, receivers, a test PKI."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from campuswatch.collector.db.engine import make_engine, session_factory
from tests.collector.forward.receivers import Pki, WebhookReceiver, make_test_pki
from tests.support.postgres import migrated_sqlite_url


@pytest.fixture
def engine(migrated_db_url: str) -> Iterator[Engine]:
    """The register schema (with the outbox) on SQLite and on PostgreSQL."""
    engine = make_engine(migrated_db_url)
    yield engine
    engine.dispose()


@pytest.fixture
def sqlite_engine(tmp_path: Path) -> Iterator[Engine]:
    engine = make_engine(migrated_sqlite_url(tmp_path / "register.db"))
    yield engine
    engine.dispose()


@pytest.fixture
def sessions(sqlite_engine: Engine) -> sessionmaker[Session]:
    return session_factory(sqlite_engine)


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_test_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def webhook_receiver() -> Iterator[WebhookReceiver]:
    receiver = WebhookReceiver()
    receiver.start()
    yield receiver
    receiver.stop()
