"""A NUL character is refused at the API's door (422), alike on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest

from tests.collector.conftest import CollectorFactory, RunningCollector


@pytest.fixture
def on_both_registers(db_url: str, collector_factory: CollectorFactory) -> RunningCollector:
    collector = collector_factory(db=db_url)
    site = {"id": "s1", "level": "school", "name": "THCS A"}
    assert collector.api.put("/api/v1/sites/s1", json=site).status_code == 200
    return collector


NUL_REQUESTS = [
    ("GET", "/api/v1/devices", {"search": "pc\x00"}, None),
    ("GET", "/api/v1/sites/s1%00", None, None),
    ("GET", "/api/v1/assets", {"site_id": "s1\x00"}, None),
    ("GET", "/api/v1/alerts", {"rule_id": "\x00"}, None),
    ("GET", "/api/v1/dead-letters", {"reason": "schema\x00"}, None),
    ("POST", "/api/v1/tokens", None, {"name": "a\x00b", "role": "viewer"}),
    ("POST", "/api/v1/assets", None, {"kind": "pc", "name": "a\x00b"}),
    ("PUT", "/api/v1/sites/s2", None, {"id": "s2", "level": "room", "name": "\x00"}),
]


def test_nul_is_refused_before_the_database_sees_it(on_both_registers: RunningCollector) -> None:
    answers = {
        (method, path): on_both_registers.api.request(method, path, params=params, json=body)
        for method, path, params, body in NUL_REQUESTS
    }
    wrong = {key: r.text for key, r in answers.items() if r.status_code != 422}
    assert wrong == {}
    assert {r.json()["detail"] for r in answers.values()} == {
        "text must not contain NUL characters"
    }


def test_a_nul_in_an_imported_file_is_a_row_error(on_both_registers: RunningCollector) -> None:
    csv = b"kind,name,serial,status\r\npc,a\x00b,SN-1,in_service\r\n"
    response = on_both_registers.api.post(
        "/api/v1/assets/import", params={"filename": "a.csv", "dry_run": "false"}, content=csv
    )
    report = response.json()
    assert report["applied"] is False
    assert report["errors"] == [{"row": 2, "column": "name", "message": "contains a NUL character"}]
