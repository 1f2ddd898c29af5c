"""Who may grant what: never a wider scope or a higher role than the grantor's own."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from campuswatch.collector.db.access import GrantRefused, check_grant, create_api_token, create_user
from campuswatch.collector.db.models import ROLES
from tests.collector.api.scope_world import ScopeWorld, scope_world


@pytest.fixture
def world(db_url: str, tmp_path: Path) -> Iterator[ScopeWorld]:
    with scope_world(db_url, tmp_path) as built:
        yield built


def test_grants_never_exceed_the_grantor() -> None:
    district = frozenset({"hn-bd", "bd-a"})
    for role in ROLES:
        check_grant("admin", None, role=role, site_scope=None)
        check_grant("admin", district, role=role, site_scope="bd-a")
    check_grant("soc", district, role="soc", site_scope="bd-a")
    check_grant("soc", district, role="viewer", site_scope="hn-bd")
    check_grant("facilities", None, role="viewer", site_scope=None)
    refused = [
        ("admin", district, "viewer", None),
        ("admin", district, "viewer", "hn"),
        ("admin", district, "admin", "cg-c"),
        ("soc", None, "admin", None),
        ("soc", None, "facilities", None),
        ("facilities", None, "soc", None),
        ("viewer", None, "soc", None),
        ("viewer", district, "viewer", None),
    ]
    for grantor_role, grantor_sites, role, site_scope in refused:
        with pytest.raises(GrantRefused):
            check_grant(grantor_role, grantor_sites, role=role, site_scope=site_scope)


def test_token_and_user_creation_enforce_the_grant(world: ScopeWorld) -> None:
    district = frozenset({"hn-bd", "bd-a"})
    with world.sessions() as session:
        with pytest.raises(GrantRefused):
            create_api_token(
                session, name="x", role="admin", site_scope=None, granted_by=("admin", district)
            )
        with pytest.raises(GrantRefused):
            create_user(
                session,
                username="x",
                password="correct horse battery",
                role="soc",
                site_scope="hn",
                granted_by=("admin", district),
            )
        user = create_user(
            session,
            username="y",
            password="correct horse battery",
            role="soc",
            site_scope="bd-a",
            granted_by=("admin", district),
        )
        assert user.site_scope == "bd-a"


def test_an_api_token_cannot_pass_for_a_persons_login_in_the_audit_log(world: ScopeWorld) -> None:
    """A token named like a web UI login (``ui-session:NAME``) would be taken for NAME's own
    login: its actions audited as ``user:NAME``, its holder shown as NAME in the UI. A scoped
    admin could act under the district administrator's name that way."""
    admin = world.client("admin", "bd-a")
    created = admin.post(
        "/api/v1/tokens",
        json={"name": "ui-session:district-admin", "role": "viewer", "site_scope": "bd-a"},
    )
    assert created.status_code == 422, created.text
    listed = world.client("admin", None).get("/api/v1/tokens").json()
    assert not any(token["name"] == "ui-session:district-admin" for token in listed)


def test_a_token_name_in_use_is_refused_where_its_admin_sees_it(world: ScopeWorld) -> None:
    """A second token of the same name and scope is a resubmitted form (a reloaded page),
    not a new need: refused while the first is valid. A token outside the admin's scope does
    not block it (and is not revealed by a refusal)."""
    form = {"name": "nightly export", "role": "viewer"}
    district = world.client("admin", "hn-bd")
    assert district.post("/api/v1/tokens", json={**form, "site_scope": "bd-b"}).status_code == 201
    school = world.client("admin", "bd-a")  # does not see bd-b's token
    assert school.post("/api/v1/tokens", json={**form, "site_scope": "bd-a"}).status_code == 201
    again = school.post("/api/v1/tokens", json={**form, "site_scope": "bd-a"})
    assert again.status_code == 409, again.text
    listed = world.client("admin", None).get("/api/v1/tokens").json()
    assert sorted(t["site_scope"] for t in listed if t["name"] == "nightly export") == [
        "bd-a",
        "bd-b",
    ]
