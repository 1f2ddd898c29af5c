"""An independent CEF:0 reader for the tests, written from the format description and not
from the renderer: a character scanner for the header, and for the extension the rule SIEM
connectors use (a key is the alphanumeric word before an unescaped ``=``; its value runs to
the space before the next key).
"""

from __future__ import annotations

from dataclasses import dataclass

HEADER_NAMES = ("version", "vendor", "product", "product_version", "signature", "name", "severity")


class CefSyntaxError(ValueError):
    pass


@dataclass
class CefEvent:
    header: dict[str, str]
    extension: dict[str, str]

    def custom_strings(self) -> dict[str, str]:
        """``{label: value}`` for every csN that has a csNLabel, as a SIEM shows them."""
        result: dict[str, str] = {}
        for number in range(1, 7):
            label = self.extension.get(f"cs{number}Label")
            if label is not None and f"cs{number}" in self.extension:
                result[label] = self.extension[f"cs{number}"]
        return result


def parse_cef(line: str) -> CefEvent:
    if not line.startswith("CEF:"):
        raise CefSyntaxError(f"not a CEF line: {line[:40]!r}")
    fields: list[str] = []
    current: list[str] = []
    position = len("CEF:")
    while len(fields) < 7:
        if position >= len(line):
            raise CefSyntaxError(f"header has only {len(fields)} fields")
        char = line[position]
        if char == "\\":
            following = line[position + 1 : position + 2]
            if following not in ("\\", "|"):
                raise CefSyntaxError(f"bad header escape at {position}")
            current.append(following)
            position += 2
        elif char == "|":
            fields.append("".join(current))
            current = []
            position += 1
        elif char in "\r\n":
            raise CefSyntaxError("line break inside the header")
        else:
            current.append(char)
            position += 1
    return CefEvent(dict(zip(HEADER_NAMES, fields, strict=True)), _parse_extension(line[position:]))


def _unescaped_equals(text: str) -> list[int]:
    positions: list[int] = []
    index = 0
    while index < len(text):
        if text[index] == "\\":
            index += 2
            continue
        if text[index] == "=":
            positions.append(index)
        index += 1
    return positions


def _parse_extension(text: str) -> dict[str, str]:
    if "\n" in text or "\r" in text:
        raise CefSyntaxError("raw line break in the extension")
    pairs: list[tuple[str, int, int]] = []  # key, key start, value start
    for equals in _unescaped_equals(text):
        start = equals
        while start > 0 and text[start - 1].isascii() and text[start - 1].isalnum():
            start -= 1
        if start == equals or (start > 0 and text[start - 1] != " "):
            raise CefSyntaxError(
                f"unescaped '=' inside a value at {equals}: {text[: equals + 1]!r}"
            )
        pairs.append((text[start:equals], start, equals + 1))
    result: dict[str, str] = {}
    for index, (key, _, value_start) in enumerate(pairs):
        value_end = pairs[index + 1][1] - 1 if index + 1 < len(pairs) else len(text)
        if key in result:
            raise CefSyntaxError(f"key {key} twice")
        result[key] = _unescape_value(text[value_start:value_end])
    return result


def _unescape_value(raw: str) -> str:
    out: list[str] = []
    index = 0
    mapping = {"\\": "\\", "=": "=", "n": "\n", "r": "\r"}
    while index < len(raw):
        char = raw[index]
        if char == "\\":
            following = raw[index + 1 : index + 2]
            if following not in mapping:
                raise CefSyntaxError(f"bad extension escape {raw[index : index + 2]!r}")
            out.append(mapping[following])
            index += 2
        else:
            out.append(char)
            index += 1
    return "".join(out)
