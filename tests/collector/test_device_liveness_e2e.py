"""A real agent killed without DISCONNECT: its Last Will takes the device offline in the
register and in the liveness tracker alike, also across a collector restart."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from campuswatch.wire.ids import utc_now
from tests.collector.conftest import CollectorFactory, RunningCollector
from tests.support.mosquitto import MosquittoBroker
from tests.support.waiting import wait_until

pytestmark = pytest.mark.e2e
SITE = "school-will"


def agent_config(tmp_path: Path) -> Path:
    config = tmp_path / "agent.toml"
    config.write_text(
        f"""
site = "{SITE}"
state_dir = "{tmp_path / "agent-state"}"
[mqtt]
reconnect_max_s = 2.0
[intervals]
health = 1
""",
        encoding="utf-8",
    )
    return config


def only_device(collector: RunningCollector) -> dict[str, Any] | None:
    items = collector.get("/api/v1/devices", site_id=SITE)["items"]
    return items[0] if len(items) == 1 else None


def test_a_sigkilled_agent_is_offline_in_register_and_liveness(
    mosquitto: MosquittoBroker, collector_factory: CollectorFactory, tmp_path: Path
) -> None:
    collector = collector_factory()
    agent = subprocess.Popen(
        [sys.executable, "-m", "campuswatch", "agent", "run", "--broker", mosquitto.url,
         "--config", str(agent_config(tmp_path))],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip
    try:
        device = wait_until(
            lambda: (found := only_device(collector)) and found["online"] and found, 90
        )
        device_id = device["device_id"]
        assert device["status"] == "online"
        agent.send_signal(signal.SIGKILL)  # no DISCONNECT: the broker publishes the will
        agent.wait(10)
    finally:
        if agent.poll() is None:
            agent.kill()
            agent.wait(10)

    path = f"/api/v1/devices/{device_id}"
    detail = wait_until(lambda: (found := collector.get(path))["online"] is False and found, 30)
    assert detail["status"] == "offline"
    assert detail["latest"]["state"]["reason"] == "will"
    assert collector.service.liveness.status(device_id, utc_now()) == "offline"

    # Restarted on the same register (liveness seeded from it, the retained will known
    # already): still offline in both.
    data_dir = collector.service.settings.data_dir
    collector.service.stop()
    again = collector_factory(data_dir=data_dir)
    detail = again.get(path)
    assert (detail["online"], detail["status"]) == (False, "offline")
