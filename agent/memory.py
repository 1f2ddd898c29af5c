"""Keeping the agent's resident memory near what it actually holds (glibc on Linux).

Two glibc habits cost a small long-running agent several megabytes: every thread that
allocates gets a malloc arena of its own (probes run on worker threads), and memory freed
after a burst — the inventory's package list, a PowerShell answer — stays mapped. One arena
and a ``malloc_trim`` after each probe run give it back; the CPU cost is microseconds per
run. Elsewhere (Windows, musl, macOS) these are no-ops.
"""

from __future__ import annotations

import sys
from typing import Any, Final

_M_ARENA_MAX: Final = -8  # mallopt parameter number, from glibc's malloc.h
_libc: Any = None


def _glibc() -> Any:
    global _libc
    if _libc is None:
        _libc = False
        if sys.platform.startswith("linux"):
            import ctypes

            try:
                libc = ctypes.CDLL("libc.so.6")
                if hasattr(libc, "malloc_trim") and hasattr(libc, "mallopt"):
                    _libc = libc
            except OSError:
                pass  # not glibc (musl): nothing to tune
    return _libc or None


def use_one_malloc_arena() -> None:
    """Call before any thread starts: later threads share the main arena."""
    libc = _glibc()
    if libc is not None:
        libc.mallopt(_M_ARENA_MAX, 1)


def return_free_memory() -> None:
    """Hand memory freed since the last call back to the operating system."""
    libc = _glibc()
    if libc is not None:
        libc.malloc_trim(0)
