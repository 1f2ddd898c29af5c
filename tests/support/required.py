"""What the suite needs from the machine, checked where a test needs it.

The suite never skips: ``./setup.sh install`` (which ``./setup.sh test`` and ``.ci/run`` run
first) installs every Debian package and Python dependency a test drives, and the README says
to run it as root. A missing tool therefore means a broken install step or a hand-made
machine, and the test fails saying what to install and how, instead of passing silently.
"""

from __future__ import annotations

import importlib
import os
import shutil
from pathlib import Path
from types import ModuleType
from typing import NoReturn

import pytest

INSTALL_HINT = "run ./setup.sh install (as root, or with sudo available)"


def missing(what: str, how: str = INSTALL_HINT) -> NoReturn:
    """Fail the test: ``what`` is needed and absent; ``how`` says how to get it."""
    pytest.fail(f"{what}; {how}", pytrace=False)


def program(name: str, package: str) -> str:
    """The path of ``name`` (on PATH, or in /usr/sbin and /usr/bin, where Debian puts
    daemons that root's PATH may not list), else fail naming the Debian package."""
    for candidate in (shutil.which(name), f"/usr/sbin/{name}", f"/usr/bin/{name}"):
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return candidate
    missing(f"{name} is not installed (Debian package {package})")


def module(name: str, install: str) -> ModuleType:
    """Import ``name``, else fail saying which pip requirement brings it."""
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        missing(f"could not import {name} ({exc}); it comes with {install}")


def root(why: str) -> None:
    """Fail unless running as root, which the README's test command is."""
    if os.geteuid() != 0:
        missing(f"this test needs root: {why}", "run the suite as root, as ./setup.sh test does")


def system_user(name: str, package: str) -> None:
    """Fail unless the account ``name`` exists (Debian packages create their daemon's)."""
    import pwd

    try:
        pwd.getpwnam(name)
    except KeyError:
        missing(f"there is no {name!r} user (the Debian package {package} creates it)")


CHROMIUM_PACKAGE = "chromium"
PLAYWRIGHT_PIP = "playwright, a test dependency: pip install -e '.[dev]'"
