"""Upload the dashboards (and optionally the datasource) through Grafana's HTTP API.

Plain httpx on purpose: the grafana-client package pulls in urllib3-future, which breaks
influxdb-client in the collector's environment (docs/dashboards.md).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Final

import httpx

from campuswatch.collector.dashboards.catalog import DASHBOARDS
from campuswatch.collector.dashboards.files import datasource_definition
from campuswatch.collector.dashboards.model import Flavour, render_dashboard

PUSH_MESSAGE: Final = "campuswatch dashboards push"


class GrafanaPushError(Exception):
    """Something a person must fix (URL, token, permissions); the text says what."""


@dataclass(slots=True)
class PushResult:
    folder_uid: str
    dashboard_urls: list[str] = field(default_factory=list)
    datasource_action: str | None = None
    """"created" or "updated" when a datasource was pushed, else None."""


class GrafanaApi:
    """The few Grafana endpoints ``push`` needs, with errors turned into advice."""

    def __init__(self, client: httpx.Client, base_url: str) -> None:
        self._client = client
        self._base_url = base_url.rstrip("/")

    def request(
        self, method: str, path: str, *, json: Any = None, allow_missing: bool = False
    ) -> Any:
        """The decoded JSON answer; None for a 404 when ``allow_missing``."""
        url = f"{self._base_url}{path}"
        try:
            response = self._client.request(method, url, json=json)
        except httpx.ConnectError as error:
            raise GrafanaPushError(
                f"cannot connect to Grafana at {self._base_url}: {error}. "
                "Is Grafana running and is --grafana the right URL?"
            ) from error
        except httpx.HTTPError as error:
            raise GrafanaPushError(f"request to {url} failed: {error!r}") from error
        status = response.status_code
        if status == 404 and allow_missing:
            return None
        if status == 401:
            raise GrafanaPushError(
                f"Grafana at {self._base_url} rejected the token (HTTP 401). Pass a "
                "service-account token (Administration → Service accounts) with --token."
            )
        if status == 403:
            raise GrafanaPushError(
                f"the token may not {method} {path} (HTTP 403): dashboards and folders "
                "need the Editor role, datasources the Admin role."
            )
        if status == 404:
            raise GrafanaPushError(
                f"Grafana at {self._base_url} answered 404 for {path}: is --grafana the "
                "Grafana root URL (with its sub-path, e.g. https://host/grafana)?"
            )
        if status >= 400:
            raise GrafanaPushError(
                f"Grafana answered HTTP {status} for {method} {path}: {response.text[:300]}"
            )
        try:
            return response.json()
        except ValueError as error:
            raise GrafanaPushError(
                f"{url} did not answer JSON (HTTP {status}): is --grafana a Grafana server?"
            ) from error

    def ensure_folder(self, title: str) -> str:
        folders = self.request("GET", "/api/folders")
        if not isinstance(folders, list):
            raise GrafanaPushError(f"unexpected answer from /api/folders: {folders!r:.200}")
        for folder in folders:
            if isinstance(folder, dict) and folder.get("title") == title:
                return str(folder["uid"])
        created = self.request("POST", "/api/folders", json={"title": title})
        return str(created["uid"])

    def upsert_datasource(self, definition: dict[str, Any]) -> str:
        uid = definition["uid"]
        existing = self.request("GET", f"/api/datasources/uid/{uid}", allow_missing=True)
        if existing is None:
            self.request("POST", "/api/datasources", json=definition)
            return "created"
        self.request("PUT", f"/api/datasources/uid/{uid}", json=definition)
        return "updated"

    def upload_dashboard(self, dashboard: dict[str, Any], folder_uid: str) -> str:
        # "id": None makes Grafana match by uid, so a re-push replaces instead of duplicating.
        body = {
            "dashboard": dashboard | {"id": None},
            "folderUid": folder_uid,
            "overwrite": True,
            "message": PUSH_MESSAGE,
        }
        answer = self.request("POST", "/api/dashboards/db", json=body)
        return f"{self._base_url}{answer.get('url', '')}" if isinstance(answer, dict) else ""


def push_dashboards(
    client: httpx.Client,
    grafana_url: str,
    *,
    flavour: Flavour,
    folder: str,
    datasource_url: str | None = None,
    influx_database: str | None = None,
) -> PushResult:
    """Create the folder if needed, the datasource if a URL is given, then every dashboard."""
    api = GrafanaApi(client, grafana_url)
    result = PushResult(folder_uid=api.ensure_folder(folder))
    if datasource_url is not None:
        definition = (
            datasource_definition(flavour, datasource_url, influx_database)
            if influx_database
            else datasource_definition(flavour, datasource_url)
        )
        result.datasource_action = api.upsert_datasource(definition)
    for dashboard in DASHBOARDS:
        rendered = render_dashboard(dashboard, flavour)
        result.dashboard_urls.append(api.upload_dashboard(rendered, result.folder_uid))
    return result
