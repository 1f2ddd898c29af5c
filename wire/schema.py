"""JSON Schema export: one file per kind under docs/schemas/, generated from the types."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import msgspec

from campuswatch.wire.messages import KIND_TYPES, SCHEMA_VERSION


def schema_for(kind: str) -> dict[str, Any]:
    schema = msgspec.json.schema(KIND_TYPES[kind])
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
