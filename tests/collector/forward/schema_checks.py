"""The forwarded JSON documents checked against the schemas their owners publish.

OCSF: ocsf-json-schema carries each OCSF release's own schema export and turns a class, with
the profiles a document declares in ``metadata.profiles``, into JSON Schema (unknown
attributes, types, required attributes, enum ids, regexes, ``at_least_one``); jsonschema
checks the document against it. What JSON Schema cannot say is checked from the same export:
each caption beside an ``*_id`` (``severity``, ``status`` …) names that id, ``type_uid`` is
``class_uid * 100 + activity_id``, profiles exist for the class, and no deprecated attribute
is used.

ECS: every field must be in the ECS field definitions (``schemas/ecs_flat-8.11.0.json``, from
Elastic's ``@elastic/ecs`` package, see ``schemas/README.md``) with a value of its type, its
allowed values and pattern, arrays where ECS normalises to arrays, or lie under one of our
custom namespaces.

Each function returns every problem found (empty list: valid), so a failing test names all.
"""

from __future__ import annotations

import functools
import ipaddress
import json
import re
from collections.abc import Iterator, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any, Final

from jsonschema import Draft202012Validator
from ocsf_json_schema import OcsfJsonSchema, OcsfJsonSchemaEmbedded, get_ocsf_schema

ECS_DEFINITIONS: Final = Path(__file__).parent / "schemas" / "ecs_flat-8.11.0.json"
# Non-ECS data goes under the product's own name, as ECS asks of custom fields.
ECS_CUSTOM_NAMESPACES: Final = frozenset({"campuswatch"})
_ECS_STRING_TYPES: Final = frozenset(
    {"keyword", "constant_keyword", "wildcard", "match_only_text", "text"}
)
_ECS_CONTAINER_TYPES: Final = frozenset({"object", "flattened", "nested"})
_INT64: Final = 2**63


# --- OCSF -----------------------------------------------------------------------------------


@functools.cache
def ocsf_export(version: str) -> dict[str, Any]:
    """The schema export of one OCSF release, as bundled in ocsf-json-schema."""
    export: dict[str, Any] = get_ocsf_schema(version)
    if "dictionary" in export:
        raise ValueError(f"OCSF {version}: export format v2 is not handled by these checks")
    return export


@functools.cache
def _ocsf_validator(version: str, class_name: str, profiles: tuple[str, ...]) -> Any:
    schema = OcsfJsonSchemaEmbedded(ocsf_export(version)).get_class_schema(
        class_name, list(profiles)
    )
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema)


def ocsf_problems(doc: Mapping[str, Any]) -> list[str]:
    """Every way ``doc`` breaks the OCSF release named in its ``metadata.version``."""
    metadata = doc.get("metadata")
    if not isinstance(metadata, Mapping) or not isinstance(metadata.get("version"), str):
        return ["metadata.version: missing (the OCSF release cannot be known)"]
    version: str = metadata["version"]
    try:
        export = ocsf_export(version)
        class_name = OcsfJsonSchema(export).lookup_class_name_from_uid(doc.get("class_uid"))
    except (OSError, ValueError) as error:
        return [f"OCSF {version}: {error}"]
    declared = metadata.get("profiles", [])
    if not isinstance(declared, list) or not all(isinstance(p, str) for p in declared):
        return ["metadata.profiles: must be a list of profile names"]
    known = set(export["classes"][class_name].get("profiles", []))
    problems = [
        f"metadata.profiles: {name!r} is not a profile of {class_name} in OCSF {version}"
        for name in declared
        if name not in known
    ]
    validator = _ocsf_validator(version, class_name, tuple(sorted(set(declared))))
    problems += [
        f"{_ocsf_path(error.absolute_path)}: {error.message}"
        for error in sorted(validator.iter_errors(doc), key=lambda e: list(map(str, e.path)))
    ]
    if problems:
        return problems
    attributes = export["classes"][class_name]["attributes"]
    problems += _ocsf_semantics(doc, attributes, export, "")
    expected_type_uid = doc["class_uid"] * 100 + doc["activity_id"]
    if doc["type_uid"] != expected_type_uid:
        problems.append(f"type_uid: {doc['type_uid']} is not class_uid*100+activity_id")
    return problems


def _ocsf_path(path: Any) -> str:
    return ".".join(str(part) for part in path) or "(document)"


def _ocsf_semantics(
    value: Mapping[str, Any], attributes: Mapping[str, Any], export: Mapping[str, Any], at: str
) -> Iterator[str]:
    for name, item in value.items():
        attribute = attributes.get(name)
        if attribute is None:  # the JSON Schema check reports it
            continue
        where = f"{at}{name}"
        if "@deprecated" in attribute:
            yield f"{where}: deprecated in OCSF {export['version']}"
        enum, sibling = attribute.get("enum"), attribute.get("sibling")
        if enum and sibling and sibling in value and str(item) != "99":  # 99: source's words
            caption = enum.get(str(item), {}).get("caption")
            if value[sibling] != caption:
                shown = value[sibling]
                yield f"{at}{sibling}: {shown!r} is not the caption of {name} {item} ({caption!r})"
        object_type = attribute.get("object_type")
        if attribute.get("type") == "object_t" and object_type != "object":
            object_attributes = export["objects"][object_type]["attributes"]
            children = item if isinstance(item, list) else [item]
            for index, child in enumerate(children):
                if isinstance(child, Mapping):
                    inner = f"{where}.{index}." if isinstance(item, list) else f"{where}."
                    yield from _ocsf_semantics(child, object_attributes, export, inner)


# --- ECS ------------------------------------------------------------------------------------


@functools.cache
def ecs_definitions() -> tuple[str, dict[str, dict[str, Any]]]:
    """(ECS version, flat field name -> definition) of the vendored ECS field definitions."""
    data = json.loads(ECS_DEFINITIONS.read_text(encoding="utf-8"))
    return data["ecs_version"], data["fields"]


def ecs_problems(doc: Mapping[str, Any]) -> list[str]:
    """Every way ``doc`` is not an ECS document of the vendored ECS version."""
    version, fields = ecs_definitions()
    field_sets = {name.split(".", 1)[0] for name in fields}
    problems: list[str] = []
    flat = dict(_ecs_flatten(doc, fields, ""))
    for name, definition in fields.items():
        if definition.get("required") and name not in flat:
            problems.append(f"{name}: required by ECS, missing")
    if flat.get("ecs.version") != version:
        problems.append(f"ecs.version: {flat.get('ecs.version')!r}, definitions are ECS {version}")
    for name, value in flat.items():
        if name not in fields:
            namespace = name.split(".", 1)[0]
            if namespace in ECS_CUSTOM_NAMESPACES and namespace not in field_sets:
                continue
            problems.append(f"{name}: not an ECS {version} field nor under a custom namespace")
            continue
        problems += _ecs_value_problems(name, value, fields[name])
    problems += _ecs_category_type_problems(flat, fields)
    return problems


def _ecs_flatten(
    value: Mapping[str, Any], fields: Mapping[str, Mapping[str, Any]], prefix: str
) -> Iterator[tuple[str, Any]]:
    for key, item in value.items():
        name = f"{prefix}{key}"
        container = fields.get(name, {}).get("type") in _ECS_CONTAINER_TYPES
        if isinstance(item, Mapping) and not container:
            yield from _ecs_flatten(item, fields, f"{name}.")
        else:
            yield name, item


def _ecs_value_problems(name: str, value: Any, definition: Mapping[str, Any]) -> list[str]:
    is_array_field = "array" in definition.get("normalize", [])
    if isinstance(value, list) != is_array_field:
        expected = "an array" if is_array_field else "a single value"
        return [f"{name}: ECS normalises it to {expected}, got {value!r}"]
    problems: list[str] = []
    allowed = {v["name"] for v in definition.get("allowed_values", [])} | set(
        definition.get("expected_values", [])
    )
    for item in value if is_array_field else [value]:
        problem = _ecs_type_problem(definition, item)
        if problem:
            problems.append(f"{name}: {item!r} {problem}")
        elif allowed and item not in allowed:
            problems.append(f"{name}: {item!r} is not one of {sorted(allowed)}")
        elif "pattern" in definition and not re.fullmatch(definition["pattern"], item):
            problems.append(f"{name}: {item!r} does not match {definition['pattern']}")
    return problems


def _ecs_type_problem(definition: Mapping[str, Any], value: Any) -> str | None:
    ecs_type = definition["type"]
    if ecs_type in _ECS_STRING_TYPES:
        return None if isinstance(value, str) else f"is not a string ({ecs_type})"
    if ecs_type == "long":
        ok = isinstance(value, int) and not isinstance(value, bool) and -_INT64 <= value < _INT64
        return None if ok else "is not a 64-bit integer (long)"
    if ecs_type in {"float", "scaled_float", "double"}:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        return None if ok else f"is not a number ({ecs_type})"
    if ecs_type == "boolean":
        return None if isinstance(value, bool) else "is not a boolean"
    if ecs_type == "date":
        return _ecs_date_problem(value)
    if ecs_type == "ip":
        try:
            ipaddress.ip_address(value)
        except ValueError:
            return "is not an IP address"
        return None
    if ecs_type == "object":  # labels: flat keyword values, keys without dots
        if not isinstance(value, Mapping):
            return "is not an object"
        bad = [k for k, v in value.items() if "." in k or not isinstance(v, str)]
        return f"has keys with dots or non-keyword values: {bad}" if bad else None
    return f"has ECS type {ecs_type}, which these checks do not handle"


def _ecs_date_problem(value: Any) -> str | None:
    if not isinstance(value, str):
        return "is not an ISO 8601 date string"
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return "is not an ISO 8601 date"
    return None if moment.tzinfo is not None else "is a date without a time zone"


def _ecs_category_type_problems(
    flat: Mapping[str, Any], fields: Mapping[str, Mapping[str, Any]]
) -> list[str]:
    """ECS pairs each event.category with the event.type values it expects."""
    categories, types = flat.get("event.category"), flat.get("event.type")
    if not isinstance(categories, list) or not isinstance(types, list):
        return []
    expected = {
        event_type
        for allowed in fields["event.category"]["allowed_values"]
        if allowed["name"] in categories
        for event_type in allowed.get("expected_event_types", [])
    }
    return [
        f"event.type: {t!r} is not expected with event.category {categories}"
        for t in types
        if t not in expected
    ]
