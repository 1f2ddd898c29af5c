"""Idempotency by message id, and the bounded dead-letter table.

Both tables grow with traffic, so each comes with a prune function that the collector
calls periodically; neither function commits, the caller owns the transaction.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from operator import itemgetter
from typing import Final

from sqlalchemy import delete, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from campuswatch.collector.db.bulk import MultiRowInsert
from campuswatch.collector.db.models import DeadLetter, ProcessedMessage, utc_now
from campuswatch.wire.codec import DecodedMessage
from campuswatch.wire.messages import kind_of

MAX_DEAD_LETTER_PAYLOAD: Final = 64 * 1024
MAX_DEAD_LETTER_DETAIL: Final = 4096
DEFAULT_DEAD_LETTER_KEEP: Final = 10_000
# Longer than any agent's store-and-forward backlog can be, so a late redelivery still matches.
DEFAULT_PROCESSED_KEEP_DAYS: Final = 14


def claim_message(session: Session, decoded: DecodedMessage) -> bool:
    """Record the message id; False if it was already processed (a QoS 1 redelivery).

    Two collectors racing on one id both insert; the loser's savepoint fails on the primary
    key and it answers False, so the message is applied exactly once across collectors.
    """
    message = decoded.message
    if session.get(ProcessedMessage, message.id) is not None:
        return False
    try:
        with session.begin_nested():
            session.add(
                ProcessedMessage(
                    message_id=message.id,
                    device_id=message.device_id,
                    kind=kind_of(message),
                    received_at=decoded.received_at,
                )
            )
    except IntegrityError:
        return False
    return True


def is_processed(session: Session, message_id: str) -> bool:
    return session.get(ProcessedMessage, message_id) is not None


def prune_processed(
    session: Session,
    older_than_days: float = DEFAULT_PROCESSED_KEEP_DAYS,
    now: datetime | None = None,
) -> int:
    """Forget ids received more than ``older_than_days`` ago; returns how many were removed."""
    cutoff = (now or utc_now()) - timedelta(days=older_than_days)
    result = session.execute(delete(ProcessedMessage).where(ProcessedMessage.received_at < cutoff))
    return int(getattr(result, "rowcount", 0) or 0)


def add_dead_letter(
    session: Session,
    *,
    topic: str,
    reason: str,
    detail: str,
    payload: bytes | str,
    received_at: datetime | None = None,
) -> DeadLetter:
    """Keep a refused payload for inspection, truncated so one huge message cannot fill the disk."""
    raw = payload.encode("utf-8", errors="replace") if isinstance(payload, str) else payload
    letter = DeadLetter(
        received_at=received_at or utc_now(),
        topic=_storable_text(topic)[:1024],
        reason=_storable_text(reason)[:32],
        detail=_storable_text(detail)[:MAX_DEAD_LETTER_DETAIL],
        payload=raw[:MAX_DEAD_LETTER_PAYLOAD],
        payload_truncated=len(raw) > MAX_DEAD_LETTER_PAYLOAD,
    )
    session.add(letter)
    return letter


def _storable_text(text: str) -> str:
    """``text`` as every register can keep it: PostgreSQL refuses NUL in text columns (and
    a lone surrogate cannot be encoded), which would fail the dead letter's own batch."""
    text = text.replace("\x00", "\\x00")
    return text.encode("utf-8", errors="backslashreplace").decode("utf-8")


def prune_dead_letters(session: Session, keep: int = DEFAULT_DEAD_LETTER_KEEP) -> int:
    """Delete all but the newest ``keep`` rows (by id, which follows arrival order)."""
    if keep < 0:
        raise ValueError("keep must be >= 0")
    session.flush()
    threshold = session.scalar(
        select(DeadLetter.id).order_by(DeadLetter.id.desc()).offset(keep).limit(1)
    )
    if threshold is None:
        return 0
    result = session.execute(delete(DeadLetter).where(DeadLetter.id <= threshold))
    return int(getattr(result, "rowcount", 0) or 0)


def dead_letter_count(session: Session) -> int:
    return int(session.scalar(select(func.count()).select_from(DeadLetter)) or 0)


# One multi-row statement per chunk that still reports which rows it inserted: a duplicate
# (redelivery, or an id another collector claimed first) is simply not returned.
_CLAIM: Final = MultiRowInsert(
    ProcessedMessage,
    ("message_id", "device_id", "kind", "received_at"),
    "ON CONFLICT (message_id) DO NOTHING RETURNING message_id",
)


def claim_messages(session: Session, batch: Sequence[DecodedMessage]) -> list[DecodedMessage]:
    """Bulk ``claim_message``: ``INSERT … ON CONFLICT DO NOTHING RETURNING`` for a batch.

    Returns the messages seen for the first time, in order; a duplicate inside the batch or
    an id another collector claimed first is left out.
    """
    unique: dict[str, DecodedMessage] = {}
    for decoded in batch:
        unique.setdefault(decoded.message.id, decoded)
    if not unique:
        return []
    rows = [
        {
            "message_id": decoded.message.id,
            "device_id": decoded.message.device_id,
            "kind": kind_of(decoded.message),
            "received_at": decoded.received_at,
        }
        # Key order: concurrent claims of the same ids (two collectors) wait, never deadlock.
        for _, decoded in sorted(unique.items(), key=itemgetter(0))
    ]
    claimed = {message_id for (message_id,) in _CLAIM.execute(session.connection(), rows)}
    return [decoded for message_id, decoded in unique.items() if message_id in claimed]
