"""Scenario files: a timeline of things that happen to selected devices.

```yaml
name: uplink outage
start: 2025-03-04T09:55:00+07:00     # optional simulated start (default: now)
timeline:
  - at: 2m                           # simulated time after start
    action: uplink_down
    select: {school: 2}
    for: 5m                          # optional: undone after this long
```

The validator reads the YAML node tree (not plain data) so every problem is reported with
its file and line, and it collects all problems before failing, like a compiler.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Final

import yaml

from campuswatch.firmware_sim.device import SimDevice

ACTION_PARAMETERS: Final[dict[str, frozenset[str]]] = {
    "power_cut": frozenset(),
    "uplink_down": frozenset(),
    "uplink_up": frozenset(),
    "firmware_rollout": frozenset({"to_version", "spread"}),
    "device_stolen": frozenset(),
    "rogue_device": frozenset({"mac", "ip", "vendor", "hostname"}),
    "cloned_pcs": frozenset(),
    "malware_detected": frozenset({"threat", "threats"}),
    "sensor_stuck": frozenset({"metric", "value"}),
    "av_signatures_stale": frozenset(),
    "av_realtime_off": frozenset(),
}
REQUIRED_PARAMETERS: Final[dict[str, frozenset[str]]] = {
    "firmware_rollout": frozenset({"to_version"}),
}
UNDOABLE: Final = frozenset({"power_cut", "uplink_down", "sensor_stuck", "av_realtime_off"})
SELECTOR_KEYS: Final = frozenset(
    {"school", "building", "model", "device_type", "device_id", "count", "percentage"}
)
STEP_KEYS: Final = frozenset({"at", "action", "select", "for", "note"}) | frozenset().union(
    *ACTION_PARAMETERS.values()
)
_DURATION_PART: Final = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_UNITS: Final = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_MAC: Final = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")


ProblemReporter = Callable[[yaml.Node | None, str], None]


class ScenarioError(ValueError):
    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


def parse_duration(text: str) -> float:
    """``90`` (seconds), ``30s``, ``2m``, ``1h30m``, ``1.5d`` → seconds."""
    text = text.strip()
    if re.fullmatch(r"\d+(?:\.\d+)?", text):
        return float(text)
    position, total = 0, 0.0
    for match in _DURATION_PART.finditer(text):
        if match.start() != position:
            break
        total += float(match.group(1)) * _UNITS[match.group(2)]
        position = match.end()
    if position != len(text) or not text:
        raise ValueError(f"{text!r} is not a duration (use e.g. 30s, 2m, 1h30m, 2d)")
    return total


@dataclass(frozen=True, slots=True)
class Selector:
    school: str | int | None = None
    building: str | None = None
    model: str | None = None
    device_type: str | None = None
    device_id: str | None = None
    count: int | None = None
    percentage: float | None = None

    def matches(self, device: SimDevice) -> bool:
        if isinstance(self.school, int) and device.school != self.school:
            return False
        if isinstance(self.school, str) and device.site != self.school:
            return False
        return (
            (self.building is None or device.building == self.building)
            and (self.model is None or self.model in (device.model_name, type(device).__name__))
            and (self.device_type is None or device.device_type == self.device_type)
            and (self.device_id is None or device.device_id == self.device_id)
        )

    def choose(self, devices: list[SimDevice], rng: random.Random) -> list[SimDevice]:
        """The matching devices, cut to ``count`` / ``percentage`` by a seeded draw."""
        matching = sorted((d for d in devices if self.matches(d)), key=lambda d: d.index)
        wanted = len(matching)
        if self.percentage is not None:
            wanted = min(wanted, max(1, round(len(matching) * self.percentage / 100)))
        if self.count is not None:
            wanted = min(wanted, self.count)
        if wanted >= len(matching):
            return matching
        return sorted(rng.sample(matching, wanted), key=lambda d: d.index)


@dataclass(frozen=True, slots=True)
class Step:
    at_s: float
    action: str
    select: Selector
    line: int
    for_s: float | None = None
    parameters: dict[str, str | float] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Scenario:
    name: str
    source: str
    steps: tuple[Step, ...]
    description: str = ""
    start: datetime | None = None


def load_scenario(path: Path | str) -> Scenario:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ScenarioError([f"{path}: cannot read: {exc.strerror or exc}"]) from None
    return parse_scenario(text, str(path))


def parse_scenario(text: str, source: str = "<scenario>") -> Scenario:
    problems: list[str] = []

    def problem(node: yaml.Node | None, message: str) -> None:
        line = node.start_mark.line + 1 if node is not None else 1
        problems.append(f"{source}:{line}: {message}")

    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else 1
        detail = getattr(exc, "problem", None) or str(exc)
        raise ScenarioError([f"{source}:{line}: not valid YAML: {detail}"]) from None
    if not isinstance(root, yaml.MappingNode):
        raise ScenarioError([f"{source}:1: a scenario is a mapping with 'name' and 'timeline'"])
    top = _mapping(root, problem)
    for key, (key_node, _) in top.items():
        if key not in ("name", "description", "start", "timeline"):
            problem(key_node, f"unknown key {key!r} (expected name, description, start, timeline)")
    name = _text(top.get("name"), problem, "name") or ""
    if "name" not in top:
        problem(root, "missing 'name'")
    description = _text(top.get("description"), problem, "description") or ""
    start: datetime | None = None
    if "start" in top:
        start_node = top["start"][1]
        try:
            start = datetime.fromisoformat(str(getattr(start_node, "value", "")))
        except ValueError:
            problem(
                start_node,
                "start must be an ISO 8601 time with a zone, e.g. 2025-03-04T09:55:00+07:00",
            )
        else:
            if start.tzinfo is None:
                problem(start_node, "start needs a zone offset, e.g. +07:00")
                start = None
    steps: list[Step] = []
    if "timeline" not in top:
        problem(root, "missing 'timeline'")
    else:
        timeline = top["timeline"][1]
        if not isinstance(timeline, yaml.SequenceNode) or not timeline.value:
            problem(timeline, "timeline must be a non-empty list of steps")
        else:
            for step_node in timeline.value:
                step = _step(step_node, problem)
                if step is not None:
                    steps.append(step)
    if problems:
        raise ScenarioError(problems)
    steps.sort(key=lambda step: (step.at_s, step.line))
    return Scenario(name, source, tuple(steps), description, start)


def _mapping(
    node: yaml.MappingNode, problem: ProblemReporter
) -> dict[str, tuple[yaml.Node, yaml.Node]]:
    found: dict[str, tuple[yaml.Node, yaml.Node]] = {}
    for key_node, value_node in node.value:
        key = str(key_node.value)
        if key in found:
            problem(key_node, f"{key!r} given twice")
        found[key] = (key_node, value_node)
    return found


def _text(
    entry: tuple[yaml.Node, yaml.Node] | None, problem: ProblemReporter, what: str
) -> str | None:
    if entry is None:
        return None
    node = entry[1]
    if not isinstance(node, yaml.ScalarNode):
        problem(node, f"{what} must be a single value")
        return None
    return str(node.value)


def _number(
    node: yaml.Node, problem: ProblemReporter, what: str, *, integer: bool = False
) -> float | None:
    text = str(getattr(node, "value", ""))
    try:
        value = int(text) if integer else float(text)
    except ValueError:
        kind = "a whole number" if integer else "a number"
        problem(node, f"{what} must be {kind}, not {text!r}")
        return None
    return float(value)


def _step(node: yaml.Node, problem: ProblemReporter) -> Step | None:
    if not isinstance(node, yaml.MappingNode):
        problem(node, "each timeline step is a mapping with 'at' and 'action'")
        return None
    line = node.start_mark.line + 1
    entries = _mapping(node, problem)
    ok = True
    for key, (key_node, _) in entries.items():
        if key not in STEP_KEYS:
            problem(key_node, f"unknown key {key!r} in step")
            ok = False
    at_s: float | None = None
    if "at" not in entries:
        problem(node, "step has no 'at' (simulated time, e.g. 2m)")
        ok = False
    else:
        at_s = _duration(entries["at"][1], problem, "at")
        ok = ok and at_s is not None
    action = _text(entries.get("action"), problem, "action")
    if action is None:
        if "action" not in entries:
            problem(node, "step has no 'action'")
        return None
    if action not in ACTION_PARAMETERS:
        known = ", ".join(sorted(ACTION_PARAMETERS))
        problem(entries["action"][1], f"unknown action {action!r} (one of: {known})")
        return None
    parameters: dict[str, str | float] = {}
    for key, (key_node, value_node) in entries.items():
        if key in STEP_KEYS - {"at", "action", "select", "for", "note"}:
            if key not in ACTION_PARAMETERS[action]:
                problem(key_node, f"{action} takes no {key!r}")
                ok = False
                continue
            value = _parameter(key, value_node, problem)
            if value is None:
                ok = False
            else:
                parameters[key] = value
    for required in sorted(REQUIRED_PARAMETERS.get(action, frozenset()) - parameters.keys()):
        if required not in entries:
            problem(node, f"{action} needs {required!r}")
            ok = False
    for_s: float | None = None
    if "for" in entries:
        if action not in UNDOABLE:
            problem(entries["for"][0], f"{action} cannot be undone with 'for'")
            ok = False
        else:
            for_s = _duration(entries["for"][1], problem, "for")
            ok = ok and for_s is not None
    selector = _selector(entries.get("select"), problem)
    if selector is None or not ok or at_s is None:
        return None
    return Step(at_s, action, selector, line, for_s, parameters)


def _duration(node: yaml.Node, problem: ProblemReporter, what: str) -> float | None:
    try:
        return parse_duration(str(getattr(node, "value", "")))
    except ValueError as exc:
        problem(node, f"{what}: {exc}")
        return None


def _parameter(key: str, node: yaml.Node, problem: ProblemReporter) -> str | float | None:
    if not isinstance(node, yaml.ScalarNode):
        problem(node, f"{key} must be a single value")
        return None
    if key in ("value", "threats"):
        return _number(node, problem, key, integer=key == "threats")
    if key == "spread":
        return _duration(node, problem, key)
    text = str(node.value)
    if key == "mac" and not _MAC.fullmatch(text):
        problem(node, f"mac {text!r} must look like 02:00:5e:10:00:01 (lower case)")
        return None
    return text


def _selector(
    entry: tuple[yaml.Node, yaml.Node] | None, problem: ProblemReporter
) -> Selector | None:
    if entry is None:
        return Selector()
    node = entry[1]
    if not isinstance(node, yaml.MappingNode):
        problem(node, "select must be a mapping, e.g. {school: 1, device_type: pc, count: 3}")
        return None
    values: dict[str, object] = {}
    ok = True
    for key, (key_node, value_node) in _mapping(node, problem).items():
        if key not in SELECTOR_KEYS:
            known = ", ".join(sorted(SELECTOR_KEYS))
            problem(key_node, f"unknown selector {key!r} (one of: {known})")
            ok = False
            continue
        text = str(getattr(value_node, "value", ""))
        if key == "count":
            number = _number(value_node, problem, key, integer=True)
            if number is not None and number < 1:
                problem(value_node, "count must be at least 1")
                number = None
            ok = ok and number is not None
            values[key] = int(number) if number is not None else None
        elif key == "percentage":
            number = _number(value_node, problem, key)
            if number is not None and not 0 < number <= 100:
                problem(value_node, "percentage must be in (0, 100]")
                number = None
            ok = ok and number is not None
            values[key] = number
        elif key == "school":
            values[key] = int(text) if text.isdigit() else text
        else:
            values[key] = text
    if not ok:
        return None
    return Selector(**values)  # type: ignore[arg-type]
