"""Real receivers for the forwarding tests: syslog over UDP, TCP and TLS, and an HTTPS-less
webhook endpoint. Each can be stopped and started again on the same port."""

from __future__ import annotations

import contextlib
import json
import socket
import socketserver
import ssl
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from tests.support.ports import free_port


class Inbox:
    """Thread-safe list of received items with waiting."""

    def __init__(self) -> None:
        self.items: list[Any] = []
        self._condition = threading.Condition()

    def add(self, item: Any) -> None:
        with self._condition:
            self.items.append(item)
            self._condition.notify_all()

    def wait_for(
        self, predicate: Callable[[list[Any]], bool], timeout_s: float = 20.0
    ) -> list[Any]:
        deadline = time.monotonic() + timeout_s
        with self._condition:
            while not predicate(self.items):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(
                        f"condition not met in {timeout_s} s; have {len(self.items)}"
                    )
                self._condition.wait(remaining)
            return list(self.items)

    def snapshot(self) -> list[Any]:
        with self._condition:
            return list(self.items)


def read_octet_counted(stream: Any) -> bytes | None:
    """One RFC 6587 frame from a file-like stream, or None at end of stream."""
    digits = b""
    while True:
        char = stream.read(1)
        if not char:
            return None
        if char == b" ":
            break
        if not char.isdigit() or len(digits) > 9:
            raise ValueError(f"bad octet count {digits + char!r}")
        digits += char
    body = stream.read(int(digits))
    if len(body) != int(digits):
        return None
    return bytes(body)


@dataclass
class SyslogReceiver:
    transport: str
    tls_context: ssl.SSLContext | None = None
    port: int = field(default_factory=free_port)
    inbox: Inbox = field(default_factory=Inbox)
    _server: socketserver.BaseServer | None = None
    _thread: threading.Thread | None = None
    _connections: list[socket.socket] = field(default_factory=list)

    def start(self) -> None:
        receiver = self

        class DatagramHandler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                receiver.inbox.add(self.request[0])

        class StreamHandler(socketserver.StreamRequestHandler):
            def setup(self) -> None:
                if receiver.tls_context is not None:
                    self.request = receiver.tls_context.wrap_socket(self.request, server_side=True)
                    self.connection = self.request
                receiver._connections.append(self.request)
                super().setup()

            def handle(self) -> None:
                try:
                    while (frame := read_octet_counted(self.rfile)) is not None:
                        receiver.inbox.add(frame)
                except (OSError, ValueError):
                    return

        server: socketserver.BaseServer
        if self.transport == "udp":
            server = socketserver.ThreadingUDPServer(("127.0.0.1", self.port), DatagramHandler)
        else:
            socketserver.ThreadingTCPServer.allow_reuse_address = True
            server = socketserver.ThreadingTCPServer(("127.0.0.1", self.port), StreamHandler)
            server.daemon_threads = True  # type: ignore[attr-defined]
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop listening and close every open connection, as a restarting SIEM would."""
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        for connection in self._connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)
            connection.close()
        self._connections.clear()
        self._server = None

    def messages(self) -> list[bytes]:
        return self.inbox.snapshot()


@dataclass(frozen=True)
class Pki:
    ca_file: Path
    server_cert: Path
    server_key: Path
    other_ca_file: Path

    def server_context(self) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.server_cert, self.server_key)
        return context


def make_test_pki(folder: Path) -> Pki:
    """A CA, a server certificate for 127.0.0.1/localhost signed by it, and an unrelated CA."""

    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=folder, check=True, capture_output=True)

    ec = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")
    for name in ("ca", "other-ca"):
        run("req", "-x509", *ec, "-keyout", f"{name}.key", "-out", f"{name}.pem",
            "-days", "2", "-subj", f"/CN=CampusWatch test {name}")  # fmt: skip
    run("req", *ec, "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=localhost")
    (folder / "server.ext").write_text(
        "subjectAltName=IP:127.0.0.1,DNS:localhost\n"
        "basicConstraints=CA:FALSE\n"
        "keyUsage=digitalSignature\n"
        "extendedKeyUsage=serverAuth,clientAuth\n",
        encoding="utf-8",
    )
    run(
        *("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key"),
        *("-CAcreateserial", "-out", "server.pem", "-days", "2", "-extfile", "server.ext"),
    )
    return Pki(
        folder / "ca.pem", folder / "server.pem", folder / "server.key", folder / "other-ca.pem"
    )


@dataclass
class WebhookRequest:
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class WebhookReceiver:
    """Answers with the next status from ``statuses`` (then 200) and records every request."""

    port: int = field(default_factory=free_port)
    inbox: Inbox = field(default_factory=Inbox)
    statuses: list[int] = field(default_factory=list)
    reject_when: Callable[[bytes], bool] | None = None
    _server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/soc/alerts"

    def start(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(length)
                if receiver.statuses:
                    status = receiver.statuses.pop(0)
                elif receiver.reject_when is not None and receiver.reject_when(body):
                    status = 422
                else:
                    status = 200
                if status < 300:
                    receiver.inbox.add(WebhookRequest(self.path, dict(self.headers), body))
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
