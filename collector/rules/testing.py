"""Rule test cases: input messages on a relative timeline → the alerts a rule must raise.

A test case lives next to its rule as ``<rule>.test.yaml``::

    registered: [{site: s1, key: "aa:bb:cc:dd:ee:01"}]   # what the fake register knows
    steps:
      - at: 0s                                  # relative to a fixed start time
        message: {kind: av, site: s1, device_id: pc-01, status: no_av}
      - at: 20m                                 # no message: just a clock tick
      - at: 21m
        register: {site: s1, key: pc-01}        # a person registers it
    expect:
      - subject: {site: s1, device: pc-01}      # or {site: s1} / {site: s1, entity: "mac:…"}
        statuses: [firing, resolved]

Messages are wire JSON without the envelope's ``v``/``id``/``ts`` (filled in; ``ts_offset``
shifts the device clock) and are validated against wire/messages.py. After every step the
engine gets a tick at that step's time, as the collector's periodic tick would. Every alert
raised must be expected: an extra subject fails the test.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any, Final, Literal

import msgspec
from msgspec import Meta

from campuswatch.collector.rules.engine import RuleEngine, fingerprint
from campuswatch.collector.rules.loader import FileCheck, convert_struct, read_located
from campuswatch.collector.rules.model import (
    Level,
    Problem,
    Rule,
    RulePack,
    parse_duration,
)
from campuswatch.collector.signals import AlertSignal
from campuswatch.wire.codec import DecodedMessage
from campuswatch.wire.messages import KIND_TYPES, Message
from campuswatch.wire.topics import Topic

TEST_START: Final = datetime(2025, 3, 3, 7, 0, tzinfo=UTC)
Offset = Annotated[
    str, Meta(pattern=r"^(0|([0-9]+(\.[0-9]+)?(ms|s|m|h|d|w))+)$", description="e.g. 0s, 90s, 3m")
]


class _Strict(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    pass


class RegisteredKey(_Strict):
    site: str
    key: str


class ExpectedSubject(_Strict):
    site: str
    device: str | None = None
    entity: str | None = None

    @property
    def entity_key(self) -> str | None:
        return self.device or self.entity


class Expectation(_Strict):
    subject: ExpectedSubject
    statuses: list[Literal["firing", "resolved"]]
    level: Level | None = None


class Step(_Strict):
    at: Offset
    message: dict[str, Any] | None = None
    ts_offset: Offset | None = None
    register: RegisteredKey | None = None


class TestCase(_Strict):
    steps: list[Step]
    expect: list[Expectation]
    description: str = ""
    registered: list[RegisteredKey] = msgspec.field(default_factory=list)


@dataclass(slots=True)
class TestResult:
    rule_id: str
    title: str
    file: str
    passed: bool
    details: list[str] = field(default_factory=list)


def _seconds(text: str | None) -> float:
    if not text or text == "0":
        return 0.0
    return parse_duration(text, allow_zero=True) or 0.0


def build_message(data: dict[str, Any], ts: datetime, sequence: int) -> Message:
    """A wire message from a test step's dict; ``msgspec.ValidationError`` if it is not one."""
    kind = data.get("kind")
    if kind not in KIND_TYPES:
        raise msgspec.ValidationError(f"unknown message kind {kind!r}")
    body = {"v": 1, "id": str(uuid.UUID(int=sequence)), "ts": ts, **data}
    return msgspec.convert(body, KIND_TYPES[str(kind)], strict=False)


def load_test_case(path: Path, display: str) -> tuple[TestCase | None, list[Problem]]:
    document, problems = read_located(path, display)
    if document is None:
        return None, problems
    check = FileCheck(path, display, document)
    case = convert_struct(TestCase, document.data, (), check)
    if not isinstance(case, TestCase):
        return None, problems + check.problems
    previous = 0.0
    for index, step in enumerate(case.steps):
        at = _seconds(step.at)
        if at < previous:
            check.add(("steps", index, "at"), "bad-test", f"step at {step.at} goes back in time")
        previous = max(previous, at)
        if step.message is not None:
            try:
                build_message(step.message, TEST_START, index + 1)
            except msgspec.ValidationError as exc:
                check.add(("steps", index, "message"), "bad-test", f"not a wire message: {exc}")
    if not case.expect and not case.steps:
        check.add((), "bad-test", "a test case needs steps and expectations")
    problems = problems + check.problems
    return (case if not problems else None), problems


def check_test_case(path: Path, display: str, rule: Rule) -> list[Problem]:
    _, problems = load_test_case(path, display)
    return problems


def run_test_case(rule: Rule, case: TestCase) -> tuple[bool, list[str]]:
    """Run one case through a fresh engine holding only ``rule``; (passed, what differed)."""
    return compare(rule, case.expect, replay_test_case(rule, case))


def replay_test_case(rule: Rule, case: TestCase) -> list[AlertSignal]:
    """Every signal ``rule`` raises over the case's steps, in a fresh engine."""
    from campuswatch.collector.rules.loader import rule_pack_from_rules

    registered = {(item.site, item.key) for item in case.registered}
    now = [TEST_START]
    engine = RuleEngine(
        rule_pack_from_rules([rule]),
        is_registered=lambda site, key: (site, key) in registered,
        clock=lambda: now[0],
    )
    signals: list[AlertSignal] = []
    for index, step in enumerate(case.steps):
        at = TEST_START + timedelta(seconds=_seconds(step.at))
        now[0] = at
        if step.register is not None:
            registered.add((step.register.site, step.register.key))
        if step.message is not None:
            ts = at + timedelta(seconds=_seconds(step.ts_offset))
            message = build_message(step.message, ts, index + 1)
            topic = Topic(message.site, message.device_id, str(step.message["kind"]))
            signals.extend(engine.process(DecodedMessage(topic, message, at, 0.0)))
        signals.extend(engine.evaluate_tick(at))
    return signals


def compare(
    rule: Rule, expected: list[Expectation], signals: list[AlertSignal]
) -> tuple[bool, list[str]]:
    actual: dict[str, list[AlertSignal]] = {}
    for signal in signals:
        actual.setdefault(signal.fingerprint, []).append(signal)
    details: list[str] = []
    for expectation in expected:
        subject = expectation.subject
        key = fingerprint(rule.id, subject.site, subject.entity_key)
        got = actual.pop(key, [])
        statuses = [signal.status for signal in got]
        name = f"{subject.site}/{subject.entity_key or '-'}"
        if statuses != expectation.statuses:
            details.append(f"{name}: expected {expectation.statuses}, got {statuses}")
        if expectation.level and any(signal.level != expectation.level for signal in got):
            details.append(f"{name}: expected level {expectation.level}")
    for got in actual.values():
        first = got[0]
        entity = first.labels.get("entity") or "-"
        statuses = [signal.status for signal in got]
        details.append(f"{first.site_id}/{entity}: unexpected alerts {statuses}")
    return not details, details


def run_pack_tests(pack: RulePack, root: Path | None = None) -> list[TestResult]:
    results: list[TestResult] = []
    for loaded in pack.rules:
        rule = loaded.rule
        shown = str(loaded.path.relative_to(root.parent)) if root else str(loaded.path)
        title = rule.text("title", "en")
        if loaded.test_path is None:
            results.append(TestResult(rule.id, title, shown, False, ["no test case"]))
            continue
        case, problems = load_test_case(loaded.test_path, str(loaded.test_path))
        if case is None:
            results.append(TestResult(rule.id, title, shown, False, list(map(str, problems))))
            continue
        try:
            passed, details = run_test_case(rule, case)
        except Exception as exc:  # one broken rule fails its own test, not the whole run
            passed, details = False, [f"the engine raised {type(exc).__name__}: {exc}"]
        results.append(TestResult(rule.id, title, shown, passed, details))
    return results
