"""One line, not a traceback, for what an operator fixes: a path, a permission, a database.

Every ``campuswatch`` command (and ``python -m campuswatch.firmware_sim``) runs through
``run_app``: an exception that escapes a command and is one of these conditions becomes
``error: …`` naming the path or database and what to do, and exit status 1. Anything else is
a bug and keeps its traceback. ``CW_DEBUG=1`` shows the traceback of the known ones too.
"""

from __future__ import annotations

import errno
import os
import sys
from collections.abc import Sequence
from typing import Any

_ADVICE = {
    errno.EACCES: "permission denied: {path}; run as the user that owns it "
    "(e.g. sudo -u campuswatch …) or choose another path",
    errno.EPERM: "operation not permitted: {path}; run as the user that owns it "
    "(e.g. sudo -u campuswatch …) or choose another path",
    errno.ENOENT: "no such file or folder: {path}; check the path",
    errno.ENOTDIR: "not a folder: {path} (a part of it is a file); choose another path",
    errno.EISDIR: "{path} is a folder; give a file name",
    errno.EEXIST: "{path} exists and is in the way; move it or choose another path",
    errno.EROFS: "{path} is on a read-only file system; choose another path",
    errno.ENOSPC: "no space left for {path}; free some space or choose another disk",
    errno.EDQUOT: "disk quota exceeded for {path}; free some space or choose another disk",
}


def describe_cli_error(error: BaseException) -> str | None:
    """The line for a condition a person fixes, or None for anything else (a bug)."""
    if isinstance(error, OSError) and error.filename is not None:
        path = os.fsdecode(error.filename)
        advice = _ADVICE.get(error.errno or 0)
        return advice.format(path=path) if advice else f"{path}: {error.strerror or error}"
    database_error = _database_error(error)
    if database_error is not None:
        return database_error
    return None


def _database_error(error: BaseException) -> str | None:
    """SQLAlchemy's errors for a database that cannot be reached or opened (never imported
    here: a command that has not loaded SQLAlchemy cannot have raised one)."""
    sa_exc: Any = sys.modules.get("sqlalchemy.exc")
    if sa_exc is None or not isinstance(error, sa_exc.OperationalError | sa_exc.InterfaceError):
        return None
    cause = str(getattr(error, "orig", None) or error).strip().splitlines()
    reason = cause[0].strip() if cause else type(error).__name__
    return (
        f"cannot use the database: {reason}; check --db / CW_COLLECTOR_DB (or the data dir) "
        "and that the database server is running"
    )


def run_app(app: Any, args: Sequence[str] | None, prog_name: str) -> None:
    """Run a Typer app; a known condition is one line on stderr and exit status 1."""
    try:
        app(args=list(args) if args is not None else None, prog_name=prog_name)
    except Exception as error:
        line = describe_cli_error(error)
        if line is None or os.environ.get("CW_DEBUG"):
            raise
        print(f"error: {line}", file=sys.stderr)
        raise SystemExit(1) from None
