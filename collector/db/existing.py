"""Opening a register that must already exist (command-line tools on a collector's data).

SQLite creates a missing file on first connect, so ``campuswatch report`` run outside a data
dir used to create an empty register and report on nothing; a register it may not read gave
a 300-line traceback. Tools that work on a collector's data open it through here: a missing,
unreadable or unmigrated register is one line saying what to do.
"""

from __future__ import annotations

import os
from pathlib import Path

from sqlalchemy import Engine
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

from campuswatch.collector.db.engine import current_revision, make_engine


class RegisterUnavailable(Exception):
    """The register cannot be used; the message is one line for a person."""


def sqlite_path(url: str) -> Path | None:
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or not parsed.database:
        return None
    return None if parsed.database == ":memory:" else Path(parsed.database)


def open_existing_register(url: str, *, writable: bool = False) -> Engine:
    """An engine on a register that exists and has a schema; never creates one."""
    path = sqlite_path(url)
    if path is not None:
        try:
            exists = path.exists()
        except PermissionError:
            raise RegisterUnavailable(
                f"permission denied: cannot reach {path}; run as the collector's user "
                "(e.g. sudo -u campuswatch …)"
            ) from None
        if not exists:
            raise RegisterUnavailable(
                f"no register at {path}: run this in the collector's data dir, or pass "
                "--data-dir/--db (CW_COLLECTOR_DATA_DIR / CW_COLLECTOR_DB)"
            )
        wanted = os.R_OK | (os.W_OK if writable else 0)
        if not os.access(path, wanted) or (writable and not os.access(path.parent, os.W_OK)):
            mode = "read and write" if writable else "read"
            raise RegisterUnavailable(
                f"permission denied: cannot {mode} {path}; run as the collector's user "
                "(e.g. sudo -u campuswatch …)"
            )
    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            connection.exec_driver_sql("SELECT 1")
        revision = current_revision(engine)
    except SQLAlchemyError as exc:
        engine.dispose()
        cause = str(getattr(exc, "orig", None) or exc).strip().splitlines()
        where = path or make_url(url).render_as_string(hide_password=True)
        raise RegisterUnavailable(
            f"cannot open the register {where}: {cause[0] if cause else type(exc).__name__}"
        ) from None
    if revision is None:
        engine.dispose()
        raise RegisterUnavailable(
            f"{path or 'the database'} is not a CampusWatch register (no schema): "
            "start the collector once on it first"
        )
    return engine
