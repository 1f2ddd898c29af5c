"""Backup and restore of what cannot be re-learned from devices: register, alerts, rules, config.

SQLite registers are copied with SQLite's online backup API (consistent while the collector
runs); PostgreSQL with ``pg_dump --format=custom`` and restored with ``pg_restore``. The
archive is a tar.gz with a manifest listing each table's row count, so a restore can prove
it brought back what was saved. Time series are not included: they have their own
retention and backup tooling (VictoriaMetrics snapshots, influxd backup).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import sqlite3
import subprocess
import tarfile
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, inspect, text
from sqlalchemy.engine import make_url

from campuswatch import __version__

FORMAT_VERSION = 1
REGISTER_SQLITE = "register.sqlite"
REGISTER_PG = "register.pgdump"


class BackupError(RuntimeError):
    pass


@dataclass(frozen=True)
class BackupResult:
    path: Path
    tables: dict[str, int]
    sha256: str


def table_counts(db_url: str) -> dict[str, int]:
    engine = create_engine(db_url)
    try:
        with engine.connect() as connection:
            names = sorted(inspect(connection).get_table_names())
            return {
                name: int(connection.execute(text(f'SELECT COUNT(*) FROM "{name}"')).scalar_one())
                for name in names
            }
    finally:
        engine.dispose()


def _pg_args(db_url: str) -> tuple[list[str], dict[str, str]]:
    url = make_url(db_url)
    args = ["--host", url.host or "127.0.0.1", "--port", str(url.port or 5432)]
    if url.username:
        args += ["--username", url.username]
    env = dict(os.environ)
    if url.password:
        env["PGPASSWORD"] = url.password
    return [*args, "--dbname", url.database or "postgres"], env


def create_backup(
    db_url: str,
    destination: Path,
    *,
    rules_dir: Path | None = None,
    config_files: Sequence[Path] = (),
) -> BackupResult:
    """Write a backup archive; ``destination`` is a file path (``.tar.gz``)."""
    destination.parent.mkdir(parents=True, exist_ok=True)
    url = make_url(db_url)
    counts = table_counts(db_url)
    with tempfile.TemporaryDirectory(prefix="cw-backup-") as work_text:
        work = Path(work_text)
        if url.get_backend_name() == "sqlite":
            source_path = url.database
            if not source_path:
                raise BackupError("in-memory SQLite databases cannot be backed up")
            with (
                sqlite3.connect(source_path) as source,
                sqlite3.connect(work / REGISTER_SQLITE) as copy,
            ):
                source.backup(copy)
            register_name = REGISTER_SQLITE
        elif url.get_backend_name() == "postgresql":
            pg_dump = shutil.which("pg_dump")
            if pg_dump is None:
                raise BackupError("pg_dump is not installed (Debian postgresql-client)")
            args, env = _pg_args(db_url)
            result = subprocess.run(
                [
                    pg_dump,
                    "--format=custom",
                    "--no-owner",
                    "--file",
                    str(work / REGISTER_PG),
                    *args,
                ],
                capture_output=True,
                text=True,
                env=env,
                timeout=3600,
            )
            if result.returncode != 0:
                raise BackupError(f"pg_dump failed: {result.stderr.strip()[:500]}")
            register_name = REGISTER_PG
        else:
            raise BackupError(f"unsupported database {url.get_backend_name()!r}")
        manifest: dict[str, Any] = {
            "format": FORMAT_VERSION,
            "campuswatch_version": __version__,
            "created_at": datetime.now(UTC).isoformat(),
            "database": url.get_backend_name(),
            "register": register_name,
            "tables": counts,
            "rules": rules_dir is not None and rules_dir.is_dir(),
            "config": [path.name for path in config_files],
        }
        temporary = destination.with_suffix(destination.suffix + ".partial")
        with tarfile.open(temporary, "w:gz") as archive:
            data = json.dumps(manifest, indent=2).encode()
            info = tarfile.TarInfo("manifest.json")
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
            archive.add(work / register_name, arcname=register_name)
            if rules_dir is not None and rules_dir.is_dir():
                archive.add(rules_dir, arcname="rules")
            for path in config_files:
                archive.add(path, arcname=f"config/{path.name}")
        os.replace(temporary, destination)
    digest = hashlib.sha256(destination.read_bytes()).hexdigest()
    return BackupResult(destination, counts, digest)


def read_manifest(archive_path: Path) -> dict[str, Any]:
    try:
        with tarfile.open(archive_path, "r:gz") as archive:
            member = archive.extractfile("manifest.json")
            if member is None:
                raise BackupError("manifest.json missing")
            manifest: dict[str, Any] = json.loads(member.read())
    except (tarfile.TarError, KeyError, OSError, ValueError) as exc:
        raise BackupError(f"{archive_path} is not a CampusWatch backup: {exc}") from None
    if manifest.get("format") != FORMAT_VERSION:
        raise BackupError(f"unsupported backup format {manifest.get('format')!r}")
    return manifest


def _is_empty(db_url: str) -> bool:
    counts = table_counts(db_url)
    return all(count == 0 for name, count in counts.items() if name != "alembic_version")


def restore_backup(
    archive_path: Path,
    db_url: str,
    *,
    rules_dir: Path | None = None,
    force: bool = False,
) -> dict[str, int]:
    """Restore into ``db_url``; refuses a database that already holds data unless ``force``.

    Returns the restored table counts, checked against the manifest.
    """
    manifest = read_manifest(archive_path)
    url = make_url(db_url)
    if url.get_backend_name() != manifest["database"]:
        raise BackupError(
            f"backup holds a {manifest['database']} register; restore it into the same kind "
            f"(got {url.get_backend_name()})"
        )
    if url.get_backend_name() == "sqlite" and url.database:
        Path(url.database).parent.mkdir(parents=True, exist_ok=True)
    if not force and not _is_empty(db_url):
        raise BackupError("the target database is not empty; use --force to overwrite it")
    with tempfile.TemporaryDirectory(prefix="cw-restore-") as work_text:
        work = Path(work_text)
        with tarfile.open(archive_path, "r:gz") as archive:
            archive.extractall(work, filter="data")
        if manifest["register"] == REGISTER_SQLITE:
            target = url.database
            if not target:
                raise BackupError("cannot restore into an in-memory SQLite database")
            Path(target).parent.mkdir(parents=True, exist_ok=True)
            with sqlite3.connect(work / REGISTER_SQLITE) as source, sqlite3.connect(target) as copy:
                source.backup(copy)
        else:
            pg_restore = shutil.which("pg_restore")
            if pg_restore is None:
                raise BackupError("pg_restore is not installed (Debian postgresql-client)")
            args, env = _pg_args(db_url)
            result = subprocess.run(
                [
                    pg_restore,
                    "--clean",
                    "--if-exists",
                    "--no-owner",
                    *args,
                    str(work / REGISTER_PG),
                ],
                capture_output=True,
                text=True,
                env=env,
                timeout=3600,
            )
            if result.returncode != 0:
                raise BackupError(f"pg_restore failed: {result.stderr.strip()[:500]}")
        if rules_dir is not None and (work / "rules").is_dir():
            shutil.copytree(work / "rules", rules_dir, dirs_exist_ok=True)
    restored = table_counts(db_url)
    expected: dict[str, int] = manifest["tables"]
    missing = {name: count for name, count in expected.items() if restored.get(name) != count}
    if missing:
        raise BackupError(f"restore incomplete: tables differ from the manifest: {missing}")
    return restored


def rotate_backups(directory: Path, keep: int) -> list[Path]:
    """Delete all but the newest ``keep`` backups in ``directory``; return what was deleted."""
    backups = sorted(directory.glob("campuswatch-*.tar.gz"))
    doomed = backups[:-keep] if keep > 0 else backups
    for path in doomed:
        path.unlink()
    return doomed


def backup_file_name(now: datetime | None = None) -> str:
    moment = (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%SZ")
    return f"campuswatch-{moment}.tar.gz"
