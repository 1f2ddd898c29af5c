"""A real VictoriaMetrics on a free loopback port, with stop()/start() to simulate outages."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support import required
from tests.support.ports import free_port, wait_for_port


class VictoriaMetricsServer:
    def __init__(self, binary: str, data_dir: Path, log_path: Path) -> None:
        self.binary = binary
        self.data_dir = data_dir
        self.log_path = log_path
        self.port = free_port()
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        if self._process is not None:
            return
        with self.log_path.open("ab") as log:
            self._process = subprocess.Popen(
                [
                    self.binary,
                    f"-storageDataPath={self.data_dir}",
                    f"-httpListenAddr=127.0.0.1:{self.port}",
                    "-search.latencyOffset=1s",
                    "-retentionPeriod=100y",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        try:
            wait_for_port(self.port, timeout_s=30)
        except TimeoutError:
            self.stop()
            raise

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

    def force_flush(self) -> None:
        httpx.get(f"{self.url}/internal/force_flush", timeout=30).raise_for_status()

    def query(self, promql: str, time_s: float | None = None) -> list[dict[str, Any]]:
        """Instant query; returns ``data.result``."""
        params: dict[str, str] = {"query": promql}
        if time_s is not None:
            params["time"] = str(time_s)
        response = httpx.get(f"{self.url}/api/v1/query", params=params, timeout=30)
        response.raise_for_status()
        result: list[dict[str, Any]] = response.json()["data"]["result"]
        return result

    def export(self, match: str) -> list[dict[str, Any]]:
        """Every raw sample of the matching series: ``[{metric, values, timestamps}, …]``."""
        self.force_flush()
        response = httpx.get(
            f"{self.url}/api/v1/export",
            params={"match[]": match, "start": "0"},
            timeout=60,
        )
        response.raise_for_status()
        return [json.loads(line) for line in response.text.splitlines() if line.strip()]


@pytest.fixture
def victoriametrics(tmp_path: Path) -> Iterator[VictoriaMetricsServer]:
    binary = shutil.which("victoria-metrics-prod") or required.program(
        "victoria-metrics", "victoria-metrics"
    )
    server = VictoriaMetricsServer(binary, tmp_path / "vm-data", tmp_path / "vm.log")
    server.start()
    try:
        yield server
    finally:
        server.stop()
