"""Scope holds: a scoped account reads and changes only objects of its own subtree, before
and after the change, and administers, grants and lists only inside it (issue 13, item 3).
The site tree refuses a cycle (item 4). SQLite and PostgreSQL.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, update

from campuswatch.collector.db.models import ROLES, ApiToken, Asset, AssetMac, Site
from tests.collector.api.scope_world import (
    SUBTREES,
    ScopeWorld,
    foreign_devices,
    foreign_rows,
    foreign_sites,
    scope_world,
)

SCOPED = ("hn-bd", "bd-a")


@pytest.fixture
def world(db_url: str, tmp_path: Path) -> Iterator[ScopeWorld]:
    with scope_world(db_url, tmp_path) as built:
        yield built


def _site(
    site_id: str, parent_id: str | None, level: str = "school", **more: Any
) -> dict[str, Any]:
    return {"id": site_id, "parent_id": parent_id, "level": level, "name": site_id, **more}


def _parent(world: ScopeWorld, site_id: str) -> str | None:
    with world.sessions() as session:
        site = session.get(Site, site_id)
        assert site is not None
        return site.parent_id


# --- the site tree under a scoped editor ----------------------------------------------------


@pytest.mark.parametrize("role", ["admin", "facilities"])
def test_a_school_editor_cannot_reparent_a_foreign_school_under_its_own(
    world: ScopeWorld, role: str
) -> None:
    before = foreign_rows(world, "bd-a")
    school = world.client(role, "bd-a")

    hijack = school.put("/api/v1/sites/cg-c", json=_site("cg-c", "bd-a", name="ours now"))

    assert hijack.status_code == 404, hijack.text
    assert foreign_rows(world, "bd-a") == before
    # So the foreign school's devices, alerts and assets stay out of reach.
    assert school.get("/api/v1/devices/pc-c1").status_code == 404
    assert school.get(f"/api/v1/alerts/{world.alert_ids['cg-c']}").status_code == 404


def test_a_scoped_editor_cannot_move_the_root_of_its_scope(world: ScopeWorld) -> None:
    school = world.client("facilities", "bd-a")
    district = world.client("facilities", "hn-bd")
    for client, site_id, parent_id, level in (
        (school, "bd-a", "bd-a-lab", "school"),
        (school, "bd-a", None, "school"),
        (district, "hn-bd", "bd-b", "district"),
        (district, "hn-bd", None, "district"),
    ):
        answer = client.put(f"/api/v1/sites/{site_id}", json=_site(site_id, parent_id, level))
        assert answer.status_code == 403, (site_id, parent_id, answer.text)
    assert _parent(world, "bd-a") == "hn-bd"
    assert _parent(world, "hn-bd") == "hn"
    # Renaming the root in place is its own business.
    renamed = school.put("/api/v1/sites/bd-a", json=_site("bd-a", "hn-bd", name="THCS A (new)"))
    assert renamed.status_code == 200, renamed.text


def test_a_scoped_editor_creates_and_moves_sites_only_inside_its_scope(
    world: ScopeWorld,
) -> None:
    district = world.client("facilities", "hn-bd")
    for body in (_site("bd-x", "hn-cg"), _site("bd-x", None), _site("bd-x", "hn")):
        assert district.put("/api/v1/sites/bd-x", json=body).status_code == 404, body
    with world.sessions() as session:
        assert session.get(Site, "bd-x") is None
    created = district.put("/api/v1/sites/bd-x", json=_site("bd-x", "hn-bd"))
    assert created.status_code == 200, created.text
    moved = district.put("/api/v1/sites/bd-a-lab", json=_site("bd-a-lab", "bd-b", "room"))
    assert moved.status_code == 200, moved.text
    assert _parent(world, "bd-a-lab") == "bd-b"
    # Out of the district: refused, and the room stays where it was.
    away = district.put("/api/v1/sites/bd-a-lab", json=_site("bd-a-lab", "cg-c", "room"))
    assert away.status_code == 404
    assert _parent(world, "bd-a-lab") == "bd-b"


@pytest.mark.parametrize(
    ("site_id", "parent_id"),
    [("hn", "hn"), ("hn", "bd-a-lab"), ("hn-bd", "bd-a"), ("bd-a", "bd-a-lab")],
)
def test_a_site_cannot_be_parented_under_itself_or_below_itself(
    world: ScopeWorld, site_id: str, parent_id: str
) -> None:
    admin = world.client("admin", None)
    before = _parent(world, site_id)

    answer = admin.put(f"/api/v1/sites/{site_id}", json=_site(site_id, parent_id))

    assert answer.status_code == 422, answer.text
    assert "cycle" in answer.json()["detail"]
    assert _parent(world, site_id) == before


def test_an_unscoped_admin_still_moves_a_school_to_another_district(world: ScopeWorld) -> None:
    answer = world.client("admin", None).put("/api/v1/sites/bd-b", json=_site("bd-b", "hn-cg"))
    assert answer.status_code == 200, answer.text
    assert _parent(world, "bd-b") == "hn-cg"


def test_a_cycle_already_in_the_database_does_not_hang_a_scoped_request(
    world: ScopeWorld,
) -> None:
    with world.sessions() as session:
        session.execute(update(Site).where(Site.id == "hn").values(parent_id="bd-a-lab"))
        session.commit()
    school = world.client("viewer", "bd-a")
    answer = school.get("/api/v1/devices")
    assert answer.status_code == 200
    # The cycle makes the whole tree "below" bd-a; the tree is wrong, the request still ends.
    assert {row["site_id"] for row in answer.json()["items"]} == {
        "bd-a",
        "bd-a-lab",
        "bd-b",
        "cg-c",
    }
    # And a person can break the cycle through the API.
    fixed = world.client("admin", None).put("/api/v1/sites/hn", json=_site("hn", None, "province"))
    assert fixed.status_code == 200, fixed.text
    devices = school.get("/api/v1/devices").json()["items"]
    assert {row["site_id"] for row in devices} == {"bd-a", "bd-a-lab"}


# --- foreign objects: neither read nor changed ----------------------------------------------


def _foreign_requests(world: ScopeWorld) -> list[tuple[str, str, dict[str, Any] | None]]:
    """Requests naming Cầu Giấy's objects (foreign to both Ba Đình scopes)."""
    alert = world.alert_ids["cg-c"]
    asset = world.asset_ids["pc-c1"]
    own_asset = world.asset_ids["pc-a2"]
    return [
        ("GET", "/api/v1/sites/cg-c", None),
        ("GET", "/api/v1/sites/hn-cg", None),
        ("PUT", "/api/v1/sites/cg-c", _site("cg-c", "hn-cg", name="renamed")),
        ("GET", "/api/v1/devices/pc-c1", None),
        ("GET", "/api/v1/devices/pc-c1/series?measurement=campus_health&field=cpu_pct", None),
        ("GET", "/api/v1/devices?site_id=cg-c", None),
        ("POST", "/api/v1/devices/pc-c1/commands", {"command": "reboot"}),
        ("GET", f"/api/v1/alerts/{alert}", None),
        ("GET", "/api/v1/alerts?site_id=cg-c", None),
        ("POST", f"/api/v1/alerts/{alert}/actions", {"action": "resolve", "note": "mine"}),
        ("POST", f"/api/v1/alerts/{alert}/actions", {"action": "acknowledge"}),
        ("POST", f"/api/v1/alerts/{alert}/actions", {"action": "comment", "note": "hi"}),
        ("GET", f"/api/v1/assets/{asset}", None),
        ("GET", f"/api/v1/assets/{asset}/history", None),
        ("GET", "/api/v1/assets?site_id=cg-c", None),
        ("GET", "/api/v1/assets/export.csv?site_id=cg-c", None),
        ("GET", "/api/v1/assets/export.xlsx?site_id=cg-c", None),
        ("PATCH", f"/api/v1/assets/{asset}", {"changes": {"name": "mine"}}),
        ("PATCH", f"/api/v1/assets/{own_asset}", {"changes": {"site_id": "cg-c"}}),
        ("PATCH", f"/api/v1/assets/{own_asset}", {"changes": {"site_id": None}}),
        ("PATCH", f"/api/v1/assets/{own_asset}", {"changes": {"site_id": " cg-c "}}),
        ("PATCH", f"/api/v1/assets/{own_asset}", {"changes": {"device_id": "pc-c1"}}),
        ("POST", "/api/v1/assets", {"kind": "pc", "name": "x", "site_id": "cg-c"}),
        ("POST", "/api/v1/assets", {"kind": "pc", "name": "x"}),
        ("POST", "/api/v1/alerts/silences", _silence("cg-c")),
    ]


def _silence(site_id: str) -> dict[str, Any]:
    return {
        "matchers": [{"label": "site_id", "op": "=", "value": site_id}],
        "ends_at": "2099-01-01T00:00:00Z",
    }


@pytest.mark.parametrize("scope", SCOPED)
@pytest.mark.parametrize("role", ROLES)
def test_a_scoped_account_neither_reads_nor_changes_foreign_objects(
    world: ScopeWorld, role: str, scope: str
) -> None:
    before = foreign_rows(world, scope)
    client = world.client(role, scope)
    answered = {
        (method, path, repr(body)): client.request(method, path, json=body)
        for method, path, body in _foreign_requests(world)
    }
    allowed = {key: r.text for key, r in answered.items() if r.status_code not in (403, 404, 422)}
    assert allowed == {}
    leaked = {
        key: r.text
        for key, r in answered.items()
        if any(name in r.text and name not in str(key) for name in ("pc-c1", "cg-c", "hn-cg"))
    }
    assert leaked == {}
    assert foreign_rows(world, scope) == before
    assert world.commands == []


@pytest.mark.parametrize("scope", SCOPED)
def test_lists_show_only_the_scope(world: ScopeWorld, scope: str) -> None:
    client = world.client("viewer", scope)
    inside = SUBTREES[scope]
    sites = {row["id"] for row in client.get("/api/v1/sites").json()}
    devices = {row["device_id"] for row in client.get("/api/v1/devices").json()["items"]}
    alerts = {row["site_id"] for row in client.get("/api/v1/alerts").json()["items"]}
    assets = {row["site_id"] for row in client.get("/api/v1/assets").json()["items"]}
    assert sites == inside
    assert devices.isdisjoint(foreign_devices(scope)) and devices
    assert alerts <= inside and alerts
    assert assets <= inside and assets
    csv = client.get("/api/v1/assets/export.csv").text
    assert not any(f",{site}," in csv for site in foreign_sites(scope))


def test_a_scoped_responder_acts_on_its_own_alert_and_device(world: ScopeWorld) -> None:
    soc = world.client("soc", "bd-a")
    acted = soc.post(
        f"/api/v1/alerts/{world.alert_ids['bd-a']}/actions", json={"action": "acknowledge"}
    )
    assert acted.status_code == 200, acted.text
    sent = soc.post("/api/v1/devices/pc-a1/commands", json={"command": "identify"})
    assert sent.status_code == 202, sent.text
    assert [c.device_id for c in world.commands] == ["pc-a1"]


# --- administration inside the scope -------------------------------------------------------


@pytest.mark.parametrize(
    ("scope", "granted"),
    [
        ("bd-a", None),
        ("bd-a", "hn-bd"),
        ("bd-a", "hn"),
        ("bd-a", "cg-c"),
        ("bd-a", "no-such-site"),
        ("hn-bd", None),
        ("hn-bd", "hn"),
        ("hn-bd", "hn-cg"),
    ],
)
def test_a_scoped_admin_cannot_mint_a_token_wider_than_itself(
    world: ScopeWorld, scope: str, granted: str | None
) -> None:
    client = world.client("admin", scope)
    for role in ROLES:
        answer = client.post(
            "/api/v1/tokens", json={"name": "wider", "role": role, "site_scope": granted}
        )
        assert answer.status_code == 403, (role, answer.text)
    with world.sessions() as session:
        assert session.scalar(select(ApiToken).where(ApiToken.name == "wider")) is None


def test_a_scoped_admin_mints_tokens_inside_its_scope(world: ScopeWorld) -> None:
    client = world.client("admin", "hn-bd")
    for granted in ("hn-bd", "bd-a-lab"):
        answer = client.post(
            "/api/v1/tokens", json={"name": "inside", "role": "admin", "site_scope": granted}
        )
        assert answer.status_code == 201, answer.text
        assert answer.json()["site_scope"] == granted


def test_a_scoped_admin_lists_and_revokes_only_tokens_inside_its_scope(
    world: ScopeWorld,
) -> None:
    client = world.client("admin", "hn-bd")
    listed = {row["id"] for row in client.get("/api/v1/tokens").json()}
    inside = {tid for (_, scope), tid in world.token_ids.items() if scope in ("hn-bd", "bd-a")}
    assert listed == inside
    for key in (("viewer", None), ("admin", None)):
        foreign = client.delete(f"/api/v1/tokens/{world.token_ids[key]}")
        assert foreign.status_code == 404, foreign.text
    school = world.client("admin", "bd-a")
    assert (
        school.delete(f"/api/v1/tokens/{world.token_ids[('viewer', 'hn-bd')]}").status_code == 404
    )
    with world.sessions() as session:
        assert session.scalars(select(ApiToken).where(ApiToken.revoked_at.is_not(None))).all() == []
    own = client.delete(f"/api/v1/tokens/{world.token_ids[('viewer', 'bd-a')]}")
    assert own.status_code == 200, own.text
    assert own.json()["revoked_at"] is not None


@pytest.mark.parametrize(
    ("scope", "topics"),
    [
        (None, {"bd-a", "bd-b", "cg-c", "not"}),
        ("hn-bd", {"bd-a", "bd-b"}),
        ("bd-a", {"bd-a"}),
    ],
)
def test_dead_letters_are_shown_only_for_the_admins_sites(
    world: ScopeWorld, scope: str | None, topics: set[str]
) -> None:
    page = world.client("admin", scope).get("/api/v1/dead-letters").json()
    shown = {row["topic"].removeprefix("cw/v1/").split("/")[0] for row in page["items"]}
    assert shown == topics
    assert page["total"] == len(topics)


def test_an_asset_cannot_be_moved_out_of_sight_by_a_scoped_editor(world: ScopeWorld) -> None:
    own = world.asset_ids["pc-a2"]
    client = world.client("facilities", "bd-a")
    for site in ("", "   "):
        answer = client.patch(f"/api/v1/assets/{own}", json={"changes": {"site_id": site}})
        assert answer.status_code == 404, answer.text
    with world.sessions() as session:
        asset = session.get(Asset, own)
        assert asset is not None and asset.site_id == "bd-a"
    # Nor tied to a device of another school (its messages would then feed this asset),
    # and the refusal names no foreign asset.
    linked = client.patch(f"/api/v1/assets/{own}", json={"changes": {"device_id": "pc-c1"}})
    assert linked.status_code == 422, linked.text
    assert linked.json()["detail"] == {"device_id": "not a device of your sites"}


def test_a_uniqueness_refusal_names_no_foreign_asset(world: ScopeWorld) -> None:
    foreign = world.asset_ids["pc-c1"]
    with world.sessions() as session:
        asset = session.get(Asset, foreign)
        assert asset is not None
        asset.asset_tag = "TS-CG-1"
        asset.macs.append(AssetMac(mac="00:11:22:33:44:55"))
        session.commit()
    own = world.asset_ids["pc-a2"]
    client = world.client("facilities", "bd-a")
    for changes in ({"asset_tag": "TS-CG-1"}, {"macs": ["00:11:22:33:44:55"]}):
        answer = client.patch(f"/api/v1/assets/{own}", json={"changes": changes})
        assert answer.status_code == 422, answer.text
        (message,) = answer.json()["detail"].values()
        assert "another school" in message and f"asset {foreign}" not in message, message
    # An unscoped editor is told which asset holds it, to go and fix it.
    admin = world.client("facilities", None)
    answer = admin.patch(f"/api/v1/assets/{own}", json={"changes": {"asset_tag": "TS-CG-1"}})
    assert answer.json()["detail"] == {"asset_tag": f"'TS-CG-1' already belongs to asset {foreign}"}
