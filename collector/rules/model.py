"""The rule format: one YAML file per rule, decoded into these types.

The types are the single source of the format: the loader converts YAML into them field
by field (so every problem is reported, not only the first), and the published JSON Schema
(docs/schemas/rule.schema.json) is generated from them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Final, Literal

import msgspec
from msgspec import UNSET, Meta, UnsetType

from campuswatch.wire.messages import KIND_TYPES, DeviceType

DURATION_PATTERN: Final = r"^([0-9]+(\.[0-9]+)?(ms|s|m|h|d|w))+$"
_DURATION_PART = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ms|s|m|h|d|w)")
_UNIT_SECONDS: Final = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
UUID_PATTERN: Final = (
    r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
)
WIRE_KINDS: Final = tuple(kind for kind in KIND_TYPES if kind != "cmd")
LANGUAGES: Final = ("vi", "en")
"""Every rule's prose is written in each of these (the UI, reports and SOCs pick one)."""
LOCALISED_FIELDS: Final = ("title", "summary", "description", "runbook")

Duration = Annotated[
    str, Meta(pattern=DURATION_PATTERN, description="e.g. 90s, 10m, 1h30m, 30d", examples=["10m"])
]
WireKind = Annotated[str, Meta(extra_json_schema={"enum": list(WIRE_KINDS)})]
FieldPath = Annotated[
    str,
    Meta(
        min_length=1,
        description="dotted path into the message; `name[*]` means any list element, "
        "a dict field takes any key (`values.co2_ppm`)",
        examples=["products[*].realtime_protection"],
    ),
]
Level = Literal["info", "low", "medium", "high", "critical"]
Language = Literal["vi", "en"]


_LANGUAGES_NOTE: Final = ", in Vietnamese (vi) and English (en)"
_BOTH: Final = {"required": list(LANGUAGES)}
Title = Annotated[
    dict[Language, Annotated[str, Meta(min_length=1, max_length=200)]],
    Meta(description="the alert's name" + _LANGUAGES_NOTE, extra_json_schema=_BOTH),
]
Summary = Annotated[
    dict[Language, Annotated[str, Meta(min_length=1, max_length=500)]],
    Meta(
        description="template: {site_id} {device_id} {entity} {value} {ratio_pct} …"
        + _LANGUAGES_NOTE,
        extra_json_schema=_BOTH,
    ),
]
Description = Annotated[
    dict[Language, Annotated[str, Meta(min_length=1)]],
    Meta(description="why it matters" + _LANGUAGES_NOTE, extra_json_schema=_BOTH),
]
Runbook = Annotated[
    dict[Language, Annotated[str, Meta(min_length=1)]],
    Meta(description="what to do" + _LANGUAGES_NOTE, extra_json_schema=_BOTH),
]
Number = int | float
OPERATORS: Final = (
    "equals",
    "not_equals",
    "in",
    "gt",
    "gte",
    "lt",
    "lte",
    "exists",
    "contains",
    "regex",
    "version_lt",
    "version_gte",
)


class Clause(msgspec.Struct, kw_only=True, omit_defaults=True, forbid_unknown_fields=True):
    """One test on a message: a field with exactly one operator, or a combinator."""

    field: FieldPath | None = None
    any: list[Clause] | None = None
    all: list[Clause] | None = None
    not_: Clause | None = msgspec.field(default=None, name="not")
    equals: Any | UnsetType = UNSET
    not_equals: Any | UnsetType = UNSET
    in_: list[Any] | UnsetType = msgspec.field(default=UNSET, name="in")
    gt: Number | UnsetType = UNSET
    gte: Number | UnsetType = UNSET
    lt: Number | UnsetType = UNSET
    lte: Number | UnsetType = UNSET
    exists: bool | UnsetType = UNSET
    contains: Any | UnsetType = UNSET
    regex: str | UnsetType = UNSET
    version_lt: str | UnsetType = UNSET
    version_gte: str | UnsetType = UNSET

    def operator(self) -> tuple[str, object] | None:
        for name in OPERATORS:
            value = getattr(self, "in_" if name == "in" else name)
            if value is not UNSET:
                return name, value
        return None

    def operators_given(self) -> list[str]:
        return [
            name
            for name in OPERATORS
            if getattr(self, "in_" if name == "in" else name) is not UNSET
        ]


class _Strict(msgspec.Struct, kw_only=True, omit_defaults=True, forbid_unknown_fields=True):
    pass


class MatchCondition(_Strict):
    """Fires while the latest message of ``kind`` from a device matches ``where``."""

    kind: WireKind
    where: list[Clause] = msgspec.field(default_factory=list)
    for_: Duration | None = msgspec.field(default=None, name="for")
    resolve_after: Duration | None = None
    """For one-off events: resolve this long after the last match; mismatches do not resolve."""


class ThresholdCondition(_Strict):
    """An aggregate over a sliding window per subject, with Zabbix-style hysteresis."""

    kind: WireKind
    aggregate: Literal["count", "avg", "max", "min"]
    window: Duration
    field: FieldPath | None = None
    where: list[Clause] = msgspec.field(default_factory=list)
    above: Number | None = None
    at_least: Number | None = None
    below: Number | None = None
    at_most: Number | None = None
    clear_below: Number | None = None
    clear_above: Number | None = None
    for_: Duration | None = msgspec.field(default=None, name="for")


class AbsenceCondition(_Strict):
    """No message (of ``kind``, or of any kind) from a subject for ``for``; checked on ticks."""

    for_: Duration = msgspec.field(name="for")
    kind: WireKind | None = None
    ignore_when_offline: bool = False
    """Skip devices whose latest state message says offline (switched off on purpose)."""


class ChangeCondition(_Strict):
    """A field changed between consecutive messages of one device."""

    kind: WireKind
    field: FieldPath
    from_: Any | UnsetType = msgspec.field(default=UNSET, name="from")
    to: Any | UnsetType = UNSET
    direction: Literal["any", "increase", "decrease"] = "any"
    compare: Literal["value", "version"] = "value"
    within: Duration | None = None
    resolve_after: Duration | None = None


class NewEntityCondition(_Strict):
    """Something on a school network that the asset register does not know."""

    entity: Literal["discovered_host", "device"]
    resolve_after: Duration | None = None


class RatioCondition(_Strict):
    """Per site: the share (%) of devices whose latest ``kind`` message matches ``where``."""

    kind: WireKind
    where: list[Clause]
    above: Number | None = None
    at_least: Number | None = None
    below: Number | None = None
    at_most: Number | None = None
    clear_below: Number | None = None
    clear_above: Number | None = None
    max_age: Duration | None = None
    min_devices: Annotated[int, Meta(ge=1)] = 1
    for_: Duration | None = msgspec.field(default=None, name="for")


class Condition(_Strict):
    """Exactly one of the condition kinds."""

    match: MatchCondition | None = None
    threshold: ThresholdCondition | None = None
    absence: AbsenceCondition | None = None
    change: ChangeCondition | None = None
    new_entity: NewEntityCondition | None = None
    ratio: RatioCondition | None = None

    def chosen(self) -> tuple[str, _Strict] | None:
        given = self.kinds_given()
        if len(given) != 1:
            return None
        value = getattr(self, given[0])
        assert isinstance(value, _Strict)
        return given[0], value

    def kinds_given(self) -> list[str]:
        return [name for name in CONDITION_KINDS if getattr(self, name) is not None]


CONDITION_KINDS: Final = ("match", "threshold", "absence", "change", "new_entity", "ratio")


class Rule(_Strict):
    """One security rule (pySigma-like metadata + a CampusWatch condition)."""

    id: Annotated[str, Meta(pattern=UUID_PATTERN, description="UUID, stable for the rule's life")]
    title: Title
    level: Level
    status: Literal["stable", "test", "experimental"]
    subject: Literal["device", "site"]
    condition: Condition
    summary: Summary
    runbook: Runbook
    description: Description
    tags: list[Annotated[str, Meta(pattern=r"^[a-z0-9_]+(\.[a-z0-9_-]+)+$")]] = msgspec.field(
        default_factory=list
    )
    falsepositives: list[str] = msgspec.field(default_factory=list)
    device_types: list[DeviceType] = msgspec.field(default_factory=list)
    labels: dict[str, str] = msgspec.field(default_factory=dict)
    facts: dict[
        Annotated[str, Meta(pattern=r"^[a-z][a-z0-9_]{0,31}$")],
        FieldPath,
    ] = msgspec.field(default_factory=dict)
    """match and change rules: name → field path of the message; each fact becomes a
    placeholder, a label and part of the evidence (what the SOC needs to act on)."""
    references: list[str] = msgspec.field(default_factory=list)
    author: str = ""

    def text(self, name: str, language: str) -> str:
        """One of the localised fields (``title``, ``summary``, …) in ``language``."""
        texts: dict[str, str] = getattr(self, name)
        return texts.get(language) or texts.get("en") or ""

    def condition_kind(self) -> str:
        chosen = self.condition.chosen()
        assert chosen is not None, "validated rules have exactly one condition"
        return chosen[0]

    def state_key(self) -> bytes:
        """What decides whether runtime state survives a reload: the logic, not the prose."""
        return msgspec.json.encode([self.subject, self.device_types, self.condition])


def rule_json_schema() -> dict[str, Any]:
    schema = msgspec.json.schema(Rule)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = "https://campuswatch.example/schemas/rule.schema.json"
    schema["title"] = "CampusWatch security rule"
    return schema


def parse_duration(text: object, *, allow_zero: bool = False) -> float | None:
    """``"1h30m"`` → 5400.0; ``None`` for anything that is not a positive duration."""
    if not isinstance(text, str) or not re.fullmatch(DURATION_PATTERN, text):
        return None
    seconds = sum(
        float(number) * _UNIT_SECONDS[unit] for number, unit in _DURATION_PART.findall(text)
    )
    return seconds if seconds > 0 or allow_zero else None


def version_key(text: object) -> tuple[tuple[int, int, str], ...]:
    """Sortable key for version strings: numeric parts compare as numbers (10 > 9).

    ``1.2.10`` > ``1.2.9``; ``10.0.19045`` > ``10.0.17763``; text parts (``rc1``) sort
    below a release with more numeric parts only as far as plain tuple order goes — good
    enough for the vendor firmware strings we compare, and never an exception.
    """
    text = str(text)
    # Vendors prefix versions ("V5.7.10", "ClamAV 1.0.7", "build 19045"): compare from the
    # first number, or a "V" would sort every prefixed version below every plain one.
    first_digit = re.search(r"[0-9]", text)
    if first_digit is not None:
        text = text[first_digit.start() :]
    parts = re.findall(r"[0-9]+|[A-Za-z]+", text)
    return tuple((1, int(part), "") if part.isdigit() else (0, 0, part.lower()) for part in parts)


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong in a rule pack, located for a person to fix."""

    file: str
    line: int
    code: str
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.code}: {self.message}"


class RulePackError(Exception):
    """A pack with problems; nothing of it is loaded."""

    def __init__(self, problems: list[Problem]) -> None:
        super().__init__(
            f"{len(problems)} problem(s) in the rule pack:\n" + "\n".join(map(str, problems))
        )
        self.problems = problems


@dataclass(frozen=True, slots=True)
class LoadedRule:
    rule: Rule
    path: Path
    test_path: Path | None


@dataclass(frozen=True, slots=True)
class RulePack:
    """A validated set of rules, every id unique."""

    rules: tuple[LoadedRule, ...] = ()
    source: Path | None = None
    by_id: dict[str, LoadedRule] = field(default_factory=dict, compare=False)

    @classmethod
    def of(cls, rules: list[LoadedRule], source: Path | None = None) -> RulePack:
        return cls(tuple(rules), source, {loaded.rule.id: loaded for loaded in rules})

    def __len__(self) -> int:
        return len(self.rules)


def rule_schema_text() -> str:
    """The published schema file's exact text (a test compares it with docs/schemas/)."""
    import json

    return json.dumps(rule_json_schema(), indent=2, ensure_ascii=False) + "\n"
