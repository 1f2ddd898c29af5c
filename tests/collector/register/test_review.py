"""Confirming discovered equipment in bulk, the review filter and one name per device
(issue 19 item 1)."""

from __future__ import annotations

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from campuswatch.collector.db.models import Asset, AssetHistory, Site
from campuswatch.collector.register.assets import (
    AssetValidationError,
    Confirmation,
    confirm_assets,
    device_names,
    digital_record_coverage,
    display_name,
    list_assets,
    review_state,
)

SCHOOL = "hn-bd-thcs-a"


def _asset(session: Session, **values: object) -> Asset:
    asset = Asset(site_id=SCHOOL, manual_fields=[], **values)
    session.add(asset)
    session.flush()
    return asset


@pytest.fixture
def school(session: Session) -> dict[str, Asset]:
    session.add(Site(id=SCHOOL, level="school", name="THCS A"))
    session.flush()
    assets = {
        "registered": _asset(
            session, kind="pc", source="agent", device_id="pc-1", name="pc-a101-001",
            registered=True, asset_tag="TB-1", room="A101",
        ),
        "projector": _asset(
            session, kind="projector", source="device", device_id="proj-d01d0c0004e",
            name="proj-a401-078",
        ),
        "camera": _asset(session, kind="camera", source="device", device_id="cam-77"),
        "hotspot": _asset(session, kind="other", source="discovery", name="android-hotspot"),
        "visitor": _asset(session, kind="other", source="discovery", ignored=True),
    }  # fmt: skip
    session.commit()
    return assets


def test_review_states_tell_the_rogue_hotspot_from_school_equipment(
    session: Session, school: dict[str, Asset]
) -> None:
    assert {key: review_state(asset) for key, asset in school.items()} == {
        "registered": "registered",
        "projector": "to_confirm",
        "camera": "to_confirm",
        "hotspot": "unknown",
        "visitor": "ignored",
    }

    def ids(review: str) -> set[int]:
        return {asset.id for asset in list_assets(session, review=review)[0]}

    assert ids("unknown") == {school["hotspot"].id}
    assert ids("discovered") == {school[k].id for k in ("projector", "camera", "hotspot")}
    assert ids("to_confirm") == {school["projector"].id, school["camera"].id}
    assert ids("ignored") == {school["visitor"].id}
    assert ids("registered") == {school["registered"].id}


def test_bulk_confirm_sets_room_and_tag_and_counts_in_the_kpi(
    session: Session, school: dict[str, Asset]
) -> None:
    assert digital_record_coverage(session) == (1, 5)
    projector, camera = school["projector"], school["camera"]
    confirm_assets(
        session,
        [
            Confirmation(projector.id, room="A401", asset_tag="TB-2", owner="cô Hạnh"),
            Confirmation(camera.id),
        ],
        actor="user:co-hanh",
    )
    session.commit()
    assert (projector.registered, projector.room, projector.asset_tag) == (True, "A401", "TB-2")
    assert projector.owner == "cô Hạnh"
    assert camera.registered and camera.room is None
    assert digital_record_coverage(session) == (3, 5)
    actors = set(
        session.scalars(select(AssetHistory.actor).where(AssetHistory.asset_id == projector.id))
    )
    assert actors == {"user:co-hanh"}
    confirm_assets(session, [Confirmation(school["hotspot"].id)], actor="user:x", ignore=True)
    assert review_state(school["hotspot"]) == "ignored"


def test_bulk_confirm_is_all_or_nothing(session: Session, school: dict[str, Asset]) -> None:
    projector, camera = school["projector"], school["camera"]
    with pytest.raises(AssetValidationError) as refused:
        confirm_assets(
            session,
            [
                Confirmation(projector.id, room="A401", asset_tag="TB-1"),  # held by the PC
                Confirmation(camera.id, asset_tag="TB-9"),
                Confirmation(school["hotspot"].id, asset_tag="TB-9"),  # twice in the batch
            ],
            actor="user:x",
        )
    assert set(refused.value.errors) == {
        f"{projector.id}.asset_tag",
        f"{school['hotspot'].id}.asset_tag",
    }
    session.rollback()
    assert not session.get(Asset, projector.id).registered  # type: ignore[union-attr]


def test_one_name_per_device(session: Session, school: dict[str, Asset]) -> None:
    assert display_name(school["projector"]) == "proj-a401-078"
    assert display_name(school["camera"]) == "cam-77"
    assert device_names(session, ["proj-d01d0c0004e", "cam-77", "gone-1", None]) == {
        "proj-d01d0c0004e": "proj-a401-078",
        "cam-77": "cam-77",
        "gone-1": "gone-1",
    }
