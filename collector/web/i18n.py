"""Vietnamese and English UI text from the gettext catalogues under ``locale/``.

The ``.po`` files are the only source: they are compiled in memory when this module is
imported (Babel's pofile/mofile), so a translator's edit can never be shadowed by a stale
committed ``.mo``.
"""

from __future__ import annotations

import gettext
import io
from collections.abc import Callable, Mapping
from functools import cache
from pathlib import Path
from typing import Final

from babel.messages.catalog import Catalog
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po

LOCALE_DIR: Final = Path(__file__).parent / "locale"
LANGUAGES: Final = ("vi", "en")
DEFAULT_LANGUAGE: Final = "vi"
DOMAIN: Final = "messages"

Gettext = Callable[[str], str]


def catalogue_path(language: str) -> Path:
    return LOCALE_DIR / language / "LC_MESSAGES" / f"{DOMAIN}.po"


def read_catalogue(language: str) -> Catalog:
    with catalogue_path(language).open("rb") as handle:
        return read_po(handle, locale=language, domain=DOMAIN)


@cache
def translations(language: str) -> gettext.GNUTranslations:
    if language not in LANGUAGES:
        raise ValueError(f"unsupported language {language!r}")
    compiled = io.BytesIO()
    write_mo(compiled, read_catalogue(language))
    compiled.seek(0)
    return gettext.GNUTranslations(compiled)


def gettext_for(language: str) -> Gettext:
    return translations(language).gettext


def pick_language(cookie: str | None, accept_language: str | None) -> str:
    """The cookie wins; then the browser's first supported language; then Vietnamese."""
    if cookie in LANGUAGES:
        return cookie
    for part in (accept_language or "").split(","):
        code = part.split(";")[0].strip().lower()[:2]
        if code in LANGUAGES:
            return code
    return DEFAULT_LANGUAGE


def translated_choices(gettext_: Gettext, labels: Mapping[str, str]) -> dict[str, str]:
    """Value → translated label, for enumerations shown in selects and tables."""
    return {value: gettext_(label) for value, label in labels.items()}
