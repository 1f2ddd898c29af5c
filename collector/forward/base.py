"""The small contract every SOC destination implements, and its two failure kinds.

A destination only renders and sends; the ``Forwarder`` (the runner) owns batching,
rate limits, retries, back-off and dead letters, so each destination stays a thin adapter.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from campuswatch.collector.signals import AlertNotification


class DestinationError(Exception):
    """Base of the errors a destination raises."""


class DestinationUnavailable(DestinationError):
    """Transient: refused, reset, timed out, 5xx/429, broker away, bad credentials or TLS set-up.
    The runner retries the same items later with back-off; nothing is dropped."""


class DestinationRejected(DestinationError):
    """Permanent: the receiver refused the content itself (e.g. HTTP 400/413/422). Retrying the
    same bytes cannot help; the runner splits a batch to find the culprit and dead-letters it."""


@dataclass(frozen=True, slots=True)
class OutboxItem:
    """One notification on its way to one destination."""

    id: int
    destination: str
    notification: AlertNotification
    attempts: int
    created_at: datetime


class Destination(Protocol):
    def send(self, batch: Sequence[OutboxItem]) -> None:
        """Deliver all of ``batch``, or raise DestinationUnavailable / DestinationRejected."""
        ...

    def close(self) -> None: ...
