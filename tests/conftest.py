"""Shared fixtures: each real service has its own module under tests/support/."""

pytest_plugins = [
    "tests.support.mosquitto",
    "tests.support.victoriametrics",
    "tests.support.influxdb",
    "tests.support.postgres",
]

import os  # noqa: E402

# Every collector a test starts (in-process or as a child process) would otherwise render a
# year of scheduled compliance reports at start-up; the scheduler has its own tests, and
# tests/collector/reports/test_scheduler.py checks the service wires it when enabled.
os.environ.setdefault("CW_COLLECTOR_REPORT_SCHEDULE_INTERVAL_S", "0")
