"""Waiting for something observable to happen, instead of sleeping a fixed time.

A fixed sleep is too short on a loaded machine (a flaky test) and too long everywhere else
(a slow one). ``wait_until`` polls a condition until it holds; its timeout only bounds a
hang, so it is generous and never a limit on how fast the code must be.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Literal, TypeVar

T = TypeVar("T")

DEFAULT_TIMEOUT_S = 30.0
DEFAULT_INTERVAL_S = 0.05


def wait_until(
    predicate: Callable[[], T | Literal[False] | None],
    timeout_s: float = DEFAULT_TIMEOUT_S,
    *,
    interval_s: float = DEFAULT_INTERVAL_S,
    message: str = "condition not met",
    ignoring: tuple[type[BaseException], ...] = (),
) -> T:
    """Call ``predicate`` until it returns something truthy, and return that (typed without
    the ``None``/``False`` it returns while waiting, so ``x and value`` predicates read well).

    An exception of a type in ``ignoring`` (a service still starting: connection refused)
    counts as "not yet". After ``timeout_s`` an ``AssertionError`` says ``message`` and the
    last value or exception seen, which is usually what tells why.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            value = predicate()
        except ignoring as error:
            last = f"{type(error).__name__}: {error}"
        else:
            if value:
                return value
            last = repr(value)
        if time.monotonic() >= deadline:
            raise AssertionError(f"{message}: not within {timeout_s:g} s; last: {last[:500]}")
        time.sleep(interval_s)
