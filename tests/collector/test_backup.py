"""A backup restored into an empty instance holds exactly what was saved."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from campuswatch.collector.backup import BackupError, create_backup, restore_backup
from campuswatch.collector.db.engine import make_engine, session_factory, upgrade
from campuswatch.collector.register.assets import create_asset, ensure_site
from tests.support.postgres import temporary_postgres_database


def fill(db_url: str) -> None:
    engine = make_engine(db_url)
    upgrade(engine)
    with session_factory(engine)() as session, session.begin():
        ensure_site(session, "hcm-q1-thcs-a")
        for n in range(25):
            create_asset(
                session,
                {
                    "kind": "projector",
                    "name": f"Máy chiếu {n}",
                    "serial": f"EPS-{n:04d}",
                    "site_id": "hcm-q1-thcs-a",
                },
                "user:facilities",
            )
    engine.dispose()


def dump_rows(db_url: str) -> list[tuple[object, ...]]:
    engine = create_engine(db_url)
    with engine.connect() as connection:
        rows = connection.execute(text("SELECT id, name, serial FROM assets ORDER BY id")).all()
    engine.dispose()
    return [tuple(row) for row in rows]


def test_sqlite_backup_restores_into_an_empty_instance(tmp_path: Path) -> None:
    source = f"sqlite:///{tmp_path / 'source.db'}"
    fill(source)
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "av.yaml").write_text("title: test\n", encoding="utf-8")
    archive = tmp_path / "backup.tar.gz"
    result = create_backup(source, archive, rules_dir=rules)
    assert result.tables["assets"] == 25
    target = f"sqlite:///{tmp_path / 'restored' / 'register.db'}"
    restored_rules = tmp_path / "restored-rules"
    counts = restore_backup(archive, target, rules_dir=restored_rules)
    assert counts == result.tables
    assert dump_rows(target) == dump_rows(source)
    assert (restored_rules / "av.yaml").read_text(encoding="utf-8") == "title: test\n"
    with pytest.raises(BackupError, match="not empty"):
        restore_backup(archive, target)


@pytest.mark.e2e
def test_postgresql_backup_restores_into_an_empty_database(tmp_path: Path) -> None:
    with temporary_postgres_database() as source, temporary_postgres_database() as target:
        fill(source)
        archive = tmp_path / "pg.tar.gz"
        result = create_backup(source, archive)
        counts = restore_backup(archive, target)
        assert counts == result.tables
        assert dump_rows(target) == dump_rows(source)


def test_garbage_archive_is_a_clear_error(tmp_path: Path) -> None:
    bogus = tmp_path / "bogus.tar.gz"
    bogus.write_bytes(b"not a tarball")
    with pytest.raises(BackupError, match="not a CampusWatch backup"):
        restore_backup(bogus, f"sqlite:///{tmp_path / 'x.db'}")


def test_cli_round_trip(tmp_path: Path) -> None:
    source_dir = tmp_path / "data"
    fill(f"sqlite:///{source_dir / 'register.db'}")
    run = [sys.executable, "-m", "campuswatch"]
    archive = tmp_path / "cli.tar.gz"
    subprocess.run(
        [*run, "backup", "--to", str(archive), "--data-dir", str(source_dir)],
        check=True,
        timeout=120,
    )
    restored = subprocess.run(
        [*run, "restore", "--from", str(archive), "--data-dir", str(tmp_path / "new")],
        check=True,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert "counts verified" in restored.stdout
