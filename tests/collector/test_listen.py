"""A collector or demo that cannot listen says so in one line and exits non-zero, instead of
running on with no web server (which systemd would never restart)."""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from campuswatch.collector.listen import ListenError, bind_listen_socket, split_listen
from tests.support.mosquitto import MosquittoBroker
from tests.support.ports import free_port


@pytest.fixture
def taken_port() -> Iterator[int]:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen(1)
        yield int(holder.getsockname()[1])


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "campuswatch", *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=cwd,
    )


def error_lines(result: subprocess.CompletedProcess[str]) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.strip()]


def test_collector_with_its_port_taken_exits_with_one_line(
    taken_port: int, mosquitto: MosquittoBroker, tmp_path: Path
) -> None:
    result = run_cli(
        "collector", "run", "--broker", mosquitto.url, "--data-dir", str(tmp_path / "data"),
        "--listen", f"127.0.0.1:{taken_port}", "--log-level", "WARNING", cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode != 0
    lines = error_lines(result)
    assert len(lines) == 1, result.stderr
    assert f"127.0.0.1:{taken_port}" in lines[0] and "already in use" in lines[0]
    assert "running" not in result.stdout + result.stderr


def test_demo_with_its_port_taken_prints_no_login(taken_port: int, tmp_path: Path) -> None:
    result = run_cli(
        "demo", "--data-dir", str(tmp_path / "demo"), "--listen", f"127.0.0.1:{taken_port}",
        cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode != 0
    lines = error_lines(result)
    assert len(lines) == 1, result.stderr
    assert "already in use" in lines[0]
    assert "password" not in result.stdout and "is running" not in result.stdout


@pytest.mark.parametrize(
    ("listen", "expected"),
    [
        ("127.0.0.1:8080", ("127.0.0.1", 8080)),
        (":8080", ("127.0.0.1", 8080)),
        ("[::1]:8443", ("::1", 8443)),
        ("0.0.0.0:80", ("0.0.0.0", 80)),
    ],
)
def test_listen_addresses_are_split(listen: str, expected: tuple[str, int]) -> None:
    assert split_listen(listen) == expected


@pytest.mark.parametrize("listen", ["8080", "host:", "host:http", "127.0.0.1:70000", "h:0"])
def test_bad_listen_addresses_are_one_clear_error(listen: str) -> None:
    with pytest.raises(ListenError, match="HOST:PORT"):
        split_listen(listen)


def test_an_address_of_no_interface_is_named() -> None:
    with pytest.raises(ListenError, match="no interface of this machine"):
        bind_listen_socket("192.0.2.1:8080")  # TEST-NET-1: never this machine's; nothing is sent


def test_the_bound_socket_accepts_connections() -> None:
    port = free_port()
    sock = bind_listen_socket(f"127.0.0.1:{port}")
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2):
            pass
    finally:
        sock.close()
