"""A SOC acts on many alerts in one API call, as it can in the web UI's queue: one action
and one note for each, all or nothing on scope (SQLite and PostgreSQL)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from campuswatch.collector.alerts.models import Alert
from tests.collector.api.scope_world import ScopeWorld, scope_world


@pytest.fixture
def world(db_url: str, tmp_path: Path) -> Iterator[ScopeWorld]:
    with scope_world(db_url, tmp_path) as built:
        yield built


def _states(world: ScopeWorld) -> dict[str, str]:
    with world.sessions() as session:
        return {
            site: alert.state
            for site, number in world.alert_ids.items()
            if (alert := session.get(Alert, number)) is not None
        }


def test_one_call_acknowledges_every_named_alert_with_its_note(world: ScopeWorld) -> None:
    ids = sorted(world.alert_ids.values())
    soc = world.client("soc", None)

    first = soc.post(
        "/api/v1/alerts/actions", json={"ids": ids, "action": "acknowledge", "note": "on it"}
    )
    again = soc.post("/api/v1/alerts/actions", json={"ids": ids, "action": "acknowledge"})

    assert first.status_code == 200, first.text
    assert first.json() == {"done": ids, "skipped": []}
    assert _states(world) == {"bd-a": "acknowledged", "cg-c": "acknowledged"}
    # Someone else got there first: normal on a SOC, skipped with the reason, not an error.
    assert again.status_code == 200, again.text
    assert again.json()["done"] == []
    assert [item["id"] for item in again.json()["skipped"]] == ids
    detail = soc.get(f"/api/v1/alerts/{ids[0]}").json()
    assert any(entry["note"] == "on it" for entry in detail["audit"])


def test_one_foreign_alert_refuses_the_whole_request(world: ScopeWorld) -> None:
    district = world.client("soc", "hn-bd")
    ids = [world.alert_ids["bd-a"], world.alert_ids["cg-c"]]

    refused = district.post("/api/v1/alerts/actions", json={"ids": ids, "action": "resolve"})

    assert refused.status_code == 404, refused.text
    assert _states(world) == {"bd-a": "firing", "cg-c": "firing"}


@pytest.mark.parametrize(
    ("body", "role", "status"),
    [
        ({"ids": [1], "action": "acknowledge"}, "viewer", 403),
        ({"ids": [1], "action": "delete"}, "soc", 422),
        ({"ids": [], "action": "resolve"}, "soc", 422),
        ({"ids": list(range(1, 502)), "action": "resolve"}, "soc", 422),
        ({"ids": [1], "action": "comment"}, "soc", 422),
    ],
)
def test_bad_bulk_requests_are_refused_with_nothing_changed(
    world: ScopeWorld, body: dict[str, object], role: str, status: int
) -> None:
    response = world.client(role, None).post("/api/v1/alerts/actions", json=body)
    assert response.status_code == status, response.text
    assert _states(world) == {"bd-a": "firing", "cg-c": "firing"}
