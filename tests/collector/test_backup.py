"""A backup restored into an empty instance holds exactly what was saved."""

from __future__ import annotations

import contextlib
import io
import json
import os
import stat
import subprocess
import sys
import tarfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from campuswatch.collector.backup import (
    REGISTER_SQLITE,
    BackupError,
    _pg_args,
    create_backup,
    restore_backup,
)
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


# --- file modes -------------------------------------------------------------------------------


@contextlib.contextmanager
def umask(value: int) -> Iterator[None]:
    previous = os.umask(value)
    try:
        yield
    finally:
        os.umask(previous)


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.parametrize("mask", [0o022, 0o000], ids=["umask-022", "umask-000"])
def test_backups_and_restored_registers_are_private_whatever_the_umask(
    tmp_path: Path, mask: int
) -> None:
    source = f"sqlite:///{tmp_path / 'source.db'}"
    fill(source)
    with umask(mask):
        archive = tmp_path / "backups" / "backup.tar.gz"
        create_backup(source, archive)
        target = tmp_path / "restored" / "register.db"
        restore_backup(archive, f"sqlite:///{target}")
    assert mode_of(archive) == 0o600  # it holds password hashes and tokens
    assert mode_of(target) == 0o600
    assert not list(archive.parent.glob("*.partial"))


# --- restore: check first, then swap -----------------------------------------------------------


def rewrite_archive(archive: Path, change: Callable[[str, bytes], bytes]) -> None:
    """Rebuild ``archive`` with each member's bytes passed through ``change``."""
    members: list[tuple[tarfile.TarInfo, bytes | None]] = []
    with tarfile.open(archive, "r:gz") as reader:
        for info in reader.getmembers():
            handle = reader.extractfile(info)
            members.append((info, handle.read() if handle is not None else None))
    with tarfile.open(archive, "w:gz") as writer:
        for info, data in members:
            if data is None:
                writer.addfile(info)
                continue
            data = change(info.name, data)
            info.size = len(data)
            writer.addfile(info, io.BytesIO(data))


def corrupt_register(name: str, data: bytes) -> bytes:
    if name != REGISTER_SQLITE:
        return data
    middle = len(data) // 2
    flipped = bytes(byte ^ 0xFF for byte in data[middle : middle + 4096])
    return data[:middle] + flipped + data[middle + 4096 :]


def understate_assets(name: str, data: bytes) -> bytes:
    if name != "manifest.json":
        return data
    manifest = json.loads(data)
    manifest["tables"]["assets"] -= 1
    return json.dumps(manifest).encode()


def snapshot(directory: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(directory.iterdir())}


@pytest.fixture
def backup_and_live_register(tmp_path: Path) -> tuple[Path, Path]:
    """A backup of one register, and another live register (different rows) to restore over."""
    source = f"sqlite:///{tmp_path / 'source.db'}"
    fill(source)
    archive = tmp_path / "backup.tar.gz"
    create_backup(source, archive)
    live = tmp_path / "live" / "register.db"
    fill(f"sqlite:///{live}")
    engine = create_engine(f"sqlite:///{live}")
    with engine.begin() as connection:
        connection.execute(text("UPDATE assets SET name = 'live ' || name"))
    engine.dispose()
    return archive, live


@pytest.mark.parametrize(
    ("change", "refusal"),
    [(corrupt_register, "damaged|unreadable"), (understate_assets, "assets")],
    ids=["corrupt-register", "manifest-counts-disagree"],
)
def test_a_bad_backup_is_refused_and_the_live_register_is_left_as_it_was(
    backup_and_live_register: tuple[Path, Path],
    change: Callable[[str, bytes], bytes],
    refusal: str,
) -> None:
    archive, live = backup_and_live_register
    rewrite_archive(archive, change)
    url = f"sqlite:///{live}"
    before_rows = dump_rows(url)
    before_files = snapshot(live.parent)
    with pytest.raises(BackupError, match=refusal):
        restore_backup(archive, url, force=True)
    assert snapshot(live.parent) == before_files  # no half-restored file, no leftovers
    assert dump_rows(url) == before_rows


def test_a_good_backup_replaces_the_live_register_whole(
    backup_and_live_register: tuple[Path, Path], tmp_path: Path
) -> None:
    archive, live = backup_and_live_register
    url = f"sqlite:///{live}"
    # A collector still running on the live register (WAL mode, its log open): restoring
    # under it would let its write-ahead log be replayed onto the restored file.
    engine = make_engine(url)
    with engine.begin() as connection:
        connection.execute(text("UPDATE assets SET serial = serial || '-live'"))
    before = dump_rows(url)
    with pytest.raises(BackupError, match="in use"):
        restore_backup(archive, url, force=True)
    assert dump_rows(url) == before
    engine.dispose()
    counts = restore_backup(archive, url, force=True)
    assert counts["assets"] == 25
    assert dump_rows(url) == dump_rows(f"sqlite:///{tmp_path / 'source.db'}")
    assert sorted(path.name for path in live.parent.iterdir()) == ["register.db"]


def test_restore_refuses_an_archive_with_a_malformed_manifest(tmp_path: Path) -> None:
    source = f"sqlite:///{tmp_path / 'source.db'}"
    fill(source)
    archive = tmp_path / "backup.tar.gz"
    create_backup(source, archive)

    def break_tables(name: str, data: bytes) -> bytes:
        if name != "manifest.json":
            return data
        manifest = json.loads(data)
        manifest["tables"] = ["assets"]
        return json.dumps(manifest).encode()

    rewrite_archive(archive, break_tables)
    with pytest.raises(BackupError, match="manifest"):
        restore_backup(archive, f"sqlite:///{tmp_path / 'new.db'}")
    assert not (tmp_path / "new.db").exists()


def test_cli_reports_a_failed_restore_in_one_line(
    backup_and_live_register: tuple[Path, Path],
) -> None:
    archive, live = backup_and_live_register
    rewrite_archive(archive, corrupt_register)
    result = subprocess.run(
        [sys.executable, "-m", "campuswatch", "restore", "--from", str(archive),
         "--db", f"sqlite:///{live}", "--force"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "counts verified" not in result.stdout


@pytest.mark.e2e
def test_postgresql_restore_with_wrong_counts_leaves_the_database_as_it_was(
    tmp_path: Path,
) -> None:
    with temporary_postgres_database() as source, temporary_postgres_database() as target:
        fill(source)
        archive = tmp_path / "pg.tar.gz"
        create_backup(source, archive)
        fill(target)
        engine = create_engine(target)
        with engine.begin() as connection:
            connection.execute(text("UPDATE assets SET name = 'live ' || name"))
        engine.dispose()
        before = dump_rows(target)
        rewrite_archive(archive, understate_assets)
        with pytest.raises(BackupError, match="assets"):
            restore_backup(archive, target, force=True)
        assert dump_rows(target) == before


def test_backing_up_a_missing_register_is_an_error_and_creates_nothing(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "register.db"
    with pytest.raises(BackupError, match="no register"):
        create_backup(f"sqlite:///{missing}", tmp_path / "backup.tar.gz")
    assert not missing.exists() and not (tmp_path / "backup.tar.gz").exists()


def test_pg_tools_get_the_register_url_as_written() -> None:
    """A Unix-socket URL (peer authentication, as the deploy guide sets it up) must reach
    pg_dump/psql as the socket, not as TCP to 127.0.0.1 where peer auth does not apply."""
    socket_args, _ = _pg_args("postgresql+psycopg:///campuswatch")
    assert "--host" not in socket_args and "--port" not in socket_args
    assert socket_args[-2:] == ["--dbname", "campuswatch"]
    in_query, _ = _pg_args("postgresql+psycopg:///campuswatch?host=/run/postgresql")
    assert in_query[:2] == ["--host", "/run/postgresql"]
    tcp, env = _pg_args("postgresql+psycopg://cw:s3cret@db.school.vn:5433/register")
    assert tcp[:6] == ["--host", "db.school.vn", "--port", "5433", "--username", "cw"]
    assert env["PGPASSWORD"] == "s3cret"
