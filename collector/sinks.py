"""The collector's batch sinks: register (and liveness). Rules/alerts sinks live with them."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from datetime import datetime

from sqlalchemy.orm import Session

from campuswatch.collector.ingest import BatchContext
from campuswatch.collector.liveness import LivenessChange, LivenessTracker
from campuswatch.collector.register.assets import apply_message, apply_routine_batch
from campuswatch.collector.register.device_state import mark_online, online_states
from campuswatch.wire.codec import DecodedMessage
from campuswatch.wire.messages import HelloMessage, InventoryMessage, StateMessage, TelemetryMessage

log = logging.getLogger(__name__)


class RegisterSink:
    """Keeps devices and the asset register true; one savepoint per message so a message
    the register cannot apply is counted and logged without undoing its neighbours."""

    name = "register"

    def __init__(self, liveness: LivenessTracker) -> None:
        self.liveness = liveness
        self.errors: Counter[str] = Counter()
        self.liveness_changes: list[LivenessChange] = []

    def handle(
        self, session: Session, batch: Sequence[DecodedMessage], context: BatchContext
    ) -> None:
        try:
            with session.begin_nested():
                needs_full_path = set(id(d) for d in apply_routine_batch(session, batch))
        except Exception as exc:
            # Fall back to one savepoint per message, so one bad message cannot sink the batch.
            self.errors[type(exc).__name__] += 1
            log.exception("bulk register update failed; applying one by one")
            needs_full_path = {id(d) for d in batch}
        stated: dict[str, tuple[str, str]] = {}
        revived: dict[str, datetime] = {}
        for decoded in batch:
            message = decoded.message
            if id(decoded) in needs_full_path:
                try:
                    with session.begin_nested():
                        context.asset_changes[message.id] = apply_message(session, decoded)
                except Exception as exc:
                    self.errors[type(exc).__name__] += 1
                    log.exception(
                        "register could not apply %s from %s", message.id, message.device_id
                    )
                    continue
            if isinstance(message, StateMessage):
                # The register decides (see liveness.py); the tracker follows after commit.
                stated[message.device_id] = (message.site, message.reason or "state")
                if message.status == "online":  # a will is the broker speaking, not the device
                    self.liveness.heard(message.device_id, message.site, decoded.received_at)
                continue
            device_type = None
            if isinstance(message, HelloMessage | TelemetryMessage | InventoryMessage):
                device_type = message.device_type
            change = self.liveness.observe(
                message.device_id, message.site, device_type, decoded.received_at
            )
            if change is not None:
                self._remember(change)
                if change.online:
                    revived[change.device_id] = change.at
        # Traffic from a device the tracker had marked offline: the register follows.
        mark_online(session, revived)
        if stated:
            verdicts = online_states(session, stated)
            context.after_commit.append(lambda: self._follow(verdicts, stated))

    def _follow(
        self,
        verdicts: list[tuple[str, bool | None, datetime | None]],
        stated: dict[str, tuple[str, str]],
    ) -> None:
        for device_id, online, changed_at in verdicts:
            site_id, reason = stated[device_id]
            change = self.liveness.follow(device_id, site_id, online, changed_at, reason)
            if change is not None:
                self._remember(change)

    def _remember(self, change: LivenessChange) -> None:
        self.liveness_changes.append(change)
        del self.liveness_changes[:-1000]
