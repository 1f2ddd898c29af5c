"""Clauses compiled to plain closures: the per-message hot path of the engine."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator

from campuswatch.collector.rules.fields import compile_getter
from campuswatch.collector.rules.model import Clause, version_key

Predicate = Callable[[object], bool]


def _always(_: object) -> bool:
    return True


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _same(left: object, right: object) -> bool:
    # True == 1 in Python; a rule saying `equals: true` must not match a count of 1.
    if isinstance(left, bool) or isinstance(right, bool):
        return left is right
    return left == right


def values_equal(left: object, right: object) -> bool:
    return _same(left, right)


def compile_where(clauses: list[Clause]) -> Predicate:
    """All clauses must hold; an empty list matches every message."""
    compiled = [compile_clause(clause) for clause in clauses]
    if not compiled:
        return _always
    if len(compiled) == 1:
        return compiled[0]
    return lambda message: all(predicate(message) for predicate in compiled)


def compile_clause(clause: Clause) -> Predicate:
    if clause.any is not None:
        children = [compile_clause(child) for child in clause.any]
        return lambda message: any(child(message) for child in children)
    if clause.all is not None:
        return compile_where(clause.all)
    if clause.not_ is not None:
        inner = compile_clause(clause.not_)
        return lambda message: not inner(message)
    assert clause.field is not None
    operator = clause.operator()
    assert operator is not None
    name, expected = operator
    get = compile_getter(clause.field)
    if name == "exists":
        # Tests presence, not a value: there is no value test to build for it.
        wanted = bool(expected)
        return lambda message: bool(get(message)) is wanted
    test = _value_test(name, expected)
    return lambda message: any(test(value) for value in get(message))


def _value_test(name: str, expected: object) -> Callable[[object], bool]:
    if name == "equals":
        return lambda value: _same(value, expected)
    if name == "not_equals":
        return lambda value: not _same(value, expected)
    if name == "in":
        assert isinstance(expected, list)
        choices = list(expected)
        return lambda value: any(_same(value, choice) for choice in choices)
    if name in ("gt", "gte", "lt", "lte"):
        assert _is_number(expected)
        bound = float(expected)  # type: ignore[arg-type]
        compare: dict[str, Callable[[float], bool]] = {
            "gt": lambda number: number > bound,
            "gte": lambda number: number >= bound,
            "lt": lambda number: number < bound,
            "lte": lambda number: number <= bound,
        }
        check = compare[name]
        return lambda value: _is_number(value) and check(value)  # type: ignore[arg-type]
    if name == "contains":
        return lambda value: _contains(value, expected)
    if name == "regex":
        pattern = re.compile(str(expected))
        return lambda value: isinstance(value, str) and pattern.search(value) is not None
    if name in ("version_lt", "version_gte"):
        bound_key = version_key(expected)
        if name == "version_lt":
            return lambda value: isinstance(value, str) and version_key(value) < bound_key
        return lambda value: isinstance(value, str) and version_key(value) >= bound_key
    raise ValueError(f"unknown operator {name!r}")  # the loader rejects these first


def _contains(value: object, expected: object) -> bool:
    if isinstance(value, str):
        return isinstance(expected, str) and expected in value
    if isinstance(value, list):
        return any(_same(item, expected) for item in value)
    if isinstance(value, dict):
        return expected in value
    return False


def field_paths(clauses: list[Clause]) -> Iterator[str]:
    """Every field a list of clauses reads (for evidence excerpts)."""
    for clause in clauses:
        if clause.field is not None:
            yield clause.field
        for children in (clause.any, clause.all):
            if children:
                yield from field_paths(children)
        if clause.not_ is not None:
            yield from field_paths([clause.not_])
