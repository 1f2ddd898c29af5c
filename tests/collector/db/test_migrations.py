from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect, text

from campuswatch.collector.db.engine import (
    current_revision,
    head_revision,
    make_engine,
    session_factory,
    upgrade,
)
from campuswatch.collector.db.models import Base, Site


def test_upgrade_creates_schema_that_matches_the_models(db_url: str) -> None:
    upgrade(db_url)
    engine = make_engine(db_url)
    try:
        assert current_revision(engine) == head_revision()
        with engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={"compare_type": True})
            diff = compare_metadata(context, Base.metadata)
        assert diff == []
        tables = set(inspect(engine).get_table_names())
        assert {"sites", "assets", "asset_macs", "asset_history", "devices"} <= tables
        assert {"processed_messages", "dead_letters", "api_tokens", "users"} <= tables
    finally:
        engine.dispose()


def test_upgrade_twice_is_harmless(db_url: str) -> None:
    upgrade(db_url)
    upgrade(db_url)
    engine = make_engine(db_url)
    try:
        assert current_revision(engine) == head_revision()
    finally:
        engine.dispose()


def test_times_come_back_as_utc_aware(db_url: str) -> None:
    upgrade(db_url)
    engine = make_engine(db_url)
    hanoi = timezone(timedelta(hours=7))
    try:
        with session_factory(engine)() as session:
            site = Site(id="hcm", level="province", name="TP. Hồ Chí Minh")
            site.created_at = datetime(2025, 1, 2, 8, 0, tzinfo=hanoi)
            session.add(site)
            session.commit()
        with session_factory(engine)() as session:
            loaded = session.get(Site, "hcm")
            assert loaded is not None
            assert loaded.name == "TP. Hồ Chí Minh"
            assert loaded.created_at == datetime(2025, 1, 2, 1, 0, tzinfo=UTC)
            assert loaded.created_at.utcoffset() == timedelta(0)
    finally:
        engine.dispose()


def test_naive_datetime_is_refused(sqlite_url: str) -> None:
    upgrade(sqlite_url)
    engine = make_engine(sqlite_url)
    try:
        with session_factory(engine)() as session:
            site = Site(id="x", level="school", name="x")
            site.created_at = datetime(2025, 1, 1)
            session.add(site)
            with pytest.raises(Exception, match="naive datetime"):
                session.commit()
    finally:
        engine.dispose()


def test_sqlite_pragmas_are_set(sqlite_url: str) -> None:
    engine = make_engine(sqlite_url)
    try:
        with engine.connect() as connection:
            assert connection.execute(text("PRAGMA journal_mode")).scalar() == "wal"
            assert connection.execute(text("PRAGMA foreign_keys")).scalar() == 1
            assert connection.execute(text("PRAGMA busy_timeout")).scalar() == 5000
    finally:
        engine.dispose()


def test_sqlite_folder_is_created(tmp_path: object) -> None:
    from pathlib import Path

    assert isinstance(tmp_path, Path)
    url = f"sqlite:///{tmp_path / 'nested' / 'data' / 'register.db'}"
    upgrade(url)
    assert (tmp_path / "nested" / "data" / "register.db").exists()
