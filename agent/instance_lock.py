"""One agent per state dir: a second one would share the device id and the queue.

Two agents with one device id knock each other off the broker every second (the broker
drops the older session of a client id), and both would send from one outbox. An exclusive
lock on a file in the state dir, held for the agent's life, keeps the second one out; the
operating system releases it when the process ends, however it ends (no stale lock files).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import BinaryIO, Final

LOCK_FILE: Final = "agent.lock"


class AlreadyRunning(Exception):
    """Another agent holds this state dir; the message says which process, when it can."""


class InstanceLock:
    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / LOCK_FILE
        self._file: BinaryIO | None = None

    def acquire(self) -> None:
        """Take the lock or raise ``AlreadyRunning``; ``OSError`` if the dir is unusable."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # "a+b": never truncate before we hold the lock, the holder's pid is in there.
        lock_file = self.path.open("a+b")
        try:
            _lock(lock_file)
        except OSError:
            holder = _holder(lock_file)
            lock_file.close()
            who = f" (pid {holder})" if holder.isdigit() else ""
            raise AlreadyRunning(
                f"another agent{who} is already running with the state dir {self.path.parent}"
            ) from None
        lock_file.seek(0)
        lock_file.truncate()
        lock_file.write(f"{os.getpid()}\n".encode("ascii"))
        lock_file.flush()
        self._file = lock_file

    def release(self) -> None:
        if self._file is not None:
            self._file.close()  # closing releases the lock on both platforms
            self._file = None

    def __enter__(self) -> InstanceLock:
        self.acquire()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release()


def _holder(lock_file: BinaryIO) -> str:
    """The pid the holder wrote, or "" (Windows does not let others read a locked byte)."""
    try:
        lock_file.seek(0)
        return lock_file.read(32).decode("ascii", errors="replace").strip()
    except OSError:
        return ""


def _lock(lock_file: BinaryIO) -> None:
    """Non-blocking exclusive lock; raises ``OSError`` when another process holds it."""
    if sys.platform == "win32":
        import msvcrt

        # Locks a byte range; byte 0 of a file that may be empty is fine on Windows.
        lock_file.seek(0)
        msvcrt.locking(lock_file.fileno(), msvcrt.LK_NBLCK, 1)
    else:
        import fcntl

        fcntl.flock(lock_file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
