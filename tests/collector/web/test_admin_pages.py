"""The admin page: accounts, API, display and enrolment tokens, and their audit log, within
the admin's scope (issue 15, item 1)."""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path
from typing import Any

import msgspec
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from campuswatch.collector.api.enrolment import enrolment_service
from campuswatch.collector.db.access import create_user
from campuswatch.collector.db.models import ApiToken, AuditEvent, User
from campuswatch.collector.enrolment.models import EnrolmentToken
from campuswatch.collector.enrolment.service import EnrolmentService
from campuswatch.wire.enrolment import EnrolRequest, MachineFacts
from tests.collector.web.conftest import PASSWORD, WebApp
from tests.collector.web.test_pages import ORIGIN, csrf_of

NEW_PASSWORD = "a new password, long enough"
SECRET = re.compile(r'<code class="secret" id="secret-value" translate="no">([^<]+)</code>')


@pytest.fixture
def admin_web(web: WebApp, tmp_path: Path) -> WebApp:
    """Two admins (one scoped to district q1) and enrolment configured with broker files."""
    with web.sessions() as session:
        create_user(session, username="admin-q1", password=PASSWORD, role="admin", site_scope="q1")
        session.commit()
    broker = tmp_path / "broker"
    broker.mkdir()
    (broker / "ca.pem").write_text("-----BEGIN CERTIFICATE-----\nMIIB\n")
    web.context.extras["enrolment"] = EnrolmentService(
        web.sessions, broker_dir=broker, agent_broker_url="mqtts://broker.school.vn:8883"
    )
    return web


def post(client: TestClient, url: str, **form: str) -> Any:
    token = csrf_of(client.get("/ui/admin").text)
    return client.post(url, data={"csrf_token": token, **form}, headers=ORIGIN)


def audit(web: WebApp) -> list[tuple[str, str, str]]:
    with web.sessions() as session:
        rows = session.scalars(select(AuditEvent).order_by(AuditEvent.id))
        return [(row.actor, row.action, row.target) for row in rows]


def secret_of(html: str) -> str:
    match = SECRET.search(html)
    assert match, "no secret on the page"
    return match.group(1)


@pytest.mark.parametrize("username", ["soc-q1", "facility", "viewer"])
def test_only_admins_reach_the_page_and_its_forms(admin_web: WebApp, username: str) -> None:
    client = admin_web.login(username)
    page = client.get("/ui/admin")
    assert page.status_code == 403
    assert 'id="forbidden"' in page.text and 'href="/ui/admin"' not in page.text
    token = csrf_of(client.get("/ui/").text)
    form = {"csrf_token": token, "username": "mallory", "role": "admin", "password": PASSWORD}
    answers = [
        client.post("/ui/admin/users", data=form, headers=ORIGIN).status_code,
        client.post("/ui/admin/users/disable", data=form, headers=ORIGIN).status_code,
        client.post(
            "/ui/admin/tokens", data={**form, "name": "x", "kind": "api"}, headers=ORIGIN
        ).status_code,
        client.post("/ui/admin/tokens/1/revoke", data=form, headers=ORIGIN).status_code,
        client.post("/ui/admin/enrolment-tokens", data=form, headers=ORIGIN).status_code,
    ]
    assert answers == [403] * 5
    assert audit(admin_web) == []
    admin_page = admin_web.login("admin").get("/ui/admin").text
    assert 'href="/ui/admin"' in admin_page and 'id="configured-display"' in admin_page


def test_an_admin_adds_a_facilities_user_who_logs_in_and_disabling_ends_the_session(
    admin_web: WebApp,
) -> None:
    admin = admin_web.login("admin")
    added = post(
        admin, "/ui/admin/users", username="thu.facilities", role="facilities",
        site_scope="q1-a", language="vi", password=NEW_PASSWORD,
    )  # fmt: skip
    assert added.status_code == 303 and added.headers["location"].startswith("/ui/admin?done=")
    page = admin.get(added.headers["location"]).text
    assert 'id="admin-done"' in page and 'data-user="thu.facilities"' in page

    facilities = admin_web.login("thu.facilities", NEW_PASSWORD)
    assert facilities.get("/ui/inventory").status_code == 200
    assert facilities.get("/ui/admin").status_code == 403

    disabled = post(admin, "/ui/admin/users/disable", username="thu.facilities")
    assert disabled.status_code == 303
    assert facilities.get("/ui/inventory").status_code == 303  # back to the login page
    refused = admin_web.client().post(
        "/ui/login",
        data={"username": "thu.facilities", "password": NEW_PASSWORD},
        headers=ORIGIN,
    )
    assert refused.status_code == 401

    assert post(admin, "/ui/admin/users/enable", username="thu.facilities").status_code == 303
    reset = post(admin, "/ui/admin/users/password", username="thu.facilities", password=PASSWORD)
    assert reset.status_code == 303
    admin_web.login("thu.facilities", PASSWORD)
    assert audit(admin_web) == [
        ("user:admin", "user.add", "user:thu.facilities"),
        ("user:admin", "user.disable", "user:thu.facilities"),
        ("user:admin", "user.enable", "user:thu.facilities"),
        ("user:admin", "user.password", "user:thu.facilities"),
    ]
    page = admin.get("/ui/admin").text
    assert page.count('data-action="user.') == 4


@pytest.mark.parametrize(
    ("role", "site_scope"),
    [("viewer", "q3-c"), ("soc", "hcm"), ("admin", ""), ("viewer", "")],
)
def test_a_scoped_admin_cannot_grant_outside_or_above_its_scope(
    admin_web: WebApp, role: str, site_scope: str
) -> None:
    client = admin_web.login("admin-q1")
    answer = post(
        client, "/ui/admin/users", username="too-wide", role=role, site_scope=site_scope,
        language="en", password=NEW_PASSWORD,
    )  # fmt: skip
    assert answer.status_code in (403, 422), answer.text
    assert 'id="admin-error"' in answer.text
    token = post(client, "/ui/admin/tokens", kind="api", name="wide", role=role,
                 site_scope=site_scope)  # fmt: skip
    assert token.status_code in (403, 422) and 'id="admin-error"' in token.text
    with admin_web.sessions() as session:
        assert session.scalar(select(User).where(User.username == "too-wide")) is None
        assert session.scalar(select(ApiToken).where(ApiToken.name == "wide")) is None
    assert audit(admin_web) == []


def test_a_scoped_admin_sees_and_changes_only_its_subtree(admin_web: WebApp) -> None:
    client = admin_web.login("admin-q1")
    page = client.get("/ui/admin")
    assert page.status_code == 200
    assert 'data-user="soc-q1"' in page.text and 'data-user="admin-q1"' in page.text
    for foreign in ("admin", "facility", "viewer"):
        assert f'data-user="{foreign}"' not in page.text
    assert "test-admin" not in page.text  # the unscoped API token
    assert 'id="configured-display"' not in page.text  # it opens every site's wall
    assert 'value="q3-c"' not in page.text and 'value="hcm"' not in page.text

    assert post(client, "/ui/admin/users/disable", username="facility").status_code == 404
    with admin_web.sessions() as session:
        foreign_token = session.scalar(select(ApiToken.id).where(ApiToken.name == "test-admin"))
        foreign_enrolment = enrolment_service(admin_web.context).create_token(
            session, site_id="q3-c", lifetime=timedelta(hours=1), max_uses=1, created_by="x"
        )
        session.commit()
        foreign_enrolment_id = foreign_enrolment.row.id
    assert post(client, f"/ui/admin/tokens/{foreign_token}/revoke").status_code == 404
    revoke = f"/ui/admin/enrolment-tokens/{foreign_enrolment_id}/revoke"
    assert post(client, revoke).status_code == 404
    with admin_web.sessions() as session:
        assert session.get(ApiToken, foreign_token).revoked_at is None  # type: ignore[union-attr]
        enrolment = session.get(EnrolmentToken, foreign_enrolment_id)
        assert enrolment is not None and enrolment.revoked_at is None
    reset = post(client, "/ui/admin/users/password", username="admin", password=NEW_PASSWORD)
    assert reset.status_code == 404
    admin_web.login("admin")  # its password unchanged

    # Within its scope, an admin like itself is allowed.
    added = post(
        client, "/ui/admin/users", username="admin-q1-a", role="admin", site_scope="q1-a",
        language="en", password=NEW_PASSWORD,
    )  # fmt: skip
    assert added.status_code == 303
    # The unscoped admin's own changes elsewhere stay out of the scoped admin's log.
    root = admin_web.login("admin")
    assert post(root, "/ui/admin/users/disable", username="viewer").status_code == 303
    page_text = client.get("/ui/admin").text
    assert "user:admin-q1-a" in page_text and "user:viewer" not in page_text


def test_an_api_token_is_shown_once_works_and_is_revoked(admin_web: WebApp) -> None:
    admin = admin_web.login("admin")
    created = post(admin, "/ui/admin/tokens", kind="api", name="nightly export", role="soc",
                   site_scope="q1")  # fmt: skip
    assert created.status_code == 201
    plain = secret_of(created.text)
    assert plain not in admin.get("/ui/admin").text  # shown once

    api = TestClient(admin_web.app, headers={"Authorization": f"Bearer {plain}"})
    sites = api.get("/api/v1/sites")
    assert sites.status_code == 200
    assert {site["id"] for site in sites.json()} <= {"q1", "q1-a", "q1-a-lab", "q1-b"}

    with admin_web.sessions() as session:
        token_id = session.scalar(select(ApiToken.id).where(ApiToken.name == "nightly export"))
    revoked = post(admin, f"/ui/admin/tokens/{token_id}/revoke")
    assert revoked.status_code == 303
    assert api.get("/api/v1/sites").status_code == 401
    assert post(admin, "/ui/admin/tokens/999999/revoke").status_code == 404
    assert [a[1:] for a in audit(admin_web)] == [
        ("token.create", f"token:{token_id}"),
        ("token.revoke", f"token:{token_id}"),
    ]


def test_reloading_the_page_that_showed_a_new_token_makes_no_second_token(
    admin_web: WebApp,
) -> None:
    """The secret is shown in the answer to the form; a reload sends the form again, which
    must not mint a second token nobody has seen."""
    admin = admin_web.login("admin")
    token = csrf_of(admin.get("/ui/admin").text)
    form = {"csrf_token": token, "kind": "api", "name": "nightly export", "role": "soc"}
    assert admin.post("/ui/admin/tokens", data=form, headers=ORIGIN).status_code == 201
    reloaded = admin.post("/ui/admin/tokens", data=form, headers=ORIGIN)
    assert reloaded.status_code == 409, reloaded.text
    assert 'data-reason="taken"' in reloaded.text
    with admin_web.sessions() as session:
        names = session.scalars(select(ApiToken.name).where(ApiToken.name == "nightly export"))
        assert len(list(names)) == 1


def test_a_display_token_opens_the_wall_of_its_scope_until_revoked(admin_web: WebApp) -> None:
    admin = admin_web.login("admin")
    created = post(admin, "/ui/admin/tokens", kind="display", name="office screen",
                   role="admin", site_scope="q1")  # fmt: skip
    assert created.status_code == 201
    plain = secret_of(created.text)
    assert f"/ui/wall?token={plain}" in created.text
    with admin_web.sessions() as session:
        token = session.scalar(select(ApiToken).where(ApiToken.name == "display:office screen"))
        assert token is not None and (token.role, token.site_scope) == ("viewer", "q1")
        token_id = token.id
    wall = admin_web.client()
    assert wall.get(f"/ui/wall?token={plain}").status_code == 200
    assert wall.get(f"/ui/wall/data?token={plain}").status_code == 200
    assert f'data-token="{token_id}"' in admin.get("/ui/admin").text

    assert post(admin, f"/ui/admin/tokens/{token_id}/revoke").status_code == 303
    assert wall.get(f"/ui/wall/data?token={plain}").status_code == 401
    assert [a[1] for a in audit(admin_web)] == ["display_token.create", "display_token.revoke"]


def test_an_enrolment_token_enrols_a_pc_of_its_school_until_revoked(admin_web: WebApp) -> None:
    admin = admin_web.login("admin-q1")
    created = post(admin, "/ui/admin/enrolment-tokens", site_id="q1-a", hours="24",
                   max_uses="40", note="lab image")  # fmt: skip
    assert created.status_code == 201, created.text
    plain = secret_of(created.text)
    assert plain.startswith("cwe_")
    machine = MachineFacts.from_plain("4c4c4544-0001", "machine-1", ("3c:52:82:00:00:01",))

    def enrol(device_id: str) -> int:
        request = EnrolRequest(
            token=plain,
            device_id=device_id,
            product_uuid_sha256=machine.product_uuid_sha256,
            machine_id_sha256=machine.machine_id_sha256,
            mac_sha256=sorted(machine.mac_sha256),
            hostname="LAB1-PC01",
        )
        answer = admin_web.client().post("/api/v1/enrol", content=msgspec.json.encode(request))
        return int(answer.status_code)

    assert enrol("pc-new-1") == 201
    with admin_web.sessions() as session:
        row = session.scalar(select(EnrolmentToken))
        assert row is not None and (row.site_id, row.uses, row.max_uses) == ("q1-a", 1, 40)
        token_id = row.id
    assert post(admin, f"/ui/admin/enrolment-tokens/{token_id}/revoke").status_code == 303
    assert enrol("pc-new-2") == 403
    assert [a[1] for a in audit(admin_web)] == [
        "enrolment_token.create",
        "enrolment_token.revoke",
    ]
    # Another district's school is not offered and not accepted.
    foreign = post(admin, "/ui/admin/enrolment-tokens", site_id="q3-c", hours="24",
                   max_uses="1")  # fmt: skip
    assert foreign.status_code == 422 and 'id="admin-error"' in foreign.text


@pytest.mark.parametrize(
    ("url", "form", "reason"),
    [
        ("/ui/admin/users", {"username": "bad name", "role": "viewer"}, "username"),
        ("/ui/admin/users", {"username": "x\x00y", "role": "viewer"}, "username"),
        ("/ui/admin/users", {"username": "ok", "role": "superuser"}, "role"),
        ("/ui/admin/users", {"username": "ok", "role": "viewer", "language": "fr"}, "language"),
        ("/ui/admin/users", {"username": "ok", "role": "viewer", "site_scope": "nope"}, "site"),
        ("/ui/admin/users", {"username": "ok", "role": "viewer", "password": "short"}, "password"),
        ("/ui/admin/users", {"username": "viewer", "role": "viewer"}, "exists"),
        ("/ui/admin/users/disable", {"username": "ghost"}, "unknown"),
        ("/ui/admin/users/disable", {"username": "admin"}, "self"),
        ("/ui/admin/users/password", {"username": "viewer", "password": "\x00" * 20}, "password"),
        ("/ui/admin/tokens", {"kind": "api", "name": "", "role": "viewer"}, "name"),
        ("/ui/admin/tokens", {"kind": "api", "name": "a\nb", "role": "viewer"}, "name"),
        ("/ui/admin/tokens", {"kind": "api", "name": "x" * 5000, "role": "viewer"}, "name"),
        ("/ui/admin/tokens", {"kind": "api", "name": "ui-session:admin"}, "name"),
        ("/ui/admin/tokens", {"kind": "api", "name": "t", "role": "root"}, "role"),
        ("/ui/admin/enrolment-tokens", {"site_id": "q1-a", "hours": "0"}, "hours"),
        ("/ui/admin/enrolment-tokens", {"site_id": "q1-a", "hours": "1e9"}, "hours"),
        ("/ui/admin/enrolment-tokens", {"site_id": "q1-a", "max_uses": "-1"}, "uses"),
        ("/ui/admin/enrolment-tokens", {"site_id": "", "hours": "2"}, "site"),
        ("/ui/admin/enrolment-tokens", {"site_id": "q1-a", "note": "n" * 300}, "note"),
        ("/ui/admin/tokens/abc/revoke", {}, None),
        ("/ui/admin/tokens/99999999999999999999/revoke", {}, None),
        ("/ui/admin/enrolment-tokens/99999999999999999999/revoke", {}, None),
        ("/ui/admin/users/promote", {"username": "viewer"}, None),
    ],
)
def test_bad_input_is_a_message_on_the_page_and_changes_nothing(
    admin_web: WebApp, url: str, form: dict[str, str], reason: str | None
) -> None:
    client = admin_web.login("admin")
    answer = post(client, url, **{"password": NEW_PASSWORD, **form})
    assert 400 <= answer.status_code < 500, answer.text
    if reason is not None:
        assert f'data-reason="{reason}"' in answer.text
        assert 'role="alert"' in answer.text and "Traceback" not in answer.text
    assert audit(admin_web) == []


def test_forms_need_the_form_token_and_the_same_origin(admin_web: WebApp) -> None:
    client = admin_web.login("admin")
    form = {"username": "mallory", "role": "admin", "password": NEW_PASSWORD}
    assert client.post("/ui/admin/users", data=form, headers=ORIGIN).status_code == 403
    token = csrf_of(client.get("/ui/admin").text)
    evil = {"Origin": "https://evil.example"}
    answer = client.post("/ui/admin/users", data={**form, "csrf_token": token}, headers=evil)
    assert answer.status_code == 403
    assert audit(admin_web) == []


def test_the_admin_page_in_vietnamese(admin_web: WebApp) -> None:
    from tests.collector.web.catalogue import untranslated_left, visible_text

    client = admin_web.login("admin")
    client.cookies.set("cw_lang", "vi")
    post(client, "/ui/admin/users/disable", username="viewer")
    page = client.get("/ui/admin")
    assert page.status_code == 200 and "Quản trị" in page.text
    assert untranslated_left(visible_text(page.text)) == []


def test_token_changes_made_through_the_api_are_audited_and_shown_on_the_page(
    admin_web: WebApp,
) -> None:
    api = TestClient(admin_web.app, headers={"Authorization": f"Bearer {admin_web.admin_token}"})
    created = api.post("/api/v1/tokens", json={"name": "script", "role": "viewer"})
    assert created.status_code == 201, created.text
    token_id = created.json()["id"]
    assert api.delete(f"/api/v1/tokens/{token_id}").status_code == 200
    enrolment = api.post("/api/v1/enrolment-tokens", json={"site_id": "q1-a"})
    assert enrolment.status_code == 201, enrolment.text
    enrolment_id = enrolment.json()["id"]
    assert api.delete(f"/api/v1/enrolment-tokens/{enrolment_id}").status_code == 200
    assert audit(admin_web) == [
        ("token:test-admin", "token.create", f"token:{token_id}"),
        ("token:test-admin", "token.revoke", f"token:{token_id}"),
        ("token:test-admin", "enrolment_token.create", f"enrolment-token:{enrolment_id}"),
        ("token:test-admin", "enrolment_token.revoke", f"enrolment-token:{enrolment_id}"),
    ]
    page = admin_web.login("admin").get("/ui/admin").text
    assert page.count("token:test-admin") == 4
