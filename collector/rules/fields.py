"""Field paths into wire messages: checked against wire/messages.py, compiled to getters.

A path is dotted names; ``name[*]`` steps into every element of a list and a dict-valued
field takes any key as its next step (``values.co2_ppm``, ``attributes.door``). A getter
returns every value the path reaches (a list): a clause holds when *some* reached value
satisfies it, and ``None`` (unknown) never satisfies a comparison — "unknown" must never
look like "off" to a rule.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

import msgspec
from msgspec import inspect as mi

from campuswatch.wire.messages import KIND_TYPES

Getter = Callable[[object], list[object]]

_NAME_STEP = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)(\[\*\])?$")
_KEY_STEP = re.compile(r"^[A-Za-z0-9_:-]{1,64}$")
_NUMBER_TYPES: Final = (mi.IntType, mi.FloatType)


@dataclass(frozen=True, slots=True)
class FieldSpec:
    """What a valid path leads to."""

    path: str
    leaf: mi.Type
    many: bool
    """True when the path goes through ``[*]`` (several values per message)."""

    @property
    def category(self) -> str:
        return category_of(self.leaf)

    @property
    def choices(self) -> tuple[object, ...]:
        return tuple(self.leaf.values) if isinstance(self.leaf, mi.LiteralType) else ()


class FieldPathError(ValueError):
    pass


def category_of(leaf: mi.Type) -> str:
    if isinstance(leaf, mi.BoolType):
        return "bool"
    if isinstance(leaf, _NUMBER_TYPES):
        return "number"
    if isinstance(leaf, mi.StrType):
        return "str"
    if isinstance(leaf, mi.LiteralType):
        return "literal"
    if isinstance(leaf, mi.DateTimeType):
        return "datetime"
    if isinstance(leaf, mi.ListType):
        return "list"
    if isinstance(leaf, mi.DictType):
        return "dict"
    if isinstance(leaf, mi.StructType):
        return "struct"
    return "other"


def _without_none(type_: mi.Type) -> mi.Type:
    if isinstance(type_, mi.UnionType):
        rest = [member for member in type_.types if not isinstance(member, mi.NoneType)]
        if len(rest) == 1:
            return rest[0]
    return type_


_STRUCT_INFO: dict[type, mi.StructType] = {}


def _struct_info(kind: str) -> mi.StructType:
    cls = KIND_TYPES[kind]
    info = _STRUCT_INFO.get(cls)
    if info is None:
        resolved = mi.type_info(cls)
        assert isinstance(resolved, mi.StructType)
        info = _STRUCT_INFO[cls] = resolved
    return info


def resolve_field(kind: str, path: str) -> FieldSpec:
    """Check ``path`` against the message type of ``kind``; raise FieldPathError if invalid."""
    if kind not in KIND_TYPES:
        raise FieldPathError(f"unknown message kind {kind!r}")
    current: mi.Type = _struct_info(kind)
    many = False
    for step in path.split("."):
        current = _without_none(current)
        if isinstance(current, mi.DictType):
            if not _KEY_STEP.fullmatch(step):
                raise FieldPathError(f"{path!r}: {step!r} is not a valid key")
            current = current.value_type
            continue
        match = _NAME_STEP.fullmatch(step)
        if match is None:
            raise FieldPathError(f"{path!r}: {step!r} is not a field name (name or name[*])")
        name, star = match.group(1), match.group(2)
        if not isinstance(current, mi.StructType):
            raise FieldPathError(f"{path!r}: cannot step into {name!r}, the value is not a record")
        by_name = {field.encode_name: field for field in current.fields}
        field = by_name.get(name)
        if field is None or name == "kind":
            known = ", ".join(sorted(n for n in by_name if n != "kind"))
            where = current.cls.__name__
            raise FieldPathError(f"{path!r}: {where} has no field {name!r} (fields: {known})")
        current = _without_none(field.type)
        if star:
            if not isinstance(current, mi.ListType):
                raise FieldPathError(f"{path!r}: {name!r} is not a list, [*] does not apply")
            current = _without_none(current.item_type)
            many = True
    return FieldSpec(path, _without_none(current), many)


def compile_getter(path: str) -> Getter:
    """A function returning every value ``path`` reaches in a message (possibly none)."""
    steps: list[tuple[str, bool]] = []
    for step in path.split("."):
        match = _NAME_STEP.fullmatch(step)
        if match is not None:
            steps.append((match.group(1), bool(match.group(2))))
        else:
            steps.append((step, False))
    if not any(star for _, star in steps):
        names = [name for name, _ in steps]
        if len(names) == 1:
            only = names[0]

            def get_one(message: object) -> list[object]:
                value = getattr(message, only, None)
                return [] if value is None else [value]

            return get_one

        def get_plain(message: object) -> list[object]:
            value: object = message
            for name in names:
                value = _step(value, name)
                if value is None:
                    return []
            return [value]

        return get_plain

    def get_many(message: object) -> list[object]:
        values: list[object] = [message]
        for name, star in steps:
            following: list[object] = []
            for value in values:
                child = _step(value, name)
                if child is None:
                    continue
                if star and isinstance(child, list):
                    following.extend(item for item in child if item is not None)
                else:
                    following.append(child)
            values = following
        return values

    return get_many


def _step(value: object, name: str) -> object:
    if isinstance(value, dict):
        return value.get(name)
    if isinstance(value, msgspec.Struct):
        return getattr(value, name, None)
    return None
