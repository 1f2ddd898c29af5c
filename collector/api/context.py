"""What the API needs from the running collector, narrowed so tests can build it alone."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from prometheus_client.registry import CollectorRegistry
from sqlalchemy.orm import Session, sessionmaker

from campuswatch.collector.api.rejects import RejectCounter
from campuswatch.collector.liveness import LivenessTracker
from campuswatch.collector.settings import CollectorSettings
from campuswatch.wire.messages import CommandMessage


@dataclass
class ApiContext:
    settings: CollectorSettings
    sessions: sessionmaker[Session]
    liveness: LivenessTracker
    registry: CollectorRegistry | None = None
    send_command: Callable[[CommandMessage], bool] | None = None
    """Publishes a command to a device; False when the broker is unreachable."""
    timeseries: Any = None
    """The embedded SQLite store when it is the configured store (for device charts)."""
    health_checks: dict[str, Callable[[], tuple[bool, str]]] = field(default_factory=dict)
    extras: dict[str, Any] = field(default_factory=dict)
    """Later subsystems (alert manager, rules) hang their handles here."""
    rejects: RejectCounter = field(default_factory=RejectCounter)
    """Requests the API refused (4xx), exported in ``registry`` as
    ``campuswatch_api_rejected_total``."""
