"""Shared fixtures: each real service has its own module under tests/support/."""

pytest_plugins = [
    "tests.support.mosquitto",
    "tests.support.victoriametrics",
    "tests.support.influxdb",
    "tests.support.postgres",
]
