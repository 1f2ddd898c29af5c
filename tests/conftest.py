"""Shared fixtures: each real service has its own module under tests/support/."""

pytest_plugins = [
    "tests.support.mosquitto",
    "tests.support.victoriametrics",
    "tests.support.influxdb",
    "tests.support.postgres",
]

import os  # noqa: E402
from collections.abc import Iterator  # noqa: E402

import pytest  # noqa: E402

# Every collector a test starts (in-process or as a child process) would otherwise render a
# year of scheduled compliance reports at start-up; the scheduler has its own tests, and
# tests/collector/reports/test_scheduler.py checks the service wires it when enabled.
os.environ.setdefault("CW_COLLECTOR_REPORT_SCHEDULE_INTERVAL_S", "0")


# A test that skips because a tool is missing hides a broken install step: .ci/run (through
# ./setup.sh) installs every tool the suite drives, so under CI such a skip is a failure.
# Skips for other reasons (not root, another platform) stay skips.
_MISSING_TOOL_MARKERS = ("not installed", "no mosquitto user", "could not import")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    if not report.skipped or not os.environ.get("CI"):
        return
    reason = str(report.longrepr[-1]) if isinstance(report.longrepr, tuple) else ""
    if any(marker in reason for marker in _MISSING_TOOL_MARKERS):
        report.outcome = "failed"
        report.longrepr = f"skipped, but CI installs every tool this suite drives: {reason}"
