"""The suite does not skip: a missing tool fails the test, naming what to install.

tests/support/required.py is how a test asks for a tool; tests/conftest.py reports any
skip that still happens (a new pytest.skip, a skip marker) as a failure.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SKIPPING = re.compile(r"pytest\.skip\(|importorskip\(|mark\.skip(if)?\b|mark\.xfail\b")


def _pytest(tmp_path: Path, body: str) -> subprocess.CompletedProcess[str]:
    """Run one throw-away test file under this suite's conftest."""
    (tmp_path / "test_case.py").write_text(body, encoding="utf-8")
    # A conftest of its own folder that loads ours, as tests/ does for its files.
    (tmp_path / "conftest.py").write_text(
        "from tests.conftest import pytest_runtest_makereport  # noqa: F401\n", encoding="utf-8"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("CI", None)  # the rule holds everywhere, not only under CI
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def test_a_skip_is_reported_as_a_failure(tmp_path: Path) -> None:
    result = _pytest(
        tmp_path,
        "import pytest\n\ndef test_it() -> None:\n    pytest.skip('chromium is missing')\n",
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert "1 failed" in result.stdout and "skipped" not in result.stdout.splitlines()[-1]
    assert "this suite does not skip" in result.stdout, result.stdout


def test_a_missing_tool_fails_naming_its_package_and_the_install_command(
    tmp_path: Path,
) -> None:
    result = _pytest(
        tmp_path,
        "from tests.support import required\n\n"
        "def test_it() -> None:\n"
        "    required.program('cw-no-such-tool', 'cw-no-such-package')\n",
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert "cw-no-such-tool is not installed (Debian package cw-no-such-package)" in (result.stdout)
    assert "./setup.sh install" in result.stdout


def test_no_test_asks_to_be_skipped() -> None:
    """Checked in the source too: a skip in a rarely run branch would otherwise wait for
    the machine that takes it."""
    found = [
        f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
        for path in sorted((ROOT / "tests").rglob("*.py"))
        if path.name != Path(__file__).name
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if SKIPPING.search(line)
    ]
    assert found == []
