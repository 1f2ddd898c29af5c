"""What a request must be before any route reads it: small enough, and, when a browser's
cookie authenticates a write, from a page of the collector itself; /metrics behind a token."""

from __future__ import annotations

import asyncio
import select
import socket
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from prometheus_client.registry import CollectorRegistry
from pydantic import SecretStr
from sqlalchemy.orm import Session, sessionmaker
from starlette.types import Message

from campuswatch.collector.api.app import create_app
from campuswatch.collector.api.assets import MAX_IMPORT_BYTES
from campuswatch.collector.api.context import ApiContext
from campuswatch.collector.db.access import create_api_token, create_user
from campuswatch.collector.db.engine import make_engine, session_factory, upgrade
from campuswatch.collector.liveness import LivenessTracker
from campuswatch.collector.settings import CollectorSettings
from tests.support.http_server import served_app

BASE = "http://testserver"
PASSWORD = "correct horse battery staple"
METRICS_TOKEN = "metrics-" + "m" * 24
MIB = 1024 * 1024


@dataclass
class Api:
    app: FastAPI
    context: ApiContext
    sessions: sessionmaker[Session]
    admin_token: str

    def client(self, **headers: str) -> TestClient:
        return TestClient(self.app, base_url=BASE, follow_redirects=False, headers=headers)


def build(tmp_path: Path, **settings: Any) -> Api:
    url = f"sqlite:///{tmp_path / 'register.sqlite'}"
    upgrade(url)
    sessions = session_factory(make_engine(url))
    with sessions() as session:
        _, admin_token = create_api_token(session, name="test-admin", role="admin")
        create_user(session, username="admin", password=PASSWORD, role="admin")
        session.commit()
    config = CollectorSettings(data_dir=tmp_path, **settings)
    context = ApiContext(
        settings=config,
        sessions=sessions,
        liveness=LivenessTracker(config.liveness),
        registry=CollectorRegistry(auto_describe=False),
    )
    return Api(create_app(context), context, sessions, admin_token)


@pytest.fixture
def api(tmp_path: Path) -> Iterator[Api]:
    built = build(tmp_path)
    yield built
    built.sessions.kw["bind"].dispose()


# --- body size ------------------------------------------------------------------------------


@dataclass
class Upload:
    """Drives the ASGI app directly with a body it produces chunk by chunk, counting what
    the app pulled, as a server would on a slow, endless chunked upload."""

    total: int
    chunk: int = 64 * 1024
    prefix: bytes = b""
    filler: bytes = b"{"
    pulled: int = 0
    sent: list[Message] = field(default_factory=list)

    async def receive(self) -> dict[str, Any]:
        if self.pulled >= self.total:
            return {"type": "http.disconnect"}
        size = min(self.chunk, self.total - self.pulled)
        body = (self.prefix if self.pulled == 0 else b"") + self.filler * size
        self.pulled += len(body)
        return {"type": "http.request", "body": body, "more_body": self.pulled < self.total}

    async def send(self, message: Message) -> None:
        self.sent.append(message)

    @property
    def status(self) -> int:
        return int(next(m["status"] for m in self.sent if m["type"] == "http.response.start"))


def scope(method: str, path: str, headers: list[tuple[bytes, bytes]]) -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"testserver"), *headers],
        "client": ("192.0.2.1", 40000),
        "server": ("testserver", 80),
    }


def drive(
    api: Api, method: str, path: str, headers: list[tuple[bytes, bytes]], upload: Upload
) -> None:
    asyncio.run(api.app(scope(method, path, headers), upload.receive, upload.send))


def test_a_chunked_50_mb_unauthenticated_put_is_refused_without_being_buffered(api: Api) -> None:
    upload = Upload(total=50 * MIB)
    headers = [(b"content-type", b"application/json"), (b"transfer-encoding", b"chunked")]
    drive(api, "PUT", "/api/v1/sites/x", headers, upload)
    assert upload.status == 413
    # Read only up to the limit (plus the chunk that crossed it), never the 50 MB.
    assert upload.pulled <= api.context.settings.max_request_body_bytes + upload.chunk


def test_a_declared_200_mb_body_is_refused_before_a_byte_is_read(api: Api) -> None:
    upload = Upload(total=200 * MIB)
    headers = [(b"content-type", b"application/json"), (b"content-length", str(200 * MIB).encode())]
    drive(api, "PUT", "/api/v1/sites/x", headers, upload)
    assert upload.status == 413
    assert upload.pulled == 0
    refused = [key for key in api.context.rejects.counts() if key[1:] == ("PUT", "413")]
    assert refused  # counted in campuswatch_api_rejected_total


def test_an_unparseable_content_length_is_a_bad_request(api: Api) -> None:
    upload = Upload(total=10)
    headers = [(b"content-length", b"12abc")]
    drive(api, "PUT", "/api/v1/sites/x", headers, upload)
    assert upload.status == 400 and upload.pulled == 0


def test_bodies_within_the_limit_reach_the_routes(api: Api) -> None:
    client = api.client(Authorization=f"Bearer {api.admin_token}")
    site = {"id": "s1", "level": "school", "name": "THCS A " + "x" * 100}
    assert client.put("/api/v1/sites/s1", json=site).status_code == 200
    padded = {**site, "padding": " " * (2 * MIB)}
    assert client.put("/api/v1/sites/s1", json=padded).status_code == 413


def test_the_import_routes_take_files_up_to_their_own_larger_limit(api: Api) -> None:
    client = api.client(Authorization=f"Bearer {api.admin_token}")
    big_but_allowed = b"kind,name\r\n" + b"pc,x\r\n" * (3 * MIB // 6)
    response = client.post(
        "/api/v1/assets/import", params={"filename": "a.csv"}, content=big_but_allowed
    )
    assert response.status_code == 200, response.text[:300]
    upload = Upload(total=MAX_IMPORT_BYTES + 2 * MIB)
    headers = [(b"authorization", f"Bearer {api.admin_token}".encode())]
    drive(api, "POST", "/api/v1/assets/import", headers, upload)
    assert upload.status == 413
    assert upload.pulled <= MAX_IMPORT_BYTES + upload.chunk


def test_the_ui_import_form_has_the_import_limit(api: Api) -> None:
    part = b'--x\r\nContent-Disposition: form-data; name="file"; filename="a.csv"\r\n\r\n'
    upload = Upload(total=MAX_IMPORT_BYTES + 4 * MIB, prefix=part, filler=b"a")
    headers = [(b"content-type", b"multipart/form-data; boundary=x")]
    drive(api, "POST", "/ui/inventory/import", headers, upload)
    assert upload.status == 413
    assert 2 * MIB < upload.pulled <= MAX_IMPORT_BYTES + 2 * MIB


# --- cookie-authenticated API writes ---------------------------------------------------------


def ui_session(api: Api) -> TestClient:
    client = api.client()
    response = client.post(
        "/ui/login", data={"username": "admin", "password": PASSWORD}, headers={"Origin": BASE}
    )
    assert response.status_code == 303
    return client


SITE = {"id": "s1", "level": "school", "name": "THCS A"}


def test_a_cookie_authenticated_write_from_another_origin_is_refused(api: Api) -> None:
    browser = ui_session(api)
    evil = {"Origin": "https://evil.example"}
    response = browser.put("/api/v1/sites/s1", json=SITE, headers=evil)
    assert response.status_code == 403
    assert "origin" in response.json()["detail"]
    referer = {"Referer": "https://evil.example/page"}
    assert browser.put("/api/v1/sites/s1", json=SITE, headers=referer).status_code == 403
    assert browser.put("/api/v1/sites/s1", json=SITE).status_code == 403  # neither header
    assert browser.get("/api/v1/sites/s1").status_code == 404  # nothing was written
    assert browser.get("/api/v1/sites").status_code == 200  # reads are not writes


def test_a_cookie_authenticated_write_from_the_collectors_own_pages_passes(api: Api) -> None:
    browser = ui_session(api)
    assert browser.put("/api/v1/sites/s1", json=SITE, headers={"Origin": BASE}).status_code == 200
    same_referer = {"Referer": f"{BASE}/ui/inventory"}
    assert browser.put("/api/v1/sites/s1", json=SITE, headers=same_referer).status_code == 200


def test_bearer_token_writes_need_no_origin(api: Api) -> None:
    client = api.client(Authorization=f"Bearer {api.admin_token}")
    assert client.put("/api/v1/sites/s1", json=SITE).status_code == 200
    evil = {"Origin": "https://evil.example"}
    assert client.put("/api/v1/sites/s1", json=SITE, headers=evil).status_code == 200


def test_the_public_url_is_an_accepted_origin_behind_a_proxy(tmp_path: Path) -> None:
    api = build(tmp_path, public_url="https://campuswatch.school.vn")
    browser = ui_session(api)
    public = {"Origin": "https://campuswatch.school.vn"}
    assert browser.put("/api/v1/sites/s1", json=SITE, headers=public).status_code == 200
    wrong_scheme = {"Origin": "http://campuswatch.school.vn"}
    assert browser.put("/api/v1/sites/s1", json=SITE, headers=wrong_scheme).status_code == 403


# --- /metrics -------------------------------------------------------------------------------


def test_metrics_are_open_without_a_configured_token(api: Api) -> None:
    assert api.client().get("/metrics").status_code == 200


def test_metrics_need_the_configured_token(tmp_path: Path) -> None:
    api = build(tmp_path, metrics_token=SecretStr(METRICS_TOKEN))
    client = api.client()
    anonymous = client.get("/metrics")
    assert anonymous.status_code == 401
    assert anonymous.headers["www-authenticate"] == "Bearer"
    assert "campuswatch" not in anonymous.text
    wrong = client.get("/metrics", headers={"Authorization": "Bearer " + "m" * 32})
    assert wrong.status_code == 401
    # An API token is not a metrics token (a scraper needs no register access, and back).
    api_token = client.get("/metrics", headers={"Authorization": f"Bearer {api.admin_token}"})
    assert api_token.status_code == 401
    good = client.get("/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"})
    assert good.status_code == 200
    assert "campuswatch_api_rejected_total" in good.text


def test_a_placeholder_metrics_token_is_refused() -> None:
    with pytest.raises(ValueError, match="placeholder"):
        CollectorSettings(metrics_token=SecretStr("secret"))


# --- through a real HTTP server ---------------------------------------------------------------


@pytest.fixture
def served(api: Api) -> Iterator[int]:
    with served_app(api.app) as base:
        yield int(base.rpartition(":")[2])


def test_uvicorn_cuts_off_an_endless_chunked_put(api: Api, served: int) -> None:
    """An anonymous client streams up to 50 MB chunked; the answer is a 413 long before
    the end, and the connection is closed rather than drained."""
    chunk = b"{" * (64 * 1024)
    frame = f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n"
    sent = 0
    with socket.create_connection(("127.0.0.1", served)) as connection:
        connection.sendall(
            b"PUT /api/v1/sites/x HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
        )
        try:
            while sent < 50 * MIB:
                if select.select([connection], [], [], 0)[0]:
                    break  # the server has answered
                connection.sendall(frame)
                sent += len(chunk)
        except (BrokenPipeError, ConnectionResetError):
            pass  # closed on us mid-send: also a refusal; the status line is still there
        answer = connection.recv(4096)
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert sent < 50 * MIB
