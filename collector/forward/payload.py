"""AlertNotification <-> the JSON stored in an outbox row.

msgspec does both directions from the dataclass's own type hints, so a field added to
``AlertNotification`` is stored without touching this module.
"""

from __future__ import annotations

from typing import Any

import msgspec

from campuswatch.collector.signals import AlertNotification


class PayloadError(ValueError):
    """A stored payload no longer decodes (hand-edited row, or an incompatible old version)."""


def notification_to_json(n: AlertNotification) -> dict[str, Any]:
    document = msgspec.to_builtins(n)
    assert isinstance(document, dict)
    return document


def notification_from_json(document: object) -> AlertNotification:
    try:
        return msgspec.convert(document, AlertNotification)
    except msgspec.ValidationError as exc:
        raise PayloadError(f"stored notification is invalid: {exc}") from exc
