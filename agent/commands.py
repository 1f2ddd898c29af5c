"""Running external commands for probes, with a timeout and a clear failure reason.

A PowerShell or sigtool that hangs, is missing or prints garbage must never stall the
agent: every call has a timeout and failures come back as ``CommandError`` with one of the
wire's ``ProbeError`` reasons.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

FailureReason = Literal["timeout", "not_found", "permission", "failed"]
MAX_OUTPUT_BYTES = 8 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class CommandResult:
    argv: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str


class CommandError(Exception):
    def __init__(self, reason: FailureReason, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason: FailureReason = reason
        self.detail = detail


class CommandRunner(Protocol):
    def __call__(
        self, argv: Sequence[str], *, timeout_s: float, check: bool = True
    ) -> CommandResult: ...


def run_command(argv: Sequence[str], *, timeout_s: float, check: bool = True) -> CommandResult:
    """Run ``argv`` (no shell); raise ``CommandError`` on timeout, absence or failure."""
    env = dict(os.environ, LC_ALL="C", LANG="C")  # parsers expect untranslated output
    try:
        completed = subprocess.run(
            list(argv),
            capture_output=True,
            timeout=timeout_s,
            env=env,
            stdin=subprocess.DEVNULL,
            check=False,
        )
    except FileNotFoundError:
        raise CommandError("not_found", f"{argv[0]} is not installed") from None
    except PermissionError:
        raise CommandError("permission", f"not allowed to run {argv[0]}") from None
    except subprocess.TimeoutExpired:
        raise CommandError("timeout", f"{argv[0]} did not finish in {timeout_s:g} s") from None
    stdout = completed.stdout[:MAX_OUTPUT_BYTES].decode("utf-8", errors="replace")
    stderr = completed.stderr[:MAX_OUTPUT_BYTES].decode("utf-8", errors="replace")
    if check and completed.returncode != 0:
        first_line = (stderr.strip() or stdout.strip()).splitlines()[:1]
        raise CommandError(
            "failed",
            f"{argv[0]} exited {completed.returncode}: {first_line[0][:200] if first_line else ''}",
        )
    return CommandResult(tuple(argv), completed.returncode, stdout, stderr)
