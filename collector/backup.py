"""Backup and restore of what cannot be re-learned from devices: register, alerts, rules, config.

SQLite registers are copied with SQLite's online backup API (consistent while the collector
runs); PostgreSQL with ``pg_dump --format=custom``. The archive is a tar.gz with a manifest
listing each table's row count, written 0600 whatever the umask: it holds users' password
hashes, token hashes and broker passwords. Time series are not included: they have their
own retention and backup tooling (VictoriaMetrics snapshots, influxd backup).

A restore is checked before it replaces anything. SQLite: the saved register is copied
into a temporary file beside the target, checked (``PRAGMA integrity_check``,
``foreign_key_check``, every table's row count against the manifest) and only then moved
over the target in one ``os.replace``. PostgreSQL: ``pg_restore`` turns the dump into SQL
that ``psql`` runs in one transaction ending with the same count check, so a failure rolls
everything back. Either way a failed restore leaves the previous register as it was, and
every failure is a ``BackupError`` with a one-line message.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import re
import secrets
import shutil
import sqlite3
import subprocess
import tarfile
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, inspect, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

from campuswatch import __version__
from campuswatch.collector.db.engine import (
    PRIVATE_FILE_MODE,
    SQLITE_SIDE_FILES,
    create_private_file,
    narrowed_mode,
)

FORMAT_VERSION = 1
REGISTER_SQLITE = "register.sqlite"
REGISTER_PG = "register.pgdump"
REGISTERS = {"sqlite": REGISTER_SQLITE, "postgresql": REGISTER_PG}
TABLE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")
"""Names the register's tables have; the manifest's names end up in a SQL check script."""


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
    args: list[str] = []
    # No host is libpq's default, the Unix socket (peer authentication), as for the
    # collector's own driver; ``?host=/run/postgresql`` names a socket folder.
    query_host = url.query.get("host")
    host = url.host or (query_host if isinstance(query_host, str) else None)
    if host:
        args += ["--host", host]
    if url.port:
        args += ["--port", str(url.port)]
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
    from campuswatch.collector.db.existing import RegisterUnavailable, open_existing_register

    url = make_url(db_url)
    try:
        # Never connects in a way that would create an empty register and back that up; a
        # register it may not read or a server that is down is one line, not a traceback.
        open_existing_register(db_url).dispose()
    except RegisterUnavailable as exc:
        raise BackupError(str(exc)) from None
    destination.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
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
        with (
            _private_output(temporary) as output,
            tarfile.open(fileobj=output, mode="w:gz") as archive,
        ):
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


@contextlib.contextmanager
def _private_output(path: Path) -> Iterator[io.BufferedWriter]:
    """A new file opened for writing as 0600, whatever the umask (not created then chmod-ed:
    no moment where another user could open it)."""
    path.unlink(missing_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE_MODE)
    try:
        os.fchmod(descriptor, PRIVATE_FILE_MODE)
        with os.fdopen(descriptor, "wb") as output:
            descriptor = -1
            yield output
            output.flush()
            os.fsync(output.fileno())
    except BaseException:
        if descriptor >= 0:
            os.close(descriptor)
        path.unlink(missing_ok=True)
        raise


def read_manifest(archive_path: Path) -> dict[str, Any]:
    try:
        with tarfile.open(archive_path, "r:gz") as archive:
            member = archive.extractfile("manifest.json")
            if member is None:
                raise BackupError("manifest.json missing")
            manifest: dict[str, Any] = json.loads(member.read())
    except (tarfile.TarError, KeyError, OSError, ValueError) as exc:
        raise BackupError(f"{archive_path} is not a CampusWatch backup: {exc}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT_VERSION:
        format_ = manifest.get("format") if isinstance(manifest, dict) else None
        raise BackupError(f"unsupported backup format {format_!r}")
    database, tables = manifest.get("database"), manifest.get("tables")
    if database not in REGISTERS or manifest.get("register") != REGISTERS[database]:
        raise BackupError(f"{archive_path}: the manifest names no register this version reads")
    if not isinstance(tables, dict) or not all(
        isinstance(name, str) and TABLE_NAME.fullmatch(name) and type(count) is int and count >= 0
        for name, count in tables.items()
    ):
        raise BackupError(f"{archive_path}: the manifest's table counts are malformed")
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

    Returns the restored table counts, equal to the manifest's. On any failure the target
    is as it was before and a ``BackupError`` says why in one line.
    """
    try:
        return _restore(archive_path, db_url, rules_dir=rules_dir, force=force)
    except BackupError:
        raise
    except (OSError, tarfile.TarError, sqlite3.Error, SQLAlchemyError) as exc:
        raise BackupError(f"restore failed, nothing replaced: {_one_line(exc)}") from None


def _one_line(error: BaseException | str) -> str:
    text_ = str(getattr(error, "orig", None) or error)
    return " ".join(text_.split())[:500] or type(error).__name__


def _restore(
    archive_path: Path, db_url: str, *, rules_dir: Path | None, force: bool
) -> dict[str, int]:
    manifest = read_manifest(archive_path)
    url = make_url(db_url)
    if url.get_backend_name() != manifest["database"]:
        raise BackupError(
            f"backup holds a {manifest['database']} register; restore it into the same kind "
            f"(got {url.get_backend_name()})"
        )
    expected: dict[str, int] = manifest["tables"]
    target: Path | None = None
    if url.get_backend_name() == "sqlite":
        if not url.database or url.database == ":memory:":
            raise BackupError("cannot restore into an in-memory SQLite database")
        target = Path(url.database).expanduser()
        # Checking a missing file would create it: a missing register is an empty one.
        if not force and target.exists() and not _is_empty(db_url):
            raise BackupError("the target database is not empty; use --force to overwrite it")
    elif not force and not _is_empty(db_url):
        raise BackupError("the target database is not empty; use --force to overwrite it")
    with tempfile.TemporaryDirectory(prefix="cw-restore-") as work_text:
        work = Path(work_text)
        with tarfile.open(archive_path, "r:gz") as archive:
            archive.extractall(work, filter="data")
        if not (work / manifest["register"]).is_file():
            raise BackupError(f"{archive_path}: {manifest['register']} missing from the archive")
        if target is not None:
            _restore_sqlite(work / REGISTER_SQLITE, target, expected)
        else:
            _restore_postgresql(work / REGISTER_PG, db_url, expected)
        if rules_dir is not None and (work / "rules").is_dir():
            shutil.copytree(work / "rules", rules_dir, dirs_exist_ok=True)
    return dict(expected)


def _count_differences(found: dict[str, int], expected: dict[str, int]) -> str | None:
    names = sorted(set(found) | set(expected))
    wrong = [
        f"{name}: {found.get(name, 'missing')} rows, manifest {expected.get(name, 'none')}"
        for name in names
        if found.get(name) != expected.get(name)
    ]
    return "; ".join(wrong) if wrong else None


def _sqlite_damage(path: Path) -> str | None:
    """What ``integrity_check`` and ``foreign_key_check`` find wrong, or None."""
    with contextlib.closing(sqlite3.connect(path)) as connection:
        integrity = [str(row[0]) for row in connection.execute("PRAGMA integrity_check")]
        if integrity != ["ok"]:
            return f"integrity check: {'; '.join(integrity[:3])}"
        orphans = connection.execute("PRAGMA foreign_key_check").fetchall()
        if orphans:
            table, rowid, parent, _ = orphans[0]
            first = f"{table} row {rowid} -> {parent}"
            return f"{len(orphans)} rows point at missing rows (first: {first})"
    return None


def _sqlite_side_files(path: Path) -> list[Path]:
    return [Path(f"{path}{suffix}") for suffix in SQLITE_SIDE_FILES]


def _release_write_ahead_log(target: Path) -> None:
    """Fold the live register's write-ahead log into it and drop it, so no log of the old
    database is left to be replayed onto the restored file. Refused while another process
    (the collector) has it open: that process would go on writing to the replaced file."""
    if not target.exists():
        return
    wal = Path(f"{target}-wal")
    in_use = "the register is in use: stop the collector before restoring"
    try:
        with contextlib.closing(sqlite3.connect(target, timeout=1)) as connection:
            mode = connection.execute("PRAGMA journal_mode=DELETE").fetchone()
    except sqlite3.OperationalError as exc:
        if "locked" in str(exc) or "busy" in str(exc):
            raise BackupError(in_use) from None
        if wal.exists():
            raise BackupError(f"cannot fold the register's write-ahead log: {exc}") from None
        return  # a damaged register with no log: replacing it is what the restore is for
    except sqlite3.DatabaseError:
        if wal.exists():
            raise BackupError("cannot fold the damaged register's write-ahead log") from None
        return
    if mode is None or str(mode[0]).lower() != "delete" or wal.exists():
        raise BackupError(in_use)


def _restore_sqlite(saved: Path, target: Path, expected: dict[str, int]) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = target.with_name(f".{target.name}.restore-{secrets.token_hex(4)}")
    try:
        create_private_file(staging)
        if target.exists():
            # Keep an admin's deliberate 0640; anything wider becomes 0600.
            staging.chmod(narrowed_mode(target.stat().st_mode & 0o777))
        try:
            with (
                contextlib.closing(sqlite3.connect(saved)) as source,
                contextlib.closing(sqlite3.connect(staging)) as copy,
            ):
                source.backup(copy)
        except sqlite3.DatabaseError as exc:
            raise BackupError(f"the backup's register is unreadable: {exc}") from None
        try:
            damage = _sqlite_damage(staging)
        except sqlite3.DatabaseError as exc:
            damage = str(exc)
        if damage is not None:
            raise BackupError(f"the backup's register is damaged ({damage}); nothing replaced")
        difference = _count_differences(table_counts(f"sqlite:///{staging}"), expected)
        if difference is not None:
            raise BackupError(f"the backup's register disagrees with its manifest: {difference}")
        _release_write_ahead_log(target)
        os.replace(staging, target)
        with contextlib.suppress(OSError):  # some file systems cannot fsync a directory
            directory = os.open(target.parent, os.O_RDONLY)
            try:
                os.fsync(directory)
            finally:
                os.close(directory)
    finally:
        for leftover in (staging, *_sqlite_side_files(staging)):
            leftover.unlink(missing_ok=True)


def _count_check_sql(expected: dict[str, int]) -> str:
    """A DO block that raises (rolling the restore back) when a table's rows differ."""
    checks = "\n".join(
        f"  SELECT count(*) INTO found FROM {_quote_identifier(name)};\n"
        f"  IF found <> {count} THEN\n"
        f"    RAISE EXCEPTION 'disagrees with the manifest: {name}: % rows, manifest {count}',"
        " found;\n"
        f"  END IF;"
        for name, count in sorted(expected.items())
    )
    return (
        f"RESET search_path;\nDO $check$\nDECLARE found bigint;\nBEGIN\n{checks}\nEND\n$check$;\n"
    )


def _quote_identifier(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _restore_postgresql(saved: Path, db_url: str, expected: dict[str, int]) -> None:
    pg_restore, psql = shutil.which("pg_restore"), shutil.which("psql")
    if pg_restore is None or psql is None:
        raise BackupError("pg_restore and psql are needed (Debian postgresql-client)")
    script = saved.with_suffix(".sql")
    converted = subprocess.run(
        [pg_restore, "--clean", "--if-exists", "--no-owner", "--file", str(script), str(saved)],
        capture_output=True,
        text=True,
        timeout=3600,
    )
    if converted.returncode != 0:
        raise BackupError(f"the backup's dump is unreadable: {_one_line(converted.stderr)}")
    with script.open("a", encoding="utf-8") as handle:
        handle.write("\n" + _count_check_sql(expected))
    args, env = _pg_args(db_url)
    # One transaction, stopped at the first error: the count check failing, a statement
    # failing or the connection dropping all leave the database as it was.
    result = subprocess.run(
        [psql, "--no-psqlrc", "--quiet", "--single-transaction", "--set", "ON_ERROR_STOP=1",
         *args, "--file", str(script)],
        capture_output=True,
        text=True,
        env=env,
        timeout=3600,
    )  # fmt: skip
    if result.returncode != 0:
        errors = [line for line in result.stderr.splitlines() if "ERROR" in line]
        reason = _one_line(errors[0] if errors else result.stderr)
        raise BackupError(f"restore rolled back, nothing replaced: {reason}")


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
