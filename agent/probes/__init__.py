"""Probes gather one kind of message each; the runner schedules, queues and sends.

The contract is deliberately small (Telegraf's input plugins): a probe has a ``name``, the
wire ``kind`` it produces, and ``collect(context)`` returning one typed message. A probe
never sleeps on a schedule, never touches MQTT and never raises for an expected failure:
it returns its message with ``errors`` filled in (``ProbeFailure`` helps build those).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import msgspec

from campuswatch.agent.commands import CommandRunner, run_command
from campuswatch.agent.settings import AgentSettings
from campuswatch.wire.messages import Message, ProbeError


class ProbeContext(msgspec.Struct):
    device_id: str
    site: str
    settings: AgentSettings
    run: CommandRunner = run_command
    """Runs external commands (PowerShell, sigtool, dpkg-query); tests pass a recorded one."""
    queue_stats: Callable[[], tuple[int, int]] = lambda: (0, 0)
    """(messages waiting, messages dropped so far) of the runner's store-and-forward queue."""


class Probe(Protocol):
    name: str
    kind: str

    def collect(self, context: ProbeContext) -> Message: ...


class ProbeFailure(Exception):
    """An expected failure inside a probe; turned into a ``ProbeError`` on the message."""

    def __init__(self, error: ProbeError) -> None:
        super().__init__(f"{error.probe}: {error.reason}: {error.detail}")
        self.error = error
