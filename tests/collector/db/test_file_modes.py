"""The SQLite register holds password hashes and token hashes: owner-only, whatever the umask."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy import text

from campuswatch.collector.db.engine import make_engine, upgrade


@contextmanager
def umask(value: int) -> Iterator[None]:
    previous = os.umask(value)
    try:
        yield
    finally:
        os.umask(previous)


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.parametrize("mask", [0o022, 0o000], ids=["umask-022", "umask-000"])
def test_a_new_register_and_its_wal_files_are_owner_only(tmp_path: Path, mask: int) -> None:
    database = tmp_path / "data" / "register.db"
    with umask(mask):
        engine = make_engine(f"sqlite:///{database}")
        upgrade(engine)
        with engine.connect() as connection:
            connection.execute(text("SELECT 1")).all()
            siblings = {
                path.name: mode_of(path) for path in database.parent.iterdir()
            }  # while a connection is open, -wal and -shm exist
        engine.dispose()
    assert {"register.db", "register.db-wal", "register.db-shm"} <= set(siblings)
    assert set(siblings.values()) == {0o600}, siblings


def test_an_existing_world_readable_register_is_narrowed(tmp_path: Path) -> None:
    database = tmp_path / "register.db"
    upgrade(f"sqlite:///{database}")
    database.chmod(0o644)
    engine = make_engine(f"sqlite:///{database}")
    engine.dispose()
    assert mode_of(database) == 0o600


def test_a_group_readable_register_set_by_the_admin_stays_so(tmp_path: Path) -> None:
    database = tmp_path / "register.db"
    upgrade(f"sqlite:///{database}")
    database.chmod(0o640)  # a backup or monitoring group reads it on purpose
    make_engine(f"sqlite:///{database}").dispose()
    assert mode_of(database) == 0o640
