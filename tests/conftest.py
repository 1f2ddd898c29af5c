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


# The suite has no skips: ./setup.sh install puts every tool and library it drives on the
# machine, and a test that lacks one fails through tests/support/required.py saying what to
# install. A skip from anywhere else (a new pytest.skip, a skip marker, an empty parameter
# set) would hide a test just as quietly, so it is reported as a failure too.


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    if not report.skipped or hasattr(report, "wasxfail"):
        return
    reason = str(report.longrepr[-1]) if isinstance(report.longrepr, tuple) else ""
    report.outcome = "failed"
    report.longrepr = (
        f"skipped ({reason}), but this suite does not skip: make the test run, or fail saying "
        "what is missing (tests/support/required.py)"
    )
