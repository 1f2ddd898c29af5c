"""Alert text templates (``summary``, ``labels``): written for people, checked like code.

Templates are ``str.format`` text with three additions, so a summary reads well whatever
the message held:

* numbers print for people: a float shows at most two decimals (``677.67``, not
  ``677.6662070002778``); ``{value:hours}`` / ``{value:seconds}`` print a duration
  (``28 days``, ``75 minutes``; ``1 hour``, never ``1 hours``; Vietnamese ``28 ngày`` —
  Vietnamese nouns have no plural, and it writes ``2,5``); any standard format spec
  (``{value:.0f}``) still works;
* a list prints as ``a, b``; a missing or empty value prints as nothing, never ``None``;
* a part in square brackets is left out when a placeholder inside it is empty:
  ``"Unknown device {mac}[ ({vendor})]"`` → ``Unknown device aa:…`` when the vendor is
  unknown, rather than ``Unknown device aa:… ()``. Brackets do not nest.
"""

from __future__ import annotations

import math
import re
import string
from collections.abc import Iterable, Mapping
from typing import Any, Final

DURATION_SPECS: Final = {"hours": 3600.0, "seconds": 1.0}
# unit → (English singular, English plural, Vietnamese)
_UNITS: Final = {
    "second": ("second", "seconds", "giây"),
    "minute": ("minute", "minutes", "phút"),
    "hour": ("hour", "hours", "giờ"),
    "day": ("day", "days", "ngày"),
}
_OPTIONAL = re.compile(r"\[([^\[\]]*)\]")


def human_number(value: float, language: str = "en") -> str:
    """At most two decimals, trailing zeros dropped: 677.6662 → 677.67, 2.50 → 2.5 (vi 2,5)."""
    if not math.isfinite(value):
        return str(value)
    text = f"{value:.2f}".rstrip("0").rstrip(".")
    if text == "-0":
        text = "0"  # -0.001 rounds to nothing: a sign on zero only puzzles the reader
    return text.replace(".", ",") if language == "vi" else text


def human_duration(seconds: float, language: str = "en") -> str:
    """A duration as a person says it: 45 seconds, 12 minutes, 1 hour, 3.5 days, 28 days."""
    if not math.isfinite(seconds):
        return str(seconds)
    if abs(seconds) < 120:
        return _unit(seconds, "second", 0, language)
    if abs(seconds) < 2 * 3600:
        return _unit(seconds / 60, "minute", 0, language)
    if abs(seconds) < 48 * 3600:
        return _unit(seconds / 3600, "hour", 1 if abs(seconds) < 10 * 3600 else 0, language)
    days = seconds / 86400
    return _unit(days, "day", 1 if abs(days) < 10 else 0, language)


def _unit(amount: float, name: str, decimals: int, language: str) -> str:
    text = f"{amount:.{decimals}f}"
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    if text == "-0":
        text = "0"
    singular, plural, vietnamese = _UNITS[name]
    if language == "vi":
        return f"{text.replace('.', ',')} {vietnamese}"
    return f"{text} {singular if text in ('1', '-1') else plural}"


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def is_empty(value: object) -> bool:
    return value is None or value == "" or (isinstance(value, list | tuple) and not value)


class _PeopleFormatter(string.Formatter):
    def __init__(self, language: str) -> None:
        self.language = language

    def get_value(self, key: int | str, args: Any, kwargs: Mapping[str, Any]) -> Any:
        return kwargs.get(str(key))

    def format_field(self, value: Any, format_spec: str) -> str:
        if is_empty(value):
            return ""
        if isinstance(value, list | tuple):
            return ", ".join(self.format_field(item, format_spec) for item in value)
        if format_spec in DURATION_SPECS:
            if _is_number(value):
                seconds = float(value) * DURATION_SPECS[format_spec]
                return human_duration(seconds, self.language)
            return str(value)
        if not format_spec:
            return human_number(value, self.language) if isinstance(value, float) else str(value)
        try:
            return format(value, format_spec)
        except (ValueError, TypeError):
            # A spec that does not fit this value (``.1f`` on text): show the value plainly
            # rather than lose the alert's text.
            return str(value)


_FORMATTERS: Final = {language: _PeopleFormatter(language) for language in ("vi", "en")}


def _names(template: str) -> list[tuple[str, str]]:
    """(placeholder, format spec) pairs; ``ValueError`` for text ``str.format`` refuses."""
    return [
        (name, spec or "")
        for _, name, spec, _ in string.Formatter().parse(template)
        if name is not None
    ]


def render(template: str, values: Mapping[str, Any], language: str = "en") -> str:
    """The template filled in for a reader of ``language`` (numbers and units in its way);
    optional ``[…]`` parts with an empty placeholder left out."""

    def optional(found: re.Match[str]) -> str:
        part = found.group(1)
        try:
            names = _names(part)
        except ValueError:
            return found.group(0)
        if any(is_empty(values.get(name)) for name, _ in names):
            return ""
        return _format(part, values, language)

    return _format(_OPTIONAL.sub(optional, template), values, language)


def _format(template: str, values: Mapping[str, Any], language: str) -> str:
    formatter = _FORMATTERS.get(language, _FORMATTERS["en"])
    try:
        return formatter.vformat(template, (), values)
    except (ValueError, IndexError, KeyError, AttributeError, TypeError):
        return template  # checked at load time; never lose an alert over its prose


def template_problems(template: str, allowed: Iterable[str]) -> list[str]:
    """Everything wrong with one template, for ``rules check``."""
    known = set(allowed)
    problems: list[str] = []
    without_optional = _OPTIONAL.sub(lambda found: found.group(1), template)
    if "[" in without_optional or "]" in without_optional:
        problems.append(f"{template!r}: unbalanced or nested [ ] (optional parts do not nest)")
    try:
        names = _names(template)
    except ValueError as exc:
        return [*problems, f"{template!r}: {exc}"]
    for name, spec in names:
        if name not in known:
            shown = ", ".join(sorted(known))
            problems.append(f"unknown placeholder {{{name}}} (known: {shown})")
        if spec and spec not in DURATION_SPECS:
            try:
                format(1.5, spec)
            except ValueError:
                problems.append(
                    f"{{{name}:{spec}}}: unknown format (use hours, seconds or a number format)"
                )
    return problems
