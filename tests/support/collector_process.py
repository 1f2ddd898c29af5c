"""``campuswatch collector run`` as a real child process, for tests that kill or starve it."""

from __future__ import annotations

import os
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

from tests.support.ports import wait_for_port
from tests.support.waiting import wait_until


def start_collector_process(
    broker_url: str,
    data_dir: Path,
    port: int,
    *,
    collector_id: str,
    db_url: str | None = None,
    log: Path | None = None,
    config: Path | None = None,
) -> subprocess.Popen[bytes]:
    """Start the collector and wait until its HTTP port answers (not until it has
    subscribed: callers that publish at once wait for ``/healthz`` themselves)."""
    command = [
        sys.executable, "-m", "campuswatch", "collector", "run", "--broker", broker_url,
        "--data-dir", str(data_dir), "--listen", f"127.0.0.1:{port}", "--log-level", "WARNING",
    ]  # fmt: skip
    if db_url is not None:
        command += ["--db", db_url]
    if config is not None:
        command += ["--config", str(config)]
    process = subprocess.Popen(
        command,
        env={**os.environ, "CW_COLLECTOR_COLLECTOR_ID": collector_id},
        stdout=subprocess.DEVNULL,
        stderr=log.open("ab") if log is not None else subprocess.DEVNULL,
    )
    wait_for_port(port, timeout_s=60)
    return process


def wait_until_healthy(port: int, timeout_s: float = 60.0) -> None:
    """Until ``/healthz`` answers 200: subscribed to the broker, register reachable. A
    message published before the first subscription is in no session and is lost."""

    def healthy() -> bool:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as reply:
            return bool(reply.status == 200)

    wait_until(
        healthy,
        timeout_s,
        interval_s=0.1,
        message=f"collector on port {port} not healthy",
        ignoring=(urllib.error.URLError, OSError),
    )
