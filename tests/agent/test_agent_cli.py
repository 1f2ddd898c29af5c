"""The agent as IT staff run it: the real command, real probes, a real broker."""

from __future__ import annotations

import http.server
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import jsonschema
import pytest

from campuswatch.wire import decode_message
from tests.support.mosquitto import MosquittoBroker, subscribe
from tests.support.waiting import wait_until

ROOT = Path(__file__).resolve().parents[2]
SCHEMAS = {
    path.stem: json.loads(path.read_text(encoding="utf-8"))
    for path in (ROOT / "docs" / "schemas").glob("*.json")
}
CAMPUSWATCH = [sys.executable, "-m", "campuswatch"]


@pytest.fixture
def local_site() -> Iterator[str]:
    """An HTTP target on loopback standing in for the Internet."""

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(204)
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/generate_204"
    server.shutdown()


def write_config(tmp_path: Path, target: str, broker: str = "mqtt://127.0.0.1:1") -> Path:
    config = tmp_path / "agent.toml"
    config.write_text(
        f"""
site = "school-a"
state_dir = "{tmp_path / "state"}"
[mqtt]
broker = "{broker}"
reconnect_max_s = 2.0
[intervals]
av = 2
net = 2
health = 1
[net]
uplink_type = "fibre"
dns_names = ["localhost"]
http_targets = ["{target}"]
ping_count = 1
timeout_s = 2
""",
        encoding="utf-8",
    )
    return config


def assert_valid(kind: str, payload: bytes) -> None:
    jsonschema.validate(json.loads(payload), SCHEMAS[kind])


def test_once_prints_every_probe_as_schema_valid_json(tmp_path: Path, local_site: str) -> None:
    config = write_config(tmp_path, local_site)
    result = subprocess.run(
        [*CAMPUSWATCH, "agent", "once", "--json", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    messages = json.loads(result.stdout)
    kinds = [m["kind"] for m in messages]
    assert sorted(kinds) == ["av", "health", "inventory", "net"]
    for message in messages:
        assert_valid(message["kind"], json.dumps(message).encode())
    net = next(m for m in messages if m["kind"] == "net")
    assert net["internet_ok"] is True
    assert net["uplink_type"] == "fibre"


def test_once_human_summary_and_light_imports(tmp_path: Path, local_site: str) -> None:
    config = write_config(tmp_path, local_site)
    probe = (
        "import sys; from campuswatch.cli import main; sys.argv=['campuswatch','agent','once',"
        f"'--config',{str(config)!r}]\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        "heavy = [m for m in ('typer','fastapi','sqlalchemy','pydantic','influxdb_client')"
        " if m in sys.modules]\n"
        "print('HEAVY', heavy)"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, check=True
    )
    assert "antivirus:" in result.stdout
    assert "network: internet ok" in result.stdout
    assert "HEAVY []" in result.stdout, "the agent must not load the collector's libraries"


def test_run_path_imports_only_what_it_uses() -> None:
    """Issue 18: every module ``agent run`` loads stays in a lab PC's memory for good.

    dataclasses (with inspect, ~0.9 MB) and statistics (~0.2 MB) were loaded for records
    and one median; the wire package loaded the validating decoder and built a decoder
    for every message kind, though the agent only ever decodes commands. A thread pool
    (concurrent.futures, queue, heapq: ~0.2 MB) ran probes minutes apart; the stdlib json
    (~0.15 MB) was loaded beside msgspec for the identity file and two digests, and the
    Windows inventory parsers on every Linux PC."""
    probe = (
        "import sys, tempfile, pathlib\n"
        "import campuswatch.agent.cli, campuswatch.agent.main as main\n"
        "from campuswatch.agent.identity import HardwareFacts, resolve_identity\n"
        "from campuswatch.agent.probes.inventory import inventory_digest\n"
        "from campuswatch.wire.messages import InventoryMessage\n"
        "main.default_probes()\n"
        "state = pathlib.Path(tempfile.mkdtemp())\n"
        "facts = HardwareFacts('uuid-1', 'm' * 32, ('02:00:00:00:00:01',))\n"
        "resolve_identity(state, facts)\n"
        "resolve_identity(state, facts)\n"  # the second start reads the file back
        "inventory_digest(InventoryMessage(device_id='pc-1', site='s', digest='0' * 64))\n"
        "import campuswatch.wire.codec as codec\n"
        "unwanted = ['dataclasses', 'statistics', 'concurrent.futures', 'json']\n"
        "if sys.platform != 'win32':\n"
        "    unwanted.append('campuswatch.agent.probes.inventory_windows')\n"
        "loaded = [m for m in unwanted if m in sys.modules]\n"
        "print('LOADED', loaded, 'DECODERS', len(codec._decoders))"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, check=True
    )
    assert "LOADED [] DECODERS 0" in result.stdout


def test_bad_config_exits_with_a_clear_message(tmp_path: Path) -> None:
    config = tmp_path / "agent.toml"
    config.write_text("[intervals]\nav = 'soon'\n", encoding="utf-8")
    result = subprocess.run(
        [*CAMPUSWATCH, "agent", "run", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "intervals.av" in result.stderr
    assert "Traceback" not in result.stderr


def test_run_publishes_birth_and_every_kind_and_will_on_sigkill(
    mosquitto: MosquittoBroker, tmp_path: Path, local_site: str
) -> None:
    connection, capture = subscribe(mosquitto, "cw/v1/school-a/#")
    config = write_config(tmp_path, local_site)
    agent = subprocess.Popen(
        [*CAMPUSWATCH, "agent", "run", "--broker", mosquitto.url, "--config", str(config)],
        stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        wanted = {"hello", "state", "inventory", "av", "net", "health"}
        capture.wait_for(lambda ms: wanted <= {m.topic.rsplit("/", 1)[1] for m in ms}, 90)
        for message in list(capture.messages):
            kind = message.topic.rsplit("/", 1)[1]
            assert_valid(kind, message.payload)
            decode_message(message.topic, message.payload)
        state = decode_message(capture.on("state")[0].topic, capture.on("state")[0].payload)
        assert state.message.status == "online"  # type: ignore[union-attr]
        agent.send_signal(signal.SIGKILL)
        agent.wait(10)

        def offline(ms: list) -> bool:  # type: ignore[type-arg]
            return any(
                json.loads(m.payload).get("status") == "offline"
                for m in ms
                if m.topic.endswith("/state")
            )

        capture.wait_for(offline, 30)
        last_state = json.loads(capture.on("state")[-1].payload)
        assert last_state["reason"] == "will"
    finally:
        if agent.poll() is None:
            agent.kill()
        connection.stop()


def test_unreachable_broker_keeps_the_agent_running_and_queueing(
    tmp_path: Path, local_site: str
) -> None:
    config = write_config(tmp_path, local_site, broker="mqtt://127.0.0.1:9")
    agent = subprocess.Popen(
        [*CAMPUSWATCH, "agent", "run", "--config", str(config)],
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        queue_file = tmp_path / "state" / "outbox.sqlite"
        import sqlite3

        def depth() -> int:
            if not queue_file.exists():
                return 0
            with sqlite3.connect(queue_file) as db:
                return int(db.execute("SELECT COUNT(*) FROM queue").fetchone()[0])

        wait_until(
            lambda: depth() >= 4,
            60,
            interval_s=0.5,
            message="messages are kept on disk while the broker is unreachable",
        )
        assert agent.poll() is None
    finally:
        agent.send_signal(signal.SIGTERM)
        _, stderr = agent.communicate(timeout=30)
    assert agent.returncode == 0
    assert "Traceback" not in stderr


def test_a_second_agent_on_one_state_dir_exits_with_a_clear_message(
    tmp_path: Path, local_site: str
) -> None:
    """Two agents with one device id would knock each other off the broker every second."""
    config = write_config(tmp_path, local_site, broker="mqtt://127.0.0.1:9")
    first = subprocess.Popen(
        [*CAMPUSWATCH, "agent", "run", "--config", str(config)],
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        # The queue is opened after the lock is taken: once it exists, the first one holds it.

        def queue_opened() -> bool:
            assert first.poll() is None, first.communicate()[1]
            return (tmp_path / "state" / "outbox.sqlite").exists()

        wait_until(queue_opened, 60, message="the first agent did not start")
        second = subprocess.run(
            [*CAMPUSWATCH, "agent", "run", "--config", str(config)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert second.returncode == 5
        lines = second.stderr.strip().splitlines()
        assert len(lines) == 1, second.stderr
        assert "already running" in lines[0]
        assert f"pid {first.pid}" in lines[0]
        assert str(tmp_path / "state") in lines[0]
        assert first.poll() is None, "the first agent keeps running"
    finally:
        first.send_signal(signal.SIGTERM)
        first.communicate(timeout=30)
    assert first.returncode == 0
    # Once the first has stopped, the state dir is free again.
    third = subprocess.Popen(
        [*CAMPUSWATCH, "agent", "run", "--config", str(config)],
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while "starting" not in (third.stderr.readline() if third.stderr else ""):
            assert third.poll() is None and time.monotonic() < deadline
    finally:
        third.send_signal(signal.SIGTERM)
        third.communicate(timeout=30)
    assert third.returncode == 0
