"""A real InfluxDB 1.x (Debian's influxd 1.6) on free loopback ports with a fresh database."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support import required
from tests.support.ports import free_port, wait_for_port
from tests.support.waiting import wait_until

DATABASE = "campuswatch_test"


class InfluxDb1Server:
    def __init__(self, binary: str, root: Path) -> None:
        self.binary = binary
        self.root = root
        self.port = free_port()
        self.rpc_port = free_port()
        self.database = DATABASE
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def writer_url(self) -> str:
        """The form writer_from_url understands."""
        return f"influx1://127.0.0.1:{self.port}/{self.database}"

    def _write_config(self) -> Path:
        config = self.root / "influxdb.conf"
        config.write_text(
            f"""
reporting-disabled = true
bind-address = "127.0.0.1:{self.rpc_port}"

[meta]
  dir = "{self.root / "meta"}"

[data]
  dir = "{self.root / "data"}"
  wal-dir = "{self.root / "wal"}"
  query-log-enabled = false

[http]
  enabled = true
  bind-address = "127.0.0.1:{self.port}"
  auth-enabled = false
  log-enabled = false

[monitor]
  store-enabled = false

[continuous_queries]
  enabled = false

[subscriber]
  enabled = false

[[graphite]]
  enabled = false
[[collectd]]
  enabled = false
[[opentsdb]]
  enabled = false
[[udp]]
  enabled = false
"""
        )
        return config

    def start(self) -> None:
        config = self._write_config()
        with (self.root / "influxd.log").open("ab") as log:
            self._process = subprocess.Popen(
                [self.binary, "-config", str(config)], stdout=log, stderr=subprocess.STDOUT
            )
        wait_for_port(self.port, timeout_s=30)

        # The HTTP port opens a moment before the meta store answers queries.
        def created() -> httpx.Response | None:
            response = httpx.post(
                f"{self.url}/query", params={"q": f'CREATE DATABASE "{self.database}"'}
            )
            ok = response.status_code == 200 and "error" not in response.text
            return response if ok else None

        wait_until(created, interval_s=0.2, message="influxd did not create the database")

    def stop(self) -> None:
        if self._process is None:
            return
        self._process.terminate()
        try:
            self._process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        self._process = None

    def query(self, influxql: str) -> list[dict[str, Any]]:
        """InfluxQL against the test database; returns the first statement's series."""
        response = httpx.get(
            f"{self.url}/query", params={"db": self.database, "q": influxql, "epoch": "ms"}
        )
        response.raise_for_status()
        statement = response.json()["results"][0]
        if "error" in statement:
            raise RuntimeError(statement["error"])
        series: list[dict[str, Any]] = statement.get("series", [])
        return series


@pytest.fixture
def influxdb1(tmp_path: Path) -> Iterator[InfluxDb1Server]:
    binary = required.program("influxd", "influxdb")
    server = InfluxDb1Server(binary, tmp_path / "influxdb")
    server.root.mkdir()
    try:
        server.start()
        yield server
    finally:
        server.stop()
