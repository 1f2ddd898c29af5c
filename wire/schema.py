"""JSON Schema export: one file per kind under docs/schemas/, generated from the types."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import msgspec

from campuswatch.wire.messages import KIND_TYPES, SCHEMA_VERSION
from campuswatch.wire.topics import json_schema_pattern


def ecma_patterns(node: Any) -> Any:
    """Every ``pattern`` of a msgspec schema in JSON Schema's dialect (ECMA-262).

    The types' patterns end in ``\\Z`` so that Python matches them whole; ECMA has no ``\\Z``
    and its ``$`` is already the end of the text.
    """
    if isinstance(node, dict):
        return {
            key: json_schema_pattern(value)
            if key == "pattern" and isinstance(value, str)
            else ecma_patterns(value)
            for key, value in node.items()
        }
    if isinstance(node, list):
        return [ecma_patterns(item) for item in node]
    return node


def schema_for(kind: str) -> dict[str, Any]:
    schema: dict[str, Any] = ecma_patterns(msgspec.json.schema(KIND_TYPES[kind]))
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = f"https://campuswatch.example/schemas/v{SCHEMA_VERSION}/{kind}.json"
    schema["title"] = f"CampusWatch wire v{SCHEMA_VERSION}: {kind}"
    return schema


def render_schemas() -> dict[str, str]:
    """File name → JSON text, exactly as checked in."""
    return {
        f"{kind}.json": json.dumps(schema_for(kind), indent=2, sort_keys=True) + "\n"
        for kind in KIND_TYPES
    }


def write_schemas(directory: Path) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in render_schemas().items():
        path = directory / name
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written
