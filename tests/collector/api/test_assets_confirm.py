"""``POST /api/v1/assets/confirm``: bulk acceptance of discovered assets, inside the scope only
(issue 19 item 1). SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import update

from campuswatch.collector.db.models import Asset
from tests.collector.api.scope_world import ScopeWorld, foreign_rows, scope_world


@pytest.fixture
def world(db_url: str, tmp_path: Path) -> Iterator[ScopeWorld]:
    with scope_world(db_url, tmp_path) as built:
        with built.sessions() as session, session.begin():
            session.execute(update(Asset).values(registered=False))
        yield built


def _registered(world: ScopeWorld, device_id: str) -> Asset:
    with world.sessions() as session:
        asset = session.get(Asset, world.asset_ids[device_id])
        assert asset is not None
        session.expunge(asset)
        return asset


def test_a_school_editor_confirms_its_discovered_assets_with_room_and_tag(
    world: ScopeWorld,
) -> None:
    school = world.client("facilities", "bd-a")
    listed = school.get("/api/v1/assets", params={"review": "to_confirm"}).json()
    assert "pc-a1" in {item["device_id"] for item in listed["items"]}
    assert "pc-c1" not in {item["device_id"] for item in listed["items"]}
    answer = school.post(
        "/api/v1/assets/confirm",
        json={
            "items": [
                {
                    "asset_id": world.asset_ids["pc-a1"],
                    "room": "A101",
                    "asset_tag": "T1",
                    "owner": "Hạnh",
                }
            ]
        },
    )
    assert answer.status_code == 200, answer.text
    confirmed = _registered(world, "pc-a1")
    assert (confirmed.registered, confirmed.room, confirmed.asset_tag) == (True, "A101", "T1")
    assert confirmed.owner == "Hạnh" and answer.json()[0]["owner"] == "Hạnh"
    after = school.get("/api/v1/assets", params={"review": "to_confirm"}).json()
    assert after["total"] == listed["total"] - 1


def test_one_foreign_asset_refuses_the_whole_batch_as_not_found(world: ScopeWorld) -> None:
    before = foreign_rows(world, "bd-a")
    school = world.client("facilities", "bd-a")
    answer = school.post(
        "/api/v1/assets/confirm",
        json={
            "items": [
                {"asset_id": world.asset_ids["pc-a1"], "room": "A101"},
                {"asset_id": world.asset_ids["pc-c1"], "room": "ours now"},
            ]
        },
    )
    assert answer.status_code == 404, answer.text
    assert foreign_rows(world, "bd-a") == before
    assert not _registered(world, "pc-a1").registered  # all or nothing


def test_viewers_cannot_confirm_and_a_taken_tag_is_named_without_its_holder(
    world: ScopeWorld,
) -> None:
    viewer = world.client("viewer", None)
    item = {"asset_id": world.asset_ids["pc-a1"]}
    assert viewer.post("/api/v1/assets/confirm", json={"items": [item]}).status_code == 403
    admin = world.client("admin", None)
    tagged = {"asset_id": world.asset_ids["pc-c1"], "asset_tag": "CG-1"}
    assert admin.post("/api/v1/assets/confirm", json={"items": [tagged]}).status_code == 200
    school = world.client("facilities", "bd-a")
    clash = school.post("/api/v1/assets/confirm", json={"items": [{**item, "asset_tag": "CG-1"}]})
    assert clash.status_code == 422
    detail = clash.json()["detail"]
    assert detail == {f"{item['asset_id']}.asset_tag": "'CG-1' already in use at another school"}
