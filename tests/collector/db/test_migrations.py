from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect, text

from campuswatch.collector.db.engine import (
    alembic_config,
    current_revision,
    head_revision,
    make_engine,
    session_factory,
    upgrade,
)
from campuswatch.collector.db.models import Base, Device, Site


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


def test_device_latest_migration_carries_state_over_and_back(db_url: str) -> None:
    """0006 moves devices.latest / last_message_at into device_latest rows; downgrade folds
    them back, so an upgrade can be undone without losing a device's state."""
    upgrade(db_url, "0005_asset_ignored")
    engine = make_engine(db_url)
    latest = {
        "av": {"ts": "2026-11-20T08:00:00.5+07:00", "status": "protected"},
        "health": {"ts": "2026-11-20T01:30:00Z", "cpu_pct": 12.5},
        "weird": "not an object",
    }
    received = {"av": "2026-11-20T01:00:01+00:00"}
    try:
        with session_factory(engine)() as session:
            session.add(Site(id="s", level="school", name="S"))  # sites are the same at 0005
            session.commit()
        with engine.begin() as connection:
            connection.execute(
                text(
                    "INSERT INTO devices (device_id, site_id, last_seen, latest, last_message_at)"
                    " VALUES ('pc-1', 's', :seen, :latest, :received)"
                ),
                {
                    "seen": datetime(2026, 11, 20, 1, 40, tzinfo=UTC),
                    "latest": json.dumps(latest),
                    "received": json.dumps(received),
                },
            )
        upgrade(engine)
        with session_factory(engine)() as session:
            device = session.get_one(Device, "pc-1")
            assert device.latest == {k: v for k, v in latest.items() if k != "weird"}
            rows = {row.kind: row for row in device.latest_messages}
            assert rows["av"].ts == datetime(2026, 11, 20, 1, 0, 0, 500000, tzinfo=UTC)
            assert rows["av"].received_at == datetime(2026, 11, 20, 1, 0, 1, tzinfo=UTC)
            # No receive time recorded: the device's last sighting stands in.
            assert rows["health"].received_at == datetime(2026, 11, 20, 1, 40, tzinfo=UTC)
        upgrade_or_downgrade = alembic_config()
        with engine.begin() as connection:
            upgrade_or_downgrade.attributes["connection"] = connection
            command.downgrade(upgrade_or_downgrade, "0005_asset_ignored")
        with engine.connect() as connection:
            restored_latest, restored_received = connection.execute(
                text("SELECT latest, last_message_at FROM devices WHERE device_id = 'pc-1'")
            ).one()
        as_json = [
            v if isinstance(v, dict) else json.loads(v)
            for v in (restored_latest, restored_received)
        ]
        assert as_json[0] == {k: v for k, v in latest.items() if k != "weird"}
        assert set(as_json[1]) == {"av", "health"}
        assert datetime.fromisoformat(as_json[1]["av"]) == datetime(
            2026, 11, 20, 1, 0, 1, tzinfo=UTC
        )
    finally:
        engine.dispose()
