"""The API as its users meet it: tokens, roles, site scope, manual edits, import/export."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from campuswatch.wire import encode_message
from campuswatch.wire.messages import HardwareInfo, HealthMessage, InventoryMessage, OsInfo
from tests.collector.conftest import RunningCollector
from tests.collector.test_ingest_e2e import publish
from tests.support import required
from tests.support.mosquitto import MosquittoBroker
from tests.support.waiting import wait_until


def inventory(site: str, device: str, os_version: str) -> tuple[str, bytes]:
    message = InventoryMessage(
        device_id=device,
        site=site,
        digest=(os_version * 64)[:64].replace(".", "0"),
        hostname=device.upper(),
        os=OsInfo(name="Debian GNU/Linux", version=os_version),
        hardware=HardwareInfo(vendor="Lenovo", model="ThinkCentre", serial=f"SN-{device}"),
    )
    return f"cw/v1/{site}/{device}/inventory", encode_message(message)


@pytest.fixture
def two_schools(mosquitto: MosquittoBroker, collector: RunningCollector) -> RunningCollector:
    api = collector.api
    for body in (
        {"id": "hcm", "level": "province", "name": "TP. Hồ Chí Minh"},
        {"id": "hcm-q1", "parent_id": "hcm", "level": "district", "name": "Quận 1"},
        {"id": "hcm-q1-a", "parent_id": "hcm-q1", "level": "school", "name": "THCS A"},
        {"id": "hcm-q3", "parent_id": "hcm", "level": "district", "name": "Quận 3"},
        {"id": "hcm-q3-b", "parent_id": "hcm-q3", "level": "school", "name": "THCS B"},
    ):
        assert api.put(f"/api/v1/sites/{body['id']}", json=body).status_code == 200
    for site, device in (("hcm-q1-a", "pc-a1"), ("hcm-q3-b", "pc-b1")):
        publish(mosquitto, *inventory(site, device, "12.4"))
    wait_until(lambda: collector.service.ingestor.stats.stored_total >= 2)
    return collector


def token_for(collector: RunningCollector, role: str, scope: str | None = None) -> str:
    response = collector.api.post(
        "/api/v1/tokens", json={"name": f"{role}-{scope}", "role": role, "site_scope": scope}
    )
    assert response.status_code == 201, response.text
    token: str = response.json()["token"]
    return token


def test_requests_without_a_valid_token_are_refused(collector: RunningCollector) -> None:
    anonymous = collector.api.get("/api/v1/devices", headers={"Authorization": ""})
    assert anonymous.status_code == 401
    wrong = collector.api.get("/api/v1/devices", headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401
    assert collector.api.get("/healthz", headers={"Authorization": ""}).status_code in (200, 503)


def test_tokens_are_stored_hashed_and_can_be_revoked(two_schools: RunningCollector) -> None:
    token = token_for(two_schools, "viewer")
    tokens = two_schools.get("/api/v1/tokens")
    assert all(token not in str(row) for row in tokens)
    headers = {"Authorization": f"Bearer {token}"}
    assert two_schools.api.get("/api/v1/devices", headers=headers).status_code == 200
    token_id = next(row["id"] for row in tokens if row["name"] == "viewer-None")
    assert two_schools.api.delete(f"/api/v1/tokens/{token_id}").status_code == 200
    assert two_schools.api.get("/api/v1/devices", headers=headers).status_code == 401


def test_district_scope_sees_only_its_schools(two_schools: RunningCollector) -> None:
    headers = {"Authorization": f"Bearer {token_for(two_schools, 'soc', 'hcm-q1')}"}
    devices = two_schools.api.get("/api/v1/devices", headers=headers).json()
    assert [d["device_id"] for d in devices["items"]] == ["pc-a1"]
    assert two_schools.api.get("/api/v1/devices/pc-b1", headers=headers).status_code == 404
    assets = two_schools.api.get("/api/v1/assets", headers=headers).json()
    assert {a["device_id"] for a in assets["items"]} == {"pc-a1"}
    sites = {s["id"] for s in two_schools.api.get("/api/v1/sites", headers=headers).json()}
    assert sites == {"hcm-q1", "hcm-q1-a"}


def test_roles_limit_what_can_be_changed(two_schools: RunningCollector) -> None:
    viewer = {"Authorization": f"Bearer {token_for(two_schools, 'viewer')}"}
    asset_id = two_schools.get("/api/v1/assets", search="pc-a1")["items"][0]["id"]
    edit = {"changes": {"room": "Phòng máy 2"}}
    assert (
        two_schools.api.patch(f"/api/v1/assets/{asset_id}", json=edit, headers=viewer).status_code
        == 403
    )
    assert (
        two_schools.api.post(
            "/api/v1/tokens", json={"name": "x", "role": "admin"}, headers=viewer
        ).status_code
        == 403
    )


def test_manual_edit_survives_a_later_agent_report(
    mosquitto: MosquittoBroker, two_schools: RunningCollector
) -> None:
    facilities = {"Authorization": f"Bearer {token_for(two_schools, 'facilities')}"}
    asset = two_schools.get("/api/v1/assets", search="pc-a1")["items"][0]
    response = two_schools.api.patch(
        f"/api/v1/assets/{asset['id']}",
        json={
            "changes": {"name": "Máy chủ phòng Tin", "room": "P.201"},
            "expected_version": asset["version"],
        },
        headers=facilities,
    )
    assert response.status_code == 200, response.text
    stale = two_schools.api.patch(
        f"/api/v1/assets/{asset['id']}",
        json={"changes": {"room": "P.999"}, "expected_version": asset["version"]},
        headers=facilities,
    )
    assert stale.status_code == 409
    publish(mosquitto, *inventory("hcm-q1-a", "pc-a1", "12.5"))
    wait_until(lambda: two_schools.get(f"/api/v1/assets/{asset['id']}")["os_version"] == "12.5")
    after = two_schools.get(f"/api/v1/assets/{asset['id']}")
    assert after["name"] == "Máy chủ phòng Tin"
    assert after["room"] == "P.201"
    history = two_schools.get(f"/api/v1/assets/{asset['id']}/history")
    assert any(row["actor"].startswith("user:facilities") for row in history)


def test_bad_edit_lists_every_problem(two_schools: RunningCollector) -> None:
    asset_id = two_schools.get("/api/v1/assets", search="pc-a1")["items"][0]["id"]
    response = two_schools.api.patch(
        f"/api/v1/assets/{asset_id}",
        json={"changes": {"status": "vanished", "security_level": 9, "purchase_date": "yesterday"}},
    )
    assert response.status_code == 422
    assert set(response.json()["detail"]) == {"status", "security_level", "purchase_date"}


def test_csv_export_then_dry_run_import_reports_row_errors(two_schools: RunningCollector) -> None:
    exported = two_schools.api.get("/api/v1/assets/export.csv")
    assert exported.status_code == 200
    text = exported.content.decode("utf-8-sig")
    assert "SN-pc-a1" in text
    broken = text.replace("in_service", "misplaced", 1)
    report = two_schools.api.post(
        "/api/v1/assets/import", params={"filename": "assets.csv"}, content=broken.encode()
    ).json()
    assert report["dry_run"] is True and report["applied"] is False
    assert any(error["column"] == "status" for error in report["errors"])
    xlsx = two_schools.api.get("/api/v1/assets/export.xlsx")
    assert xlsx.content[:2] == b"PK"


def test_openapi_lists_every_resource(collector: RunningCollector) -> None:
    paths = collector.api.get("/openapi.json").json()["paths"]
    for prefix in (
        "/api/v1/sites",
        "/api/v1/devices",
        "/api/v1/assets",
        "/api/v1/dead-letters",
        "/healthz",
    ):
        assert any(path.startswith(prefix) for path in paths), prefix


def test_metrics_pass_promtool(
    mosquitto: MosquittoBroker, collector: RunningCollector, tmp_path: Path
) -> None:
    publish(
        mosquitto,
        "cw/v1/s1/pc-1/health",
        encode_message(HealthMessage(device_id="pc-1", site="s1", cpu_pct=3.0)),
    )
    wait_until(lambda: collector.service.ingestor.stats.stored_total >= 1)
    text = collector.api.get("/metrics").text
    assert 'campuswatch_devices{device_type="default",site="s1",status="online"} 1.0' in text
    promtool = required.program("promtool", "prometheus")
    result = subprocess.run(
        [promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_healthz_reports_a_missing_broker(
    collector: RunningCollector, mosquitto: MosquittoBroker
) -> None:
    assert collector.get("/healthz")["checks"]["broker"] == "ok"
    mosquitto.stop()
    wait_until(lambda: collector.api.get("/healthz").status_code == 503)
