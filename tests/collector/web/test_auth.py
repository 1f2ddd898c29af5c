"""UI sessions end on the server after SESSION_HOURS, whatever the browser keeps."""

from __future__ import annotations

from datetime import timedelta

from fastapi.testclient import TestClient
from sqlalchemy import select

from campuswatch.collector.db.models import ApiToken
from campuswatch.collector.web.auth import SESSION_COOKIE, SESSION_HOURS
from tests.collector.web.conftest import TESTSERVER, WebApp
from tests.collector.web.test_pages import ORIGIN


def _age_session(web: WebApp, username: str, age: timedelta) -> None:
    with web.sessions() as session:
        token = session.scalar(select(ApiToken).where(ApiToken.name == f"ui-session:{username}"))
        assert token is not None
        token.created_at = token.created_at - age
        session.commit()


def _revoked(web: WebApp, username: str) -> bool:
    with web.sessions() as session:
        token = session.scalar(select(ApiToken).where(ApiToken.name == f"ui-session:{username}"))
        assert token is not None
        return token.revoked_at is not None


def test_a_session_token_past_its_lifetime_is_refused_by_the_api_and_the_ui(web: WebApp) -> None:
    client = web.login("viewer")
    plain = client.cookies[SESSION_COOKIE]
    bearer = TestClient(web.app, headers={"Authorization": f"Bearer {plain}"})
    _age_session(web, "viewer", timedelta(hours=SESSION_HOURS) - timedelta(minutes=5))
    assert bearer.get("/api/v1/sites").status_code == 200
    assert client.get("/ui/reports").status_code == 200

    _age_session(web, "viewer", timedelta(minutes=10))
    # The browser would still send the cookie (a copied token never expires client-side):
    # the API refuses it directly, before any UI page has had the chance to revoke it.
    assert bearer.get("/api/v1/sites").status_code == 401
    assert client.get("/api/v1/sites").status_code == 401
    assert not _revoked(web, "viewer")
    page = client.get("/ui/reports")
    assert page.status_code == 303 and page.headers["location"].startswith("/ui/login")
    assert _revoked(web, "viewer")
    pasted = TestClient(web.app, base_url=TESTSERVER, follow_redirects=False).post(
        "/ui/login", data={"token": plain}, headers=ORIGIN
    )
    assert pasted.status_code == 401


def test_api_tokens_do_not_expire_with_the_session_lifetime(web: WebApp) -> None:
    with web.sessions() as session:
        token = session.scalar(select(ApiToken).where(ApiToken.name == "test-admin"))
        assert token is not None
        token.created_at = token.created_at - timedelta(days=400)
        session.commit()
    api = TestClient(web.app, headers={"Authorization": f"Bearer {web.admin_token}"})
    assert api.get("/api/v1/sites").status_code == 200
