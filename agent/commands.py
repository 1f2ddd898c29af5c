"""Running external commands for probes, with a timeout and a clear failure reason.

A PowerShell or sigtool that hangs, is missing or prints garbage must never stall the
agent: every call has a timeout and failures come back as ``CommandError`` with one of the
wire's ``ProbeError`` reasons.

On a timeout the whole process tree ends, not just the command: PowerShell and sigtool
wrappers start children that would otherwise live on and pile up with every probe run. On
POSIX the command leads a process group of its own (``start_new_session``) and the group is
killed; on Windows the command is put in a job object that kills every process in it when
the job is closed.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Sequence
from typing import Literal, Protocol

import msgspec

FailureReason = Literal["timeout", "not_found", "permission", "failed"]
MAX_OUTPUT_BYTES = 8 * 1024 * 1024


class CommandResult(msgspec.Struct, frozen=True):
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
        process = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
            # POSIX: a group of its own, so a timeout can end the command's children too.
            start_new_session=sys.platform != "win32",
        )
    except FileNotFoundError:
        raise CommandError("not_found", f"{argv[0]} is not installed") from None
    except PermissionError:
        raise CommandError("permission", f"not allowed to run {argv[0]}") from None
    job = _windows_kill_on_close_job(process) if sys.platform == "win32" else None
    try:
        try:
            raw_stdout, raw_stderr = process.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            if job is not None:
                _close_job(job)  # kill-on-close ends the command and all it started
                job = None
            _end_process_tree(process)
            raise CommandError("timeout", f"{argv[0]} did not finish in {timeout_s:g} s") from None
    finally:
        if job is not None:
            _close_job(job)  # kill-on-close: whatever the command left behind ends here
    stdout = raw_stdout[:MAX_OUTPUT_BYTES].decode("utf-8", errors="replace")
    stderr = raw_stderr[:MAX_OUTPUT_BYTES].decode("utf-8", errors="replace")
    if check and process.returncode != 0:
        first_line = (stderr.strip() or stdout.strip()).splitlines()[:1]
        raise CommandError(
            "failed",
            f"{argv[0]} exited {process.returncode}: {first_line[0][:200] if first_line else ''}",
        )
    return CommandResult(tuple(argv), process.returncode, stdout, stderr)


def _end_process_tree(process: subprocess.Popen[bytes]) -> None:
    if sys.platform == "win32":
        process.kill()  # its children went with the job object, if there was one
    else:
        # The group's id is the leader's pid; the group may have ended meanwhile.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
    # The pipes close once every process holding them is gone; nothing is left to read.
    try:
        process.communicate(timeout=5)
    except subprocess.TimeoutExpired:
        # A grandchild that left the group on purpose (setsid) still holds a pipe: do not
        # let it stall the agent; closing our ends is enough.
        for stream in (process.stdout, process.stderr):
            if stream is not None:
                stream.close()
        process.wait()


# --- Windows job objects (untested here: CI and the developers' machines are Linux) ------

_JOB_OBJECT_EXTENDED_LIMIT_INFORMATION = 9
_JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE = 0x2000


def _windows_kill_on_close_job(process: subprocess.Popen[bytes]) -> int | None:
    """A job object holding ``process`` that kills all its processes when closed, or None.

    The process is already running when it joins the job: a child it starts in that first
    moment escapes. Starting suspended would close that gap but needs the raw CreateProcess.
    """
    import ctypes
    from ctypes import wintypes

    class IoCounters(ctypes.Structure):
        _fields_ = [(name, ctypes.c_ulonglong) for name in (
            "ReadOperationCount", "WriteOperationCount", "OtherOperationCount",
            "ReadTransferCount", "WriteTransferCount", "OtherTransferCount",
        )]  # fmt: skip

    class BasicLimits(ctypes.Structure):
        _fields_ = [
            ("PerProcessUserTimeLimit", wintypes.LARGE_INTEGER),
            ("PerJobUserTimeLimit", wintypes.LARGE_INTEGER),
            ("LimitFlags", wintypes.DWORD),
            ("MinimumWorkingSetSize", ctypes.c_size_t),
            ("MaximumWorkingSetSize", ctypes.c_size_t),
            ("ActiveProcessLimit", wintypes.DWORD),
            ("Affinity", ctypes.c_size_t),
            ("PriorityClass", wintypes.DWORD),
            ("SchedulingClass", wintypes.DWORD),
        ]

    class ExtendedLimits(ctypes.Structure):
        _fields_ = [
            ("BasicLimitInformation", BasicLimits),
            ("IoInfo", IoCounters),
            ("ProcessMemoryLimit", ctypes.c_size_t),
            ("JobMemoryLimit", ctypes.c_size_t),
            ("PeakProcessMemoryUsed", ctypes.c_size_t),
            ("PeakJobMemoryUsed", ctypes.c_size_t),
        ]

    kernel32 = ctypes.WinDLL("kernel32", use_last_error=True)  # type: ignore[attr-defined,unused-ignore]
    kernel32.CreateJobObjectW.restype = wintypes.HANDLE
    job = kernel32.CreateJobObjectW(None, None)
    if not job:
        return None
    limits = ExtendedLimits()
    limits.BasicLimitInformation.LimitFlags = _JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE
    process_handle = int(process._handle)  # type: ignore[attr-defined]
    if not kernel32.SetInformationJobObject(
        job, _JOB_OBJECT_EXTENDED_LIMIT_INFORMATION, ctypes.byref(limits), ctypes.sizeof(limits)
    ) or not kernel32.AssignProcessToJobObject(job, wintypes.HANDLE(process_handle)):
        kernel32.CloseHandle(job)
        return None
    return int(job)


def _close_job(job: int) -> None:
    import ctypes
    from ctypes import wintypes

    kernel32 = ctypes.WinDLL("kernel32", use_last_error=True)  # type: ignore[attr-defined,unused-ignore]
    kernel32.CloseHandle(wintypes.HANDLE(job))
