"""Health of this PC and of the agent itself: CPU, memory, disks, uptime, queue backlog."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import TypeVar

import psutil

from campuswatch.agent.probes import ProbeContext
from campuswatch.agent.probes.inventory import error_from_exception, physical_partitions
from campuswatch.wire.messages import DiskUse, HealthMessage, ProbeError

T = TypeVar("T")


def _percent(value: float) -> float:
    # psutil can overshoot 100 by rounding; the wire bounds percentages to 0..100.
    return round(min(max(value, 0.0), 100.0), 2)


def disk_uses() -> list[DiskUse]:
    uses: list[DiskUse] = []
    for _device, mountpoint, _fstype in physical_partitions():
        try:
            usage = psutil.disk_usage(mountpoint)
        except OSError:
            continue  # e.g. a card reader without a card; inventory reports disks, not this
        uses.append(
            DiskUse(
                mountpoint=mountpoint[:256], used_pct=_percent(usage.percent), free_bytes=usage.free
            )
        )
    return uses


class HealthProbe:
    """Collects a ``HealthMessage``.

    CPU percentages are measured between calls (``interval=None``) so the probe never
    sleeps; the constructor takes the first sample so the first message already has a value.
    """

    name = "health"
    kind = "health"

    def __init__(self) -> None:
        self._process = psutil.Process()
        psutil.cpu_percent(interval=None)
        self._process.cpu_percent(interval=None)

    def collect(self, context: ProbeContext) -> HealthMessage:
        errors: list[ProbeError] = []

        def attempt(part: str, action: Callable[[], T]) -> T | None:
            try:
                return action()
            except Exception as exc:  # one unreadable counter must not lose the others
                errors.append(error_from_exception(f"health.{part}", exc))
                return None

        memory = attempt("memory", psutil.virtual_memory)
        queue = attempt("queue", context.queue_stats)
        return HealthMessage(
            device_id=context.device_id,
            site=context.site,
            cpu_pct=attempt("cpu", lambda: _percent(psutil.cpu_percent(interval=None))),
            memory_pct=_percent(memory.percent) if memory else None,
            memory_used_bytes=max(0, memory.total - memory.available) if memory else None,
            disks=attempt("disks", disk_uses) or [],
            uptime_s=attempt("uptime", lambda: round(max(0.0, time.time() - psutil.boot_time()))),
            load1=attempt("load", self._load1),
            agent_rss_bytes=attempt("agent", lambda: int(self._process.memory_info().rss)),
            agent_cpu_pct=attempt(
                "agent", lambda: round(max(0.0, self._process.cpu_percent(interval=None)), 2)
            ),
            queue_depth=max(0, queue[0]) if queue else None,
            queue_dropped_total=max(0, queue[1]) if queue else None,
            errors=errors,
        )

    @staticmethod
    def _load1() -> float | None:
        # psutil.getloadavg on Windows starts a background thread to emulate it; the OS
        # has no load average, so report none there instead.
        if not hasattr(os, "getloadavg"):
            return None
        return round(os.getloadavg()[0], 2)
