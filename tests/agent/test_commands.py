"""Probe commands that time out leave nothing behind (issue 18 item 3).

A hanging PowerShell or sigtool wrapper used to be killed alone: its children lived on
(16 orphans in 70 s on a lab PC). The whole process tree must end.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from campuswatch.agent.commands import CommandError, run_command
from tests.support.waiting import wait_until

# POSIX process groups: the suite runs on Debian (README).


def _alive(pid: int) -> bool:
    """Running, not merely a zombie waiting for its (re)parent to reap it."""
    try:
        status = Path(f"/proc/{pid}/status").read_text(encoding="ascii")
    except FileNotFoundError:
        return False
    state = next(line for line in status.splitlines() if line.startswith("State:"))
    return "zombie" not in state and "dead" not in state


def test_timeout_ends_the_whole_process_tree(tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    wrapper = tmp_path / "hanging-wrapper.sh"
    # Like a PowerShell that started a child and then hangs: the child holds the pipes too.
    wrapper.write_text(
        "#!/bin/sh\n"
        f"sleep 300 & echo $! > {pids}.child\n"
        f"(sleep 300; true) & echo $! > {pids}.subshell\n"
        f"echo $$ > {pids}.wrapper\n"
        "sleep 300\n",
        encoding="utf-8",
    )
    wrapper.chmod(0o755)
    with pytest.raises(CommandError) as raised:
        run_command([str(wrapper)], timeout_s=1.0)
    assert raised.value.reason == "timeout"
    started = [int(Path(f"{pids}.{name}").read_text()) for name in ("wrapper", "child", "subshell")]
    wait_until(
        lambda: not any(_alive(pid) for pid in started),
        message=f"a process of the tree {started} still alive",
    )


def test_a_command_that_finishes_still_returns_its_output(tmp_path: Path) -> None:
    result = run_command(
        ["/bin/sh", "-c", "echo hello; echo oops >&2; exit 3"], timeout_s=30, check=False
    )
    assert (result.returncode, result.stdout, result.stderr) == (3, "hello\n", "oops\n")
    with pytest.raises(CommandError) as raised:
        run_command(["/bin/sh", "-c", "echo oops >&2; exit 3"], timeout_s=30)
    assert raised.value.reason == "failed" and "oops" in raised.value.detail
    with pytest.raises(CommandError) as missing:
        run_command([str(tmp_path / "no-such-tool")], timeout_s=30)
    assert missing.value.reason == "not_found"


def test_the_agent_process_is_not_in_the_command_s_group(tmp_path: Path) -> None:
    """Ending the command's group must never reach the agent itself."""
    result = run_command(["/bin/sh", "-c", "ps -o pgid= -p $$"], timeout_s=30)
    assert int(result.stdout.strip()) != os.getpgrp()
