"""PostgreSQL fixtures: a throw-away database on the local server (127.0.0.1:5432, trust auth).

``postgres_url`` is one database per test session; ``fresh_postgres_url`` one per test;
``db_url`` is parametrised over a SQLite file and a fresh PostgreSQL database so register
code is tested on both backends it supports. Without a reachable server the PostgreSQL
cases are skipped with the reason; the SQLite cases still run.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

POSTGRES_HOST = os.environ.get("CW_TEST_POSTGRES_HOST", "127.0.0.1")
POSTGRES_PORT = int(os.environ.get("CW_TEST_POSTGRES_PORT", "5432"))
POSTGRES_USER = os.environ.get("CW_TEST_POSTGRES_USER", "postgres")


def _admin_connect() -> object:
    import psycopg

    return psycopg.connect(
        host=POSTGRES_HOST,
        port=POSTGRES_PORT,
        user=POSTGRES_USER,
        dbname="postgres",
        autocommit=True,
        connect_timeout=3,
    )


def postgres_unavailable_reason() -> str | None:
    """None when the server answers, else why not (for ``pytest.skip``)."""
    try:
        import psycopg
    except ImportError:
        return "psycopg is not installed (pip install 'campuswatch[collector]')"
    try:
        connection = _admin_connect()
    except psycopg.Error as exc:
        return f"PostgreSQL not reachable at {POSTGRES_HOST}:{POSTGRES_PORT}: {exc}"
    connection.close()  # type: ignore[attr-defined]
    return None


@contextmanager
def temporary_postgres_database(prefix: str = "cw_test") -> Iterator[str]:
    """Create a database with a random name, yield its SQLAlchemy URL, drop it afterwards."""
    reason = postgres_unavailable_reason()
    if reason is not None:
        pytest.skip(reason)
    name = f"{prefix}_{secrets.token_hex(6)}"
    with _admin_connect() as admin:  # type: ignore[attr-defined]
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql+psycopg://{POSTGRES_USER}@{POSTGRES_HOST}:{POSTGRES_PORT}/{name}"
    finally:
        with _admin_connect() as admin:  # type: ignore[attr-defined]
            # FORCE ends connections a failed test left open (PostgreSQL 13+).
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    with temporary_postgres_database() as url:
        yield url


@pytest.fixture
def fresh_postgres_url() -> Iterator[str]:
    with temporary_postgres_database() as url:
        yield url


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'register.db'}"


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database URL, once per backend; each test gets its own database."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'register.db'}"
        return
    with temporary_postgres_database() as url:
        yield url
