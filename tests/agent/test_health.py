"""Health probe on this machine: values in range, wire-valid, queue stats passed through."""

from __future__ import annotations

import hashlib
import os

import psutil
import pytest

from campuswatch.agent.probes import ProbeContext
from campuswatch.agent.probes.health import HealthProbe
from campuswatch.agent.probes.inventory import physical_partitions
from campuswatch.agent.settings import AgentSettings
from campuswatch.wire import HealthMessage, decode_message, encode_message

SITE, DEVICE = "school-a", "lab-pc-01"


def context(queue_stats: tuple[int, int] = (0, 0)) -> ProbeContext:
    return ProbeContext(
        device_id=DEVICE, site=SITE, settings=AgentSettings(), queue_stats=lambda: queue_stats
    )


def assert_valid_on_wire(message: HealthMessage) -> None:
    decoded = decode_message(f"cw/v1/{SITE}/{DEVICE}/health", encode_message(message)).message
    assert decoded == message


def test_values_in_range_and_valid_on_wire() -> None:
    message = HealthProbe().collect(context((12, 3)))
    assert_valid_on_wire(message)
    assert message.errors == []
    assert message.cpu_pct is not None and 0 <= message.cpu_pct <= 100
    assert message.memory_pct is not None and 0 < message.memory_pct <= 100
    total = psutil.virtual_memory().total
    assert message.memory_used_bytes is not None and 0 < message.memory_used_bytes <= total
    assert message.uptime_s is not None and message.uptime_s > 0
    assert message.agent_rss_bytes is not None and message.agent_rss_bytes > 1024 * 1024
    assert (message.queue_depth, message.queue_dropped_total) == (12, 3)
    if hasattr(os, "getloadavg"):
        assert message.load1 is not None and message.load1 >= 0


def test_disks_are_the_physical_mountpoints() -> None:
    message = HealthProbe().collect(context())
    assert [disk.mountpoint for disk in message.disks] == [p[1] for p in physical_partitions()]
    for disk in message.disks:
        assert 0 <= disk.used_pct <= 100 and disk.free_bytes >= 0


def test_agent_cpu_is_measured_between_collections() -> None:
    probe = HealthProbe()
    probe.collect(context())
    digest = b""
    for _ in range(200_000):  # a fixed amount of work, not a time limit
        digest = hashlib.sha256(digest).digest()
    message = probe.collect(context())
    assert message.agent_cpu_pct is not None and message.agent_cpu_pct > 0


def test_failing_queue_stats_is_an_error_not_a_crash() -> None:
    def broken() -> tuple[int, int]:
        raise RuntimeError("queue closed")

    ctx = ProbeContext(device_id=DEVICE, site=SITE, settings=AgentSettings(), queue_stats=broken)
    message = HealthProbe().collect(ctx)
    assert_valid_on_wire(message)
    assert message.queue_depth is None and message.queue_dropped_total is None
    assert [(e.probe, e.reason) for e in message.errors] == [("health.queue", "failed")]
    assert message.cpu_pct is not None


def test_unreadable_counter_leaves_only_that_field_empty(monkeypatch: pytest.MonkeyPatch) -> None:
    def denied() -> object:
        raise PermissionError("no access to /proc/meminfo")

    monkeypatch.setattr(psutil, "virtual_memory", denied)
    message = HealthProbe().collect(context())
    assert_valid_on_wire(message)
    assert message.memory_pct is None and message.memory_used_bytes is None
    assert [(e.probe, e.reason) for e in message.errors] == [("health.memory", "permission")]
