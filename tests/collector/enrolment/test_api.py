"""Enrolment through the API: tokens, the enrol call, clones, revocation, and the broker files."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import msgspec
import pytest

from campuswatch.collector.broker.credentials import BrokerCredentials, CredentialsError
from campuswatch.collector.broker.passwords import verify_password
from campuswatch.collector.enrolment.models import EnrolmentToken
from campuswatch.collector.service import BOOTSTRAP_TOKEN_NAME
from campuswatch.wire.enrolment import EnrolRequest, MachineFacts
from campuswatch.wire.ids import utc_now
from tests.collector.conftest import CollectorFactory, RunningCollector

SCHOOL = "hn-bd-thcs-a"
SCHOOL_B = "hn-bd-thcs-b"  # same district
FAR_SCHOOL = "hn-hk-thpt-c"  # another district
PC = MachineFacts.from_plain("4c4c4544-0001", "machine-1", ("3c:52:82:00:00:01",))
CLONE = MachineFacts.from_plain("4c4c4544-0002", "machine-1", ("3c:52:82:00:00:02",))


@pytest.fixture
def enrolling(collector_factory: CollectorFactory, tmp_path: Path) -> RunningCollector:
    running = collector_factory(
        broker_dir=tmp_path / "broker", agent_broker_url="mqtts://broker.school.vn:8883"
    )
    (tmp_path / "broker").mkdir()
    (tmp_path / "broker" / "ca.pem").write_text("-----BEGIN CERTIFICATE-----\nMIIB\n")
    for body in (
        {"id": "hn-bd", "level": "district", "name": "Ba Đình"},
        {"id": SCHOOL, "parent_id": "hn-bd", "level": "school", "name": "THCS A"},
        {"id": SCHOOL_B, "parent_id": "hn-bd", "level": "school", "name": "THCS B"},
        {"id": "hn-hk", "level": "district", "name": "Hoàn Kiếm"},
        {"id": FAR_SCHOOL, "parent_id": "hn-hk", "level": "school", "name": "THPT C"},
    ):
        assert running.api.put(f"/api/v1/sites/{body['id']}", json=body).status_code == 200
    return running


def new_token(collector: RunningCollector, **body: Any) -> dict[str, Any]:
    response = collector.api.post("/api/v1/enrolment-tokens", json={"site_id": SCHOOL, **body})
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


def enrol(
    collector: RunningCollector,
    token: str,
    device_id: str,
    machine: MachineFacts = PC,
    *,
    proof: str | None = None,
) -> Any:
    request = EnrolRequest(
        token=token,
        device_id=device_id,
        product_uuid_sha256=machine.product_uuid_sha256,
        machine_id_sha256=machine.machine_id_sha256,
        mac_sha256=sorted(machine.mac_sha256),
        hostname="LAB1-PC01",
        broker_password=proof,
    )
    # The enrol call carries no bearer token: the enrolment token is the credential.
    return collector.api.post(
        "/api/v1/enrol", content=msgspec.json.encode(request), headers={"Authorization": ""}
    )


def test_token_is_shown_once_and_grants_a_login_pinned_to_its_school(
    enrolling: RunningCollector, tmp_path: Path
) -> None:
    created = new_token(enrolling, max_uses=40, note="lab 1 image")
    assert created["token"].startswith("cwe_") and created["state"] == "active"
    listed = enrolling.get("/api/v1/enrolment-tokens")
    assert [t["id"] for t in listed] == [created["id"]] and "token" not in listed[0]

    response = enrol(enrolling, created["token"], "pc-lab1-01")
    assert response.status_code == 201, response.text
    granted = response.json()
    assert granted["site"] == SCHOOL and granted["username"] == "pc-lab1-01"
    assert granted["broker_url"] == "mqtts://broker.school.vn:8883"
    assert granted["ca_pem"].startswith("-----BEGIN CERTIFICATE-----")

    store = BrokerCredentials(tmp_path / "broker")
    account = next(a for a in store.list() if a.username == "pc-lab1-01")
    assert account.site == SCHOOL and verify_password(granted["password"], account.password_hash)
    acl = (tmp_path / "broker" / "acl").read_text()
    assert f"topic write cw/v1/{SCHOOL}/pc-lab1-01/av" in acl
    assert enrolling.get("/api/v1/enrolment-tokens")[0]["uses"] == 1
    [record] = enrolling.get("/api/v1/enrolments")
    assert record["hostname"] == "LAB1-PC01" and record["enrol_count"] == 1


def test_the_same_machine_re_enrols_with_a_new_password(enrolling: RunningCollector) -> None:
    token = new_token(enrolling)["token"]
    first = enrol(enrolling, token, "pc-1").json()["password"]
    repaired = MachineFacts.from_plain("4c4c4544-0001", "machine-1", ("aa:aa:aa:00:00:01",))
    # Its current login is the proof that the request comes from the device itself.
    second = enrol(enrolling, token, "pc-1", repaired, proof=first)
    assert second.status_code == 201, second.text
    assert second.json()["password"] != first
    assert enrolling.get("/api/v1/enrolments")[0]["enrol_count"] == 2


def test_a_clone_claiming_an_enrolled_id_is_refused_and_counted(
    enrolling: RunningCollector,
) -> None:
    token = new_token(enrolling)["token"]
    assert enrol(enrolling, token, "pc-1").status_code == 201
    refused = enrol(enrolling, token, "pc-1", CLONE)
    assert refused.status_code == 409
    assert refused.json()["reason"] == "clone"
    assert enrolling.get("/api/v1/enrolments")[0]["clone_attempts"] == 1
    # The clone enrols on its own under a new id; the original keeps its login.
    assert enrol(enrolling, token, "pc-1-clone", CLONE).status_code == 201
    metrics = enrolling.api.get("/metrics").text
    assert 'campuswatch_enrolment_requests_total{outcome="clone"} 1.0' in metrics
    assert 'campuswatch_enrolment_requests_total{outcome="enrolled"} 2.0' in metrics


def test_tokens_expire_run_out_and_can_be_revoked(enrolling: RunningCollector) -> None:
    limited = new_token(enrolling, max_uses=1)
    assert enrol(enrolling, limited["token"], "pc-1").status_code == 201
    exhausted = enrol(enrolling, limited["token"], "pc-2")
    assert (exhausted.status_code, exhausted.json()["reason"]) == (403, "token_exhausted")

    revoked = new_token(enrolling)
    response = enrolling.api.delete(f"/api/v1/enrolment-tokens/{revoked['id']}")
    assert response.json()["state"] == "revoked"
    assert enrol(enrolling, revoked["token"], "pc-3").json()["reason"] == "token_revoked"

    expiring = new_token(enrolling)
    with enrolling.service.sessions() as session:
        row = session.get(EnrolmentToken, expiring["id"])
        assert row is not None
        row.expires_at = utc_now() - timedelta(seconds=1)
        session.commit()
    assert enrol(enrolling, expiring["token"], "pc-4").json()["reason"] == "token_expired"
    assert enrol(enrolling, "cwe_" + "n" * 43, "pc-5").json()["reason"] == "token_unknown"
    states = {t["id"]: t["state"] for t in enrolling.get("/api/v1/enrolment-tokens")}
    assert states == {
        limited["id"]: "exhausted",
        revoked["id"]: "revoked",
        expiring["id"]: "expired",
    }


def test_revoked_device_loses_its_login_and_cannot_re_enrol_until_reinstated(
    enrolling: RunningCollector, tmp_path: Path
) -> None:
    token = new_token(enrolling)["token"]
    assert enrol(enrolling, token, "pc-stolen").status_code == 201
    response = enrolling.api.post(
        "/api/v1/devices/pc-stolen/revoke", json={"note": "stolen from lab 2"}
    )
    assert response.status_code == 200, response.text
    assert response.json()["revoked_by"] == f"user:{BOOTSTRAP_TOKEN_NAME}"
    assert response.json()["revoke_note"] == "stolen from lab 2"
    assert "pc-stolen" not in (tmp_path / "broker" / "passwd").read_text()
    again = enrol(enrolling, token, "pc-stolen")
    assert (again.status_code, again.json()["reason"]) == (403, "device_revoked")

    assert enrolling.api.post("/api/v1/devices/pc-stolen/reinstate").status_code == 200
    assert enrol(enrolling, token, "pc-stolen").status_code == 201
    assert enrolling.api.post("/api/v1/devices/nobody/revoke", json={}).status_code == 404


def test_bad_requests_are_refused_clearly(enrolling: RunningCollector) -> None:
    api = enrolling.api
    for body, status in (
        (b"{", 422),
        (b'{"token": "cwe_xxxxxxxxxxxxxxx", "device_id": "a/b"}', 422),
        (b"x" * 20_000, 413),
    ):
        response = api.post("/api/v1/enrol", content=body, headers={"Authorization": ""})
        assert response.status_code == status, response.text
        assert response.json()["reason"] == "invalid"
    unknown_site = api.post("/api/v1/enrolment-tokens", json={"site_id": "nowhere"})
    assert unknown_site.status_code == 422
    too_long = api.post(
        "/api/v1/enrolment-tokens", json={"site_id": SCHOOL, "expires_in_hours": 24 * 365}
    )
    assert too_long.status_code == 422


def test_only_admins_manage_tokens(enrolling: RunningCollector) -> None:
    response = enrolling.api.post(
        "/api/v1/tokens", json={"name": "soc", "role": "soc", "site_scope": None}
    )
    soc = {"Authorization": f"Bearer {response.json()['token']}"}
    assert enrolling.api.get("/api/v1/enrolment-tokens", headers=soc).status_code == 403
    assert (
        enrolling.api.post("/api/v1/devices/pc-1/revoke", json={}, headers=soc).status_code == 403
    )


def test_enrolment_without_a_broker_folder_says_what_to_configure(
    collector: RunningCollector,
) -> None:
    collector.api.put(
        f"/api/v1/sites/{SCHOOL}", json={"id": SCHOOL, "level": "school", "name": "A"}
    )
    refused = collector.api.post("/api/v1/enrolment-tokens", json={"site_id": SCHOOL})
    assert refused.status_code == 422
    assert "CW_COLLECTOR_BROKER_DIR" in refused.json()["detail"]
    # An unknown token is refused as such, configured or not.
    assert enrol(collector, "cwe_" + "n" * 43, "pc-1").json()["reason"] == "token_unknown"


# --- no takeover: a token enrols only into its own school, an existing id needs proof ---


def account_of(tmp_path: Path, device_id: str) -> tuple[str | None, str] | None:
    store = BrokerCredentials(tmp_path / "broker")
    account = next((a for a in store.list() if a.username == device_id), None)
    return None if account is None else (account.site, account.password_hash)


def test_an_id_with_a_newline_is_refused_and_the_broker_files_stay_whole(
    enrolling: RunningCollector, tmp_path: Path
) -> None:
    token = new_token(enrolling)["token"]
    assert enrol(enrolling, token, "pc-1").status_code == 201
    passwd = (tmp_path / "broker" / "passwd").read_text()
    for device_id in ("evil\n", "pc-1\n"):
        body = {"token": token, "device_id": device_id}
        refused = enrolling.api.post(
            "/api/v1/enrol", content=msgspec.json.encode(body), headers={"Authorization": ""}
        )
        assert (refused.status_code, refused.json()["reason"]) == (422, "invalid")
    assert (tmp_path / "broker" / "passwd").read_text() == passwd


def test_another_schools_token_cannot_take_over_a_login_made_by_hand(
    enrolling: RunningCollector, tmp_path: Path
) -> None:
    # `campuswatch broker add-device`: a login with no enrolment record.
    password = BrokerCredentials(tmp_path / "broker").add_device(SCHOOL, "proj-101")
    before = account_of(tmp_path, "proj-101")
    for site in (SCHOOL_B, SCHOOL):
        token = new_token(enrolling, site_id=site)["token"]
        refused = enrol(enrolling, token, "proj-101")
        assert (refused.status_code, refused.json()["reason"]) == (409, "already_enrolled")
        assert account_of(tmp_path, "proj-101") == before
    assert enrolling.get("/api/v1/enrolments") == []
    assert all(t["uses"] == 0 for t in enrolling.get("/api/v1/enrolment-tokens"))
    # The device itself, with its own school's token, proves it holds the login.
    token = new_token(enrolling)["token"]
    granted = enrol(enrolling, token, "proj-101", proof=password)
    assert granted.status_code == 201, granted.text
    assert granted.json()["site"] == SCHOOL


def test_a_device_revoked_by_hand_stays_revoked_until_an_admin_reinstates_it(
    enrolling: RunningCollector, tmp_path: Path
) -> None:
    store = BrokerCredentials(tmp_path / "broker")
    store.add_device(SCHOOL, "proj-102")
    assert store.revoke_device("proj-102")
    for site in (SCHOOL_B, SCHOOL):
        token = new_token(enrolling, site_id=site)["token"]
        refused = enrol(enrolling, token, "proj-102")
        assert (refused.status_code, refused.json()["reason"]) == (403, "device_revoked")
        assert account_of(tmp_path, "proj-102") is None
    with pytest.raises(CredentialsError, match="revoked"):
        store.add_device(SCHOOL_B, "proj-102")  # the command line does not bypass it either

    reinstated = enrolling.api.post("/api/v1/devices/proj-102/reinstate")
    assert reinstated.status_code == 200, reinstated.text
    # Reinstated into its own school: another school's token still cannot have it.
    other = enrol(enrolling, new_token(enrolling, site_id=SCHOOL_B)["token"], "proj-102")
    assert (other.status_code, other.json()["reason"]) == (409, "already_enrolled")
    granted = enrol(enrolling, new_token(enrolling)["token"], "proj-102")
    assert granted.status_code == 201, granted.text
    assert account_of(tmp_path, "proj-102") is not None


def test_an_api_revoked_device_cannot_come_back_with_another_schools_token(
    enrolling: RunningCollector,
) -> None:
    assert enrol(enrolling, new_token(enrolling)["token"], "pc-gone").status_code == 201
    assert enrolling.api.post("/api/v1/devices/pc-gone/revoke", json={}).status_code == 200
    for site in (SCHOOL_B, FAR_SCHOOL):
        refused = enrol(enrolling, new_token(enrolling, site_id=site)["token"], "pc-gone")
        assert (refused.status_code, refused.json()["reason"]) == (403, "device_revoked")


def test_mac_hashes_seen_on_the_lan_cannot_take_over_an_enrolled_device(
    enrolling: RunningCollector, tmp_path: Path
) -> None:
    real = enrol(enrolling, new_token(enrolling)["token"], "pc-1").json()
    before = account_of(tmp_path, "pc-1")
    only_macs = MachineFacts(mac_sha256=PC.mac_sha256)  # what an observer on the LAN knows
    for site in (SCHOOL_B, SCHOOL):
        token = new_token(enrolling, site_id=site)["token"]
        refused = enrol(enrolling, token, "pc-1", only_macs)
        assert (refused.status_code, refused.json()["reason"]) == (409, "already_enrolled")
        wrong = enrol(enrolling, token, "pc-1", only_macs, proof="guessed-" + "x" * 30)
        assert (wrong.status_code, wrong.json()["reason"]) == (409, "already_enrolled")
        assert account_of(tmp_path, "pc-1") == before
    [record] = enrolling.get("/api/v1/enrolments")
    assert record["site_id"] == SCHOOL and record["enrol_count"] == 1
    # The real device can still re-enrol (and nothing moved it).
    again = enrol(enrolling, new_token(enrolling)["token"], "pc-1", proof=real["password"])
    assert again.status_code == 201, again.text


def test_moving_a_device_to_another_school_needs_an_admins_approval(
    enrolling: RunningCollector, tmp_path: Path
) -> None:
    real = enrol(enrolling, new_token(enrolling)["token"], "pc-1").json()
    token_b = new_token(enrolling, site_id=SCHOOL_B)["token"]
    # Even its own login does not let a device follow another school's token.
    refused = enrol(enrolling, token_b, "pc-1", proof=real["password"])
    assert (refused.status_code, refused.json()["reason"]) == (409, "already_enrolled")
    approved = enrolling.api.post(
        "/api/v1/devices/pc-1/approve-reenrolment", json={"site_id": SCHOOL_B}
    )
    assert approved.status_code == 200, approved.text
    assert approved.json()["reenrolment_site_id"] == SCHOOL_B
    moved = enrol(enrolling, token_b, "pc-1")
    assert moved.status_code == 201 and moved.json()["site"] == SCHOOL_B
    assert account_of(tmp_path, "pc-1") is not None
    assert account_of(tmp_path, "pc-1")[0] == SCHOOL_B  # type: ignore[index]
    # One approval, one enrolment.
    again = enrol(enrolling, token_b, "pc-1")
    assert (again.status_code, again.json()["reason"]) == (409, "already_enrolled")


def test_a_reimaged_pc_that_lost_its_login_re_enrols_after_approval(
    enrolling: RunningCollector,
) -> None:
    token = new_token(enrolling)["token"]
    assert enrol(enrolling, token, "pc-1").status_code == 201
    refused = enrol(enrolling, token, "pc-1")  # same hardware, no login any more
    assert refused.status_code == 409
    assert "approve" in refused.json()["detail"]
    assert (
        enrolling.api.post("/api/v1/devices/pc-1/approve-reenrolment", json={}).status_code == 200
    )
    assert enrol(enrolling, token, "pc-1").status_code == 201
    assert (
        enrolling.api.post("/api/v1/devices/nobody/approve-reenrolment", json={}).status_code == 404
    )
    metrics = enrolling.api.get("/metrics").text
    assert 'campuswatch_enrolment_requests_total{outcome="already_enrolled"} 1.0' in metrics


# --- scope: a scoped admin administers enrolment only inside its scope ---


def scoped_admin(collector: RunningCollector, scope: str) -> dict[str, str]:
    response = collector.api.post(
        "/api/v1/tokens", json={"name": f"admin-{scope}", "role": "admin", "site_scope": scope}
    )
    assert response.status_code in (200, 201), response.text
    return {"Authorization": f"Bearer {response.json()['token']}"}


def test_a_scoped_admin_manages_tokens_only_inside_its_scope(
    enrolling: RunningCollector,
) -> None:
    api, district = enrolling.api, scoped_admin(enrolling, "hn-bd")
    far = new_token(enrolling, site_id=FAR_SCHOOL)
    outside = api.post("/api/v1/enrolment-tokens", json={"site_id": FAR_SCHOOL}, headers=district)
    assert outside.status_code == 403
    inside = api.post("/api/v1/enrolment-tokens", json={"site_id": SCHOOL_B}, headers=district)
    assert inside.status_code == 201, inside.text
    listed = api.get("/api/v1/enrolment-tokens", headers=district).json()
    assert [t["site_id"] for t in listed] == [SCHOOL_B]
    filtered = api.get(
        "/api/v1/enrolment-tokens", params={"site_id": FAR_SCHOOL}, headers=district
    ).json()
    assert filtered == []
    assert api.delete(f"/api/v1/enrolment-tokens/{far['id']}", headers=district).status_code == 404
    assert enrolling.get("/api/v1/enrolment-tokens")[-1]["state"] == "active"  # far, untouched


def test_a_scoped_admin_revokes_and_sees_only_devices_inside_its_scope(
    enrolling: RunningCollector, tmp_path: Path
) -> None:
    api, school = enrolling.api, scoped_admin(enrolling, SCHOOL)
    assert enrol(enrolling, new_token(enrolling)["token"], "pc-own").status_code == 201
    far_token = new_token(enrolling, site_id=FAR_SCHOOL)["token"]
    assert enrol(enrolling, far_token, "pc-far").status_code == 201
    BrokerCredentials(tmp_path / "broker").add_device(FAR_SCHOOL, "proj-far")  # by hand

    listed = api.get("/api/v1/enrolments", headers=school).json()
    assert [e["device_id"] for e in listed] == ["pc-own"]
    for device_id in ("pc-far", "proj-far"):
        for action in ("revoke", "reinstate", "approve-reenrolment"):
            response = api.post(f"/api/v1/devices/{device_id}/{action}", json={}, headers=school)
            assert response.status_code == 404, (device_id, action, response.text)
        assert account_of(tmp_path, device_id) is not None
    to_far = api.post(
        "/api/v1/devices/pc-own/approve-reenrolment", json={"site_id": FAR_SCHOOL}, headers=school
    )
    assert to_far.status_code == 403
    assert api.post("/api/v1/devices/pc-own/revoke", json={}, headers=school).status_code == 200
    assert api.post("/api/v1/devices/pc-own/reinstate", headers=school).status_code == 200
