"""The collector's batch sinks: register (and liveness). Rules/alerts sinks live with them."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence

from sqlalchemy.orm import Session

from campuswatch.collector.ingest import BatchContext
from campuswatch.collector.liveness import LivenessChange, LivenessTracker
from campuswatch.collector.register.assets import apply_message, apply_routine_batch
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
            device_type = None
            if isinstance(message, HelloMessage | TelemetryMessage | InventoryMessage):
                device_type = message.device_type
            if isinstance(message, StateMessage):
                change = self.liveness.observe(
                    message.device_id,
                    message.site,
                    device_type,
                    message.ts,
                    state=message.status == "online",
                    reason=message.reason or "state",
                )
            else:
                change = self.liveness.observe(
                    message.device_id, message.site, device_type, decoded.received_at
                )
            if change is not None:
                self.liveness_changes.append(change)
                del self.liveness_changes[:-1000]
