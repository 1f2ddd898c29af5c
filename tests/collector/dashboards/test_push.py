"""`campuswatch dashboards push` against an in-process fake of Grafana's HTTP API."""

from __future__ import annotations

import json
import re
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from campuswatch.collector.dashboards.catalog import DASHBOARDS
from campuswatch.collector.dashboards.cli import app
from campuswatch.collector.dashboards.push import GrafanaPushError, push_dashboards
from tests.support.ports import free_port

GRAFANA = "http://grafana.test:3000/sub"


class FakeGrafana:
    """Keeps folders, datasources and dashboards like Grafana does, keyed by uid."""

    def __init__(self, token: str = "good") -> None:
        self.token = token
        self.folders: dict[str, str] = {"general-uid": "General"}
        self.datasources: dict[str, dict[str, Any]] = {}
        self.dashboards: dict[str, dict[str, Any]] = {}
        self.requests: list[str] = []

    def handle(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path.removeprefix("/sub")
        self.requests.append(f"{request.method} {path}")
        if request.headers.get("authorization") != f"Bearer {self.token}":
            return httpx.Response(401, json={"message": "Unauthorized"})
        body: dict[str, Any] = json.loads(request.content) if request.content else {}
        if (request.method, path) == ("GET", "/api/folders"):
            return httpx.Response(
                200, json=[{"uid": u, "title": t} for u, t in self.folders.items()]
            )
        if (request.method, path) == ("POST", "/api/folders"):
            uid = f"folder-{len(self.folders)}"
            self.folders[uid] = body["title"]
            return httpx.Response(200, json={"uid": uid, "title": body["title"]})
        if path.startswith("/api/datasources/uid/"):
            uid = path.rsplit("/", 1)[-1]
            if request.method == "GET":
                known = self.datasources.get(uid)
                return httpx.Response(200, json=known) if known else httpx.Response(404, json={})
            self.datasources[uid] = body
            return httpx.Response(200, json={"message": "Datasource updated"})
        if (request.method, path) == ("POST", "/api/datasources"):
            self.datasources[body["uid"]] = body
            return httpx.Response(200, json={"message": "Datasource added"})
        if (request.method, path) == ("POST", "/api/dashboards/db"):
            assert body["overwrite"] is True and body["dashboard"]["id"] is None
            dashboard = body["dashboard"]
            self.dashboards[dashboard["uid"]] = body
            return httpx.Response(200, json={"status": "success", "url": f"/d/{dashboard['uid']}"})
        return httpx.Response(404, json={"message": "Not found"})


def client_for(fake: FakeGrafana, token: str = "good") -> httpx.Client:
    return httpx.Client(
        transport=httpx.MockTransport(fake.handle), headers={"Authorization": f"Bearer {token}"}
    )


def test_push_creates_folder_datasource_and_every_dashboard_then_updates() -> None:
    fake = FakeGrafana()
    with client_for(fake) as client:
        first = push_dashboards(
            client,
            GRAFANA + "/",
            flavour="influxdb",
            folder="CampusWatch",
            datasource_url="http://influx:8086",
            influx_database="district",
        )
        second = push_dashboards(
            client, GRAFANA, flavour="influxdb", folder="CampusWatch", datasource_url="http://x"
        )
    assert first.datasource_action == "created" and second.datasource_action == "updated"
    assert first.folder_uid == second.folder_uid  # found by title, not created twice
    assert list(fake.folders.values()).count("CampusWatch") == 1
    assert set(fake.dashboards) == {d.uid("influxdb") for d in DASHBOARDS}
    assert all(body["folderUid"] == first.folder_uid for body in fake.dashboards.values())
    assert first.dashboard_urls[0] == f"{GRAFANA}/d/{DASHBOARDS[0].uid('influxdb')}"
    assert fake.datasources["campuswatch-influxdb"]["url"] == "http://x"
    assert fake.datasources["campuswatch-influxdb"]["jsonData"]["dbName"] == "campuswatch"


def test_push_without_datasource_url_leaves_datasources_alone() -> None:
    fake = FakeGrafana()
    with client_for(fake) as client:
        result = push_dashboards(client, GRAFANA, flavour="victoriametrics", folder="CW")
    assert result.datasource_action is None and fake.datasources == {}
    assert not any("datasources" in request for request in fake.requests)


@pytest.mark.parametrize(
    ("token", "base", "expected"),
    [
        ("bad", GRAFANA, "rejected the token (HTTP 401)"),
        ("good", "http://grafana.test:3000/wrong", "answered 404 for /api/folders"),
    ],
)
def test_push_errors_say_what_to_fix(token: str, base: str, expected: str) -> None:
    fake = FakeGrafana()

    def wrong_prefix(request: httpx.Request) -> httpx.Response:
        if not request.url.path.startswith("/sub"):
            return httpx.Response(404, json={"message": "Not found"})
        return fake.handle(request)

    transport = httpx.MockTransport(wrong_prefix)
    headers = {"Authorization": f"Bearer {token}"}
    with (
        httpx.Client(transport=transport, headers=headers) as client,
        pytest.raises(GrafanaPushError, match=re.escape(expected)),
    ):
        push_dashboards(client, base, flavour="victoriametrics", folder="CW")
    assert fake.dashboards == {}


def test_cli_reports_connection_refused_and_exits_1() -> None:
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    result = CliRunner().invoke(app, ["push", "--grafana", url, "--token", "t"])
    assert result.exit_code == 1
    assert f"cannot connect to Grafana at {url}" in result.output


def test_cli_rejects_unknown_flavour() -> None:
    result = CliRunner().invoke(
        app, ["push", "--grafana", "http://127.0.0.1:1", "--token", "t", "--flavour", "mysql"]
    )
    assert result.exit_code == 2
