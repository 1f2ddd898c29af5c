"""What the UI asks to translate (extracted from the code) and checks on rendered text."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from pathlib import Path

from babel.messages.extract import extract_from_dir

from campuswatch.collector.web import i18n

WEB_DIR = Path(i18n.__file__).parent
KEYWORDS = {"_": None, "N_": None, "gettext": None}


def extracted_msgids() -> set[str]:
    """Every msgid the templates and Python modules of the UI use."""
    method_map = [("**.py", "python"), ("templates/**.html", "jinja2.ext:babel_extract")]
    found: set[str] = set()
    for _filename, _line, message, _comments, _context in extract_from_dir(
        str(WEB_DIR), method_map=method_map, keywords=KEYWORDS
    ):
        if isinstance(message, str) and message:
            found.add(message)
    return found


class _VisibleText(HTMLParser):
    """Text a person reads: text nodes and labelling attributes, minus machine data
    (``pre``, ``code``, ``script``, ``style`` and anything marked ``translate="no"``)."""

    SKIP = frozenset({"pre", "code", "script", "style"})
    VOID = frozenset({"input", "meta", "link", "br", "img", "hr"})
    ATTRIBUTES = ("placeholder", "title", "aria-label", "alt")

    def __init__(self) -> None:
        super().__init__()
        self.parts: list[str] = []
        self._skipping: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if tag not in self.VOID and (
            self._skipping or tag in self.SKIP or values.get("translate") == "no"
        ):
            self._skipping.append(tag)
            return
        if not self._skipping:
            self.parts.extend(v for k, v in attrs if k in self.ATTRIBUTES and v)

    def handle_endtag(self, tag: str) -> None:
        if self._skipping and self._skipping[-1] == tag:
            self._skipping.pop()

    def handle_data(self, data: str) -> None:
        if not self._skipping:
            self.parts.append(data)


def visible_text(html: str) -> str:
    parser = _VisibleText()
    parser.feed(html)
    return " ".join(" ".join(parser.parts).split())


def untranslated_left(text: str, language: str = "vi") -> list[str]:
    """msgids whose translation differs but whose English still shows in ``text``.

    Strings with placeholders are checked by their literal pieces (longest piece ≥ 4 chars).
    """
    catalogue = i18n.read_catalogue(language)
    left: list[str] = []
    for message in catalogue:
        if not message.id or not isinstance(message.id, str):
            continue
        if message.string == message.id:
            continue
        pieces = [p.strip() for p in re.split(r"%\(\w+\)s", message.id)]
        probe = max(pieces, key=len)
        if len(probe) < 2:
            continue
        pattern = r"(?<![\w-])" + re.escape(probe) + r"(?![\w-])"
        if re.search(pattern, text):
            left.append(message.id)
    return left
