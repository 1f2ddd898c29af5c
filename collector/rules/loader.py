"""Load and validate a rule pack: every problem in every file, each with ``file:line``.

Structure is checked field by field against the types in ``model`` (so one bad field does
not hide the next); meaning is checked after: UUIDs, duplicate ids, wire kinds and field
paths against wire/messages.py, operators against the field's type, durations, every text in
both languages, summary placeholders and the test case beside each rule. ``load_rule_pack``
returns a pack only when there is no problem at all — never a half-loaded pack.
"""

from __future__ import annotations

import re
import types
import typing
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import msgspec

from campuswatch.collector.rules.fields import FieldPathError, FieldSpec, resolve_field
from campuswatch.collector.rules.model import (
    CONDITION_KINDS,
    LANGUAGES,
    LOCALISED_FIELDS,
    OPERATORS,
    WIRE_KINDS,
    AbsenceCondition,
    ChangeCondition,
    Clause,
    LoadedRule,
    MatchCondition,
    NewEntityCondition,
    Problem,
    RatioCondition,
    Rule,
    RulePack,
    RulePackError,
    ThresholdCondition,
    parse_duration,
)
from campuswatch.collector.rules.templates import template_problems
from campuswatch.collector.rules.yamlnodes import LocatedDocument, YamlSyntaxError, load_located

YPath = tuple[str | int, ...]
TEST_SUFFIXES: Final = (".test.yaml", ".test.yml")
_DURATION_FIELDS: Final = frozenset({"for_", "resolve_after", "window", "within", "max_age"})
_MITRE_TAG = re.compile(
    r"^attack\.(t[0-9]{4}(\.[0-9]{3})?|[a-z_]+|ta[0-9]{4}|g[0-9]{4}|s[0-9]{4})$"
)
_COMMON_PLACEHOLDERS: Final = frozenset(
    {"site_id", "device_id", "entity", "rule_title", "level", "device_type"}
)
PLACEHOLDERS: Final[dict[str, frozenset[str]]] = {
    "match": _COMMON_PLACEHOLDERS | {"value"},
    "threshold": _COMMON_PLACEHOLDERS | {"value", "aggregate", "window"},
    "absence": _COMMON_PLACEHOLDERS | {"last_seen", "silent_for"},
    "change": _COMMON_PLACEHOLDERS | {"value", "previous"},
    "new_entity": _COMMON_PLACEHOLDERS | {"mac", "ip", "vendor", "hostname"},
    "ratio": _COMMON_PLACEHOLDERS | {"ratio_pct", "matching", "total"},
}
_SUBJECTS: Final[dict[str, tuple[str, ...]]] = {
    "match": ("device",),
    "threshold": ("device", "site"),
    "absence": ("device", "site"),
    "change": ("device",),
    "new_entity": ("device",),
    "ratio": ("site",),
}


class FileCheck:
    """Problems found in one file, located through the document's line map."""

    def __init__(self, path: Path, display: str, document: LocatedDocument) -> None:
        self.path = path
        self.display = display
        self.document = document
        self.problems: list[Problem] = []

    def add(self, where: YPath, code: str, message: str) -> None:
        self.problems.append(Problem(self.display, self.document.line_of(where), code, message))


# --- structure ---------------------------------------------------------------------------


def _unwrap(annotation: Any) -> Any:
    """``X | None`` / ``X | UnsetType`` / ``Annotated[X, …]`` → ``X``."""
    while True:
        origin = typing.get_origin(annotation)
        if origin is typing.Annotated:
            annotation = typing.get_args(annotation)[0]
            continue
        if origin in (typing.Union, types.UnionType):
            rest = [
                arg
                for arg in typing.get_args(annotation)
                if arg is not type(None) and arg is not msgspec.UnsetType
            ]
            if len(rest) == 1:
                annotation = rest[0]
                continue
        return annotation


def _is_struct(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, msgspec.Struct)


def _error_path(text: str) -> YPath:
    found = re.search(r"at `\$([^`]*)`", text)
    if not found:
        return ()
    return tuple(
        int(index) if index else key
        for key, index in re.findall(r"\.([A-Za-z0-9_]+)|\[([0-9]+)\]", found.group(1))
    )


def convert_struct(cls: type[Any], data: object, where: YPath, check: FileCheck) -> Any:
    """Build ``cls`` from ``data`` reporting every bad field; None when anything is wrong."""
    if not isinstance(data, dict):
        check.add(where, "schema", f"expected a mapping for {cls.__name__}, got {_kind(data)}")
        return None
    fields = {info.encode_name: info for info in msgspec.structs.fields(cls)}
    values: dict[str, object] = {}
    ok = True
    for key in data:
        if key not in fields:
            ok = False
            if cls is Clause:
                check.add(
                    (*where, key),
                    "unknown-operator",
                    f"unknown operator {key!r} (operators: {', '.join(OPERATORS)}; "
                    "combinators: any, all, not)",
                )
            else:
                known = ", ".join(fields)
                check.add((*where, key), "schema", f"unknown key {key!r} (keys: {known})")
    for name, info in fields.items():
        if name not in data:
            if info.required:
                ok = False
                code = "bad-condition" if cls is not Rule else "schema"
                check.add(where, code, f"missing required key {name!r}")
                values[info.name] = None
            continue
        value = data[name]
        here = (*where, name)
        inner = _unwrap(info.type)
        if info.name in _DURATION_FIELDS and value is not None:
            if not isinstance(value, str) or parse_duration(value) is None:
                values[info.name] = None
                check.add(
                    here,
                    "bad-duration",
                    f"{name}: {value!r} is not a duration like 90s, 10m, 1h, 30d",
                )
                ok = False
                continue
            values[info.name] = value
        elif cls is Rule and name in LOCALISED_FIELDS and not isinstance(value, dict):
            values[info.name] = None
            check.add(
                here,
                "missing-language",
                f"{name} needs its text in each language, e.g. {name}: {{vi: …, en: …}}",
            )
            ok = False
            continue
        elif cls is Rule and name == "id":
            if not _is_uuid(value):
                values[info.name] = None
                check.add(here, "bad-uuid", f"id {value!r} is not a UUID")
                ok = False
                continue
            values[info.name] = str(value).lower()
        elif value is None and info.default is None:
            values[info.name] = None
        elif _is_struct(inner):
            built = convert_struct(inner, value, here, check)
            ok = ok and built is not None
            values[info.name] = built
        elif typing.get_origin(inner) is list and _is_struct(_unwrap(typing.get_args(inner)[0])):
            item_type = _unwrap(typing.get_args(inner)[0])
            if not isinstance(value, list):
                check.add(here, "schema", f"{name}: expected a list, got {_kind(value)}")
                ok = False
                continue
            items = [
                convert_struct(item_type, item, (*here, i), check) for i, item in enumerate(value)
            ]
            ok = ok and all(item is not None for item in items)
            values[info.name] = items
        else:
            try:
                values[info.name] = msgspec.convert(value, info.type, strict=True)
            except msgspec.ValidationError as exc:
                values[info.name] = None
                text = str(exc)
                check.add(
                    (*here, *_error_path(text)), "schema", f"{name}: {text.split(' - at')[0]}"
                )
                ok = False
    # Built even when a field failed (that field is None) so that the meaning checks still
    # run on the parts that are fine: a bad duration must not hide an unknown field path.
    del ok
    return cls(**values)


def _is_uuid(value: object) -> bool:
    if not isinstance(value, str) or len(value) != 36:
        return False
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True


def _kind(value: object) -> str:
    return "nothing" if value is None else type(value).__name__


# --- meaning -----------------------------------------------------------------------------


def _guarded(check: FileCheck, step: Callable[[], None]) -> None:
    """Run one meaning check on a partly built rule.

    A part that failed to convert is None; its problem is already reported, so a check that
    trips over it has nothing to add. With no problem reported, an error is a real bug.
    """
    try:
        step()
    except (AttributeError, TypeError, KeyError):
        if not check.problems:
            raise


def _check_clauses(clauses: list[Clause], kind: str, where: YPath, check: FileCheck) -> None:
    for index, clause in enumerate(clauses or ()):
        if clause is not None:
            here = (*where, index)
            _guarded(check, lambda c=clause, h=here: _check_clause(c, kind, h, check))  # type: ignore[misc]


def _check_clause(clause: Clause, kind: str, where: YPath, check: FileCheck) -> None:
    shapes = [
        name
        for name, value in (
            ("field", clause.field),
            ("any", clause.any),
            ("all", clause.all),
            ("not", clause.not_),
        )
        if value is not None
    ]
    operators = clause.operators_given()
    if len(shapes) != 1:
        check.add(where, "bad-condition", "a clause needs exactly one of field, any, all, not")
        return
    if shapes[0] != "field":
        if operators:
            check.add(where, "bad-condition", f"{shapes[0]} cannot have an operator")
        if clause.not_ is not None:
            _check_clause(clause.not_, kind, (*where, "not"), check)
        for name, children in (("any", clause.any), ("all", clause.all)):
            if children is not None:
                if not children:
                    check.add((*where, name), "bad-condition", f"{name} needs at least one clause")
                _check_clauses(children, kind, (*where, name), check)
        return
    assert clause.field is not None
    if len(operators) != 1:
        message = "several operators" if operators else "no operator"
        check.add(where, "bad-condition", f"{clause.field}: {message} (give exactly one)")
        return
    spec = _field(kind, clause.field, (*where, "field"), check)
    if spec is not None:
        operator = clause.operator()
        assert operator is not None
        _check_operator(spec, operator[0], operator[1], (*where, operator[0]), check)


def _field(kind: str, path: str, where: YPath, check: FileCheck) -> FieldSpec | None:
    if kind not in WIRE_KINDS:
        return None  # reported once, on the kind
    try:
        return resolve_field(kind, path)
    except FieldPathError as exc:
        check.add(where, "unknown-field", str(exc))
        return None


def _check_operator(
    spec: FieldSpec, operator: str, value: object, where: YPath, check: FileCheck
) -> None:
    category = spec.category

    def bad(reason: str) -> None:
        check.add(where, "bad-operator", f"{spec.path} ({category}): {operator} {reason}")

    if operator == "exists":
        return
    if category in ("struct", "other"):
        bad("cannot compare a whole record; name one of its fields")
        return
    if operator in ("equals", "not_equals", "in"):
        candidates = value if operator == "in" else [value]
        if not isinstance(candidates, list) or not candidates:
            bad("needs a non-empty list")
            return
        for candidate in candidates:
            problem = _value_problem(spec, candidate)
            if problem:
                bad(problem)
    elif operator in ("gt", "gte", "lt", "lte"):
        if category != "number":
            bad("needs a numeric field")
    elif operator == "contains":
        if category not in ("str", "list", "dict"):
            bad("needs a text, list or dict field")
    elif operator == "regex":
        if category not in ("str", "literal"):
            bad("needs a text field")
            return
        try:
            re.compile(str(value))
        except re.error as exc:
            bad(f"pattern does not compile: {exc}")
    elif operator in ("version_lt", "version_gte") and category not in ("str", "literal"):
        bad("needs a text (version) field")


def _value_problem(spec: FieldSpec, value: object) -> str | None:
    category = spec.category
    if category == "bool" and not isinstance(value, bool):
        return f"value {value!r} is not true/false"
    if category == "number" and (isinstance(value, bool) or not isinstance(value, int | float)):
        return f"value {value!r} is not a number"
    if category == "str" and not isinstance(value, str):
        return f"value {value!r} is not text"
    if category == "literal" and value not in spec.choices:
        return f"value {value!r} is not one of {', '.join(map(repr, spec.choices))}"
    return None


def _check_bounds(
    condition: ThresholdCondition | RatioCondition, where: YPath, check: FileCheck
) -> None:
    fire = {
        name: getattr(condition, name)
        for name in ("above", "at_least", "below", "at_most")
        if getattr(condition, name) is not None
    }
    if len(fire) != 1:
        check.add(where, "bad-condition", "give exactly one of above, at_least, below, at_most")
        return
    ((name, bound),) = fire.items()
    upward = name in ("above", "at_least")
    if condition.clear_above is not None and upward:
        check.add((*where, "clear_above"), "bad-condition", f"clear_above does not go with {name}")
    if condition.clear_below is not None and not upward:
        check.add((*where, "clear_below"), "bad-condition", f"clear_below does not go with {name}")
    if upward and condition.clear_below is not None and condition.clear_below > bound:
        check.add((*where, "clear_below"), "bad-condition", f"clear_below must be <= {bound}")
    if not upward and condition.clear_above is not None and condition.clear_above < bound:
        check.add((*where, "clear_above"), "bad-condition", f"clear_above must be >= {bound}")


def _check_rule(rule: Rule, check: FileCheck) -> None:
    if rule.condition is not None:
        _guarded(check, lambda: _check_condition(rule, check))
    kind_name = rule.condition.chosen() if rule.condition is not None else None
    placeholders = PLACEHOLDERS[kind_name[0]] if kind_name else None
    if placeholders is not None and rule.facts:
        known = placeholders
        _guarded(check, lambda: _check_facts(rule, known, check))
        placeholders = placeholders | set(rule.facts)
    _guarded(check, lambda: _check_metadata(rule, placeholders, check))


_FACT_CONDITIONS: Final = ("match", "change")


def _check_facts(rule: Rule, placeholders: frozenset[str], check: FileCheck) -> None:
    chosen = rule.condition.chosen()
    assert chosen is not None
    kind_name, condition = chosen
    if kind_name not in _FACT_CONDITIONS:
        check.add(
            ("facts",),
            "bad-condition",
            f"facts are read from the message a {' or '.join(_FACT_CONDITIONS)} rule "
            f"judges; a {kind_name} rule has none",
        )
        return
    wire_kind = getattr(condition, "kind", None)
    for name, path in rule.facts.items():
        if name in placeholders:
            check.add(("facts", name), "bad-template", f"fact {name!r} hides the placeholder")
        if isinstance(wire_kind, str) and isinstance(path, str):
            _field(wire_kind, path, ("facts", name), check)


def _check_condition(rule: Rule, check: FileCheck) -> None:
    given = rule.condition.kinds_given()
    if len(given) != 1:
        check.add(
            ("condition",),
            "bad-condition",
            f"give exactly one condition of {', '.join(CONDITION_KINDS)} (got {len(given)})",
        )
        return
    kind_name = given[0]
    where: YPath = ("condition", kind_name)
    if rule.subject not in _SUBJECTS[kind_name]:
        allowed = " or ".join(_SUBJECTS[kind_name])
        check.add(("subject",), "bad-condition", f"a {kind_name} rule is about a {allowed}")
    condition = getattr(rule.condition, kind_name)
    wire_kind = getattr(condition, "kind", None)
    if wire_kind is not None and wire_kind not in WIRE_KINDS:
        check.add(
            (*where, "kind"),
            "unknown-kind",
            f"unknown message kind {wire_kind!r} (kinds: {', '.join(WIRE_KINDS)})",
        )
    if isinstance(condition, MatchCondition | RatioCondition | ThresholdCondition):
        _check_clauses(condition.where, condition.kind, (*where, "where"), check)
    if isinstance(condition, ThresholdCondition | RatioCondition):
        _check_bounds(condition, where, check)
    if isinstance(condition, ThresholdCondition):
        if condition.aggregate == "count" and condition.field is not None:
            check.add((*where, "field"), "bad-condition", "count counts messages: drop field")
        elif condition.aggregate != "count":
            if condition.field is None:
                check.add(where, "bad-condition", f"{condition.aggregate} needs a field")
            else:
                spec = _field(condition.kind, condition.field, (*where, "field"), check)
                if spec is not None and spec.category != "number":
                    check.add((*where, "field"), "bad-operator", f"{spec.path} is not numeric")
    if isinstance(condition, RatioCondition) and not condition.where:
        check.add((*where, "where"), "bad-condition", "ratio needs a where condition")
    if isinstance(condition, ChangeCondition):
        spec = _field(condition.kind, condition.field, (*where, "field"), check)
        if spec is not None:
            for name, value in (("from", condition.from_), ("to", condition.to)):
                if value is not msgspec.UNSET and (problem := _value_problem(spec, value)):
                    check.add((*where, name), "bad-operator", f"{spec.path}: {problem}")
            numeric = spec.category == "number" or condition.compare == "version"
            if condition.direction != "any" and not numeric:
                check.add(
                    (*where, "direction"),
                    "bad-condition",
                    f"{condition.direction} needs a numeric field or compare: version",
                )
    if isinstance(condition, NewEntityCondition | AbsenceCondition):
        pass  # structure is all there is to check


def _check_metadata(rule: Rule, placeholders: frozenset[str] | None, check: FileCheck) -> None:
    for name in LOCALISED_FIELDS:
        texts: dict[str, str] | None = getattr(rule, name)
        if texts is None:
            continue  # not a language map: reported while converting
        for language in LANGUAGES:
            if not texts.get(language, "").strip():
                check.add((name,), "missing-language", f"{name} has no {language!r} text")
        vietnamese = texts.get("vi", "")
        if vietnamese.strip() and _without_placeholders(vietnamese).isascii():
            check.add(
                (name, "vi"),
                "no-diacritics",
                f"the Vietnamese {name} has no diacritics (write tiếng Việt có dấu)",
            )
    for index, tag in enumerate(rule.tags or ()):
        if tag.startswith("attack.") and not _MITRE_TAG.match(tag):
            check.add(
                ("tags", index),
                "bad-tag",
                f"{tag!r} is not a MITRE ATT&CK id like attack.t1562.001",
            )
    if placeholders is None or rule.summary is None or rule.labels is None:
        return  # which placeholders exist depends on the condition kind
    allowed = placeholders | set(rule.labels)
    templates: list[tuple[YPath, str]] = [
        (("summary", language), text) for language, text in rule.summary.items()
    ]
    templates += [(("labels", key), text) for key, text in rule.labels.items()]
    for where, template in templates:
        for problem in template_problems(template, allowed):
            check.add(where, "bad-template", problem)


def _without_placeholders(text: str) -> str:
    return re.sub(r"\{[^{}]*\}", "", text)


# --- files and packs -----------------------------------------------------------------------


def _display(path: Path, root: Path) -> str:
    try:
        return str(path.relative_to(root.parent))
    except ValueError:
        return str(path)


def is_test_file(path: Path) -> bool:
    return path.name.endswith(TEST_SUFFIXES)


def _rule_path_for(test_path: Path) -> Path:
    stem = test_path.name
    for suffix in TEST_SUFFIXES:
        stem = stem.removesuffix(suffix)
    return test_path.with_name(stem + ".yaml")


def test_path_for(rule_path: Path) -> Path:
    return rule_path.with_name(rule_path.name.rsplit(".", 1)[0] + ".test.yaml")


def read_located(path: Path, display: str) -> tuple[LocatedDocument | None, list[Problem]]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        return None, [Problem(display, 1, "unreadable", str(exc))]
    try:
        document = load_located(text)
    except YamlSyntaxError as exc:
        return None, [Problem(display, exc.line, "yaml-syntax", exc.detail)]
    problems = [
        Problem(display, line, "duplicate-key", f"key {where[-1]!r} appears twice")
        for where, line in document.duplicate_keys
    ]
    return document, problems


def _check_compiles(rule: Rule, check: FileCheck) -> None:
    """Compile the rule through the engine's own path (a rule it refuses is a problem)."""
    from campuswatch.collector.rules.engine import compile_rule

    try:
        compile_rule(rule)
    except Exception as exc:  # anything the engine raises would stop the collector
        check.add(
            ("condition",),
            "bad-condition",
            f"the collector cannot compile this rule: {type(exc).__name__}: {exc}",
        )


@dataclass(frozen=True, slots=True)
class RuleFileCheck:
    rule: Rule | None
    """The rule, only when the file has no problem at all."""
    rule_id: str | None
    """The file's id when it is a valid UUID, even when something else is wrong."""
    id_line: int
    problems: list[Problem]


def check_rule_file(path: Path, display: str) -> RuleFileCheck:
    """Every problem of one rule file, its id (for duplicate checks) and the rule if clean."""
    document, problems = read_located(path, display)
    if document is None:
        return RuleFileCheck(None, None, 1, problems)
    check = FileCheck(path, display, document)
    rule = convert_struct(Rule, document.data, (), check)
    if isinstance(rule, Rule):
        _check_rule(rule, check)
        if not check.problems and not problems:
            _check_compiles(rule, check)
    problems.extend(check.problems)
    rule_id = rule.id if isinstance(rule, Rule) and isinstance(rule.id, str) else None
    return RuleFileCheck(
        rule if not problems else None, rule_id, document.line_of(("id",)), problems
    )


def check_rule_pack(
    directory: Path, *, require_tests: bool = True
) -> tuple[list[LoadedRule], list[Problem]]:
    """Every rule file under ``directory`` checked; (rules that passed, all problems)."""
    from campuswatch.collector.rules.testing import check_test_case

    root = Path(directory)
    problems: list[Problem] = []
    if not root.is_dir():
        return [], [Problem(str(root), 1, "unreadable", "not a directory")]
    files = sorted(p for p in root.rglob("*") if p.suffix in (".yaml", ".yml") and p.is_file())
    loaded: list[LoadedRule] = []
    first_seen: dict[str, tuple[str, int]] = {}
    rule_files = [path for path in files if not is_test_file(path)]
    for path in rule_files:
        display = _display(path, root)
        checked = check_rule_file(path, display)
        problems.extend(checked.problems)
        test_path = test_path_for(path)
        has_test = test_path.is_file()
        if require_tests and not has_test:
            problems.append(
                Problem(display, 1, "missing-test", f"no test case: create {test_path.name}")
            )
        # Ids are compared for every file with a readable id, clean or not: a duplicate must
        # not hide behind an unrelated problem in either file.
        if checked.rule_id is not None:
            earlier = first_seen.get(checked.rule_id)
            if earlier is not None:
                problems.append(
                    Problem(
                        display,
                        checked.id_line,
                        "duplicate-id",
                        f"id {checked.rule_id} is also used by {earlier[0]}:{earlier[1]}",
                    )
                )
                continue
            first_seen[checked.rule_id] = (display, checked.id_line)
        rule = checked.rule
        if rule is None:
            continue
        if has_test:
            test_problems = check_test_case(test_path, _display(test_path, root), rule)
            problems.extend(test_problems)
        loaded.append(LoadedRule(rule, path, test_path if has_test else None))
    expected_tests = {test_path_for(path) for path in rule_files}
    for path in files:
        if is_test_file(path) and test_path_for(_rule_path_for(path)) not in expected_tests:
            problems.append(
                Problem(_display(path, root), 1, "orphan-test", "test case without a rule file")
            )
    problems.sort(key=lambda problem: (problem.file, problem.line))
    return loaded, problems


def load_rule_pack(directory: Path, *, require_tests: bool = True) -> RulePack:
    """The validated pack, or ``RulePackError`` listing every problem (nothing half-loaded)."""
    loaded, problems = check_rule_pack(directory, require_tests=require_tests)
    if problems:
        raise RulePackError(problems)
    return RulePack.of(loaded, Path(directory))


def rule_pack_from_rules(rules: list[Rule]) -> RulePack:
    """A pack built in code (tests, the test-case runner); the rules are trusted."""
    return RulePack.of([LoadedRule(rule, Path(f"<{rule.id}>"), None) for rule in rules])


def parse_rule_text(text: str, name: str = "<rule>") -> Rule:
    """One rule from YAML text, fully checked; ``RulePackError`` on any problem."""
    document = load_located(text)
    check = FileCheck(Path(name), name, document)
    rule = convert_struct(Rule, document.data, (), check)
    if isinstance(rule, Rule):
        _check_rule(rule, check)
        if not check.problems:
            _check_compiles(rule, check)
    if check.problems or not isinstance(rule, Rule):
        raise RulePackError(check.problems)
    return rule
