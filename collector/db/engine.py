"""Engines, sessions and schema migrations for the register database.

SQLite (one file under the data directory) needs no set-up and suits one school or a
small district; PostgreSQL (``postgresql+psycopg://...``) is for several collectors
sharing one register.
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path
from typing import Any, Final

import msgspec
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

log = logging.getLogger(__name__)
MIGRATIONS_DIR: Final = Path(__file__).resolve().parent / "migrations"
# Long enough to ride out a checkpoint or another collector's write, short enough that a
# stuck writer shows up as an error instead of a hung ingest.
SQLITE_BUSY_TIMEOUT_MS: Final = 5000
PRIVATE_FILE_MODE: Final = 0o600
SQLITE_SIDE_FILES: Final = ("-wal", "-shm", "-journal")


def narrowed_mode(mode: int) -> int:
    """The mode a file holding secrets keeps: owner read-write, at most group read.

    0640 is kept (an admin gave a backup or monitoring group read access on purpose);
    anything wider, such as the 0644 a default umask gives, becomes 0600.
    """
    return mode if mode & 0o137 == 0 else PRIVATE_FILE_MODE


def create_private_file(path: Path) -> None:
    """Create ``path`` (empty) as 0600 whatever the umask, or narrow an existing file of ours.

    A file of another user is left alone: its owner's process narrows it (a read-only tool
    run by an admin must not fail or warn over the collector's register).
    """
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE_MODE)
    except FileExistsError:
        status = path.stat()
        mode = stat.S_IMODE(status.st_mode)
        if narrowed_mode(mode) != mode and status.st_uid == os.geteuid():
            path.chmod(narrowed_mode(mode))
        return
    try:
        os.fchmod(descriptor, PRIVATE_FILE_MODE)
    finally:
        os.close(descriptor)


def make_sqlite_file_private(database: Path) -> None:
    """The register (users' password hashes, token hashes) readable by its owner only.

    Created here, before SQLite does it with 0644: SQLite gives the ``-wal``, ``-shm`` and
    ``-journal`` files it creates later the database file's own mode, so this one file
    decides them all; side files an older version left wider are narrowed too.
    """
    try:
        create_private_file(database)
        for suffix in SQLITE_SIDE_FILES:
            side = Path(f"{database}{suffix}")
            if side.exists():
                create_private_file(side)
    except OSError as exc:  # e.g. a register owned by another user: report, don't refuse
        log.warning("cannot make %s owner-only: %s", database, exc)


def default_url(data_dir: Path) -> str:
    return f"sqlite:///{(data_dir / 'register.db').resolve()}"


def _set_sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    try:
        # WAL lets the API read while ingest writes; foreign keys are off by default in SQLite.
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA synchronous=NORMAL")
    finally:
        cursor.close()


def _json_text(value: Any) -> str:
    # msgspec rather than json.dumps: JSON columns are written for every message ingested,
    # and it encodes wire structs as they are (no to-dict step), datetimes as ISO 8601.
    return _JSON_ENCODER.encode(value).decode()


_JSON_ENCODER: Final = msgspec.json.Encoder()


def make_engine(url: str, **engine_options: Any) -> Engine:
    """An engine for ``url``; a SQLite file's folder is created and its pragmas set."""
    engine_options.setdefault("json_serializer", _json_text)
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database
        if database and database != ":memory:" and not database.startswith("file:"):
            path = Path(database).expanduser()
            path.parent.mkdir(parents=True, exist_ok=True)
            make_sqlite_file_private(path)
        engine = create_engine(url, **engine_options)
        event.listen(engine, "connect", _set_sqlite_pragmas)
        return engine
    engine_options.setdefault("pool_pre_ping", True)
    return create_engine(url, **engine_options)


def session_factory(engine: Engine) -> sessionmaker[Session]:
    # expire_on_commit=False: objects handed to the API layer stay readable after commit.
    return sessionmaker(bind=engine, expire_on_commit=False)


def alembic_config(url: str | None = None) -> Config:
    """An Alembic config built in code, so migrations run from an installed package."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    if url is not None:
        # ConfigParser treats % as interpolation; URLs with escaped passwords contain it.
        config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def upgrade(engine_or_url: Engine | str, revision: str = "head") -> None:
    """Bring the database schema up to ``revision`` (default: the newest)."""
    engine = make_engine(engine_or_url) if isinstance(engine_or_url, str) else engine_or_url
    try:
        with engine.begin() as connection:
            config = alembic_config()
            config.attributes["connection"] = connection
            command.upgrade(config, revision)
    finally:
        if isinstance(engine_or_url, str):
            engine.dispose()


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def head_revision() -> str | None:
    return ScriptDirectory.from_config(alembic_config()).get_current_head()
