"""The checked-in JSON Schemas must match the types; regenerate with
``campuswatch schema export docs/schemas``."""

from __future__ import annotations

import json
from pathlib import Path

from campuswatch.wire.messages import KIND_TYPES
from campuswatch.wire.schema import render_schemas

SCHEMA_DIR = Path(__file__).resolve().parents[2] / "docs" / "schemas"


def test_one_schema_file_per_kind() -> None:
    # rule.schema.json (the rule-pack format) lives beside the wire schemas.
    wire_files = [p.name for p in SCHEMA_DIR.glob("*.json") if not p.name.endswith(".schema.json")]
    assert sorted(wire_files) == sorted(f"{kind}.json" for kind in KIND_TYPES)


def test_checked_in_schemas_have_not_drifted() -> None:
    for name, text in render_schemas().items():
        on_disk = (SCHEMA_DIR / name).read_text(encoding="utf-8")
        assert on_disk == text, (
            f"docs/schemas/{name} differs from the types: run "
            "`campuswatch schema export docs/schemas` and review the change"
        )


def test_every_schema_requires_the_envelope() -> None:
    for name in render_schemas():
        schema = json.loads((SCHEMA_DIR / name).read_text(encoding="utf-8"))
        kind = name.removesuffix(".json")
        definition = schema["$defs"][schema["$ref"].rsplit("/", 1)[-1]]
        assert {"device_id", "site"} <= set(definition["required"]), kind
        assert definition["properties"]["kind"]["enum"] == [kind]
