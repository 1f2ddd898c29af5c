"""Durable, transactional hand-over from the alert lifecycle to the forwarders.

``Outbox.enqueue`` adds rows in the caller's session and never commits: the alert transition
and its outbox rows become visible together or not at all (the transactional-outbox pattern),
which with a forwarder that marks rows delivered only after a successful send gives
at-least-once delivery. SIEMs drop the rare duplicate by the notification's ``event_id``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from campuswatch.collector.db.models import utc_now
from campuswatch.collector.forward.base import OutboxItem
from campuswatch.collector.forward.models import OutboxEntry
from campuswatch.collector.forward.payload import (
    PayloadError,
    notification_from_json,
    notification_to_json,
)
from campuswatch.collector.signals import AlertNotification


@dataclass(frozen=True, slots=True)
class Claim:
    """Rows claimed for sending, plus those whose stored payload no longer decodes."""

    items: list[OutboxItem]
    undecodable: list[tuple[int, str]]


class Outbox:
    """Operations on the ``outbox`` table; each takes the session it runs in."""

    @staticmethod
    def enqueue(
        session: Session,
        notifications: Iterable[AlertNotification],
        destinations: Iterable[str],
        *,
        now: datetime | None = None,
    ) -> int:
        """Queue every notification for every destination (caller commits); returns rows added."""
        moment = now or utc_now()
        names = list(dict.fromkeys(destinations))
        rows = [
            OutboxEntry(
                destination=name,
                event_id=n.event_id,
                payload=notification_to_json(n),
                created_at=moment,
                attempts=0,
                next_attempt_at=moment,
                state="pending",
            )
            for n in notifications
            for name in names
        ]
        session.add_all(rows)
        return len(rows)

    @staticmethod
    def claim(
        session: Session, destination: str, *, limit: int, now: datetime, lease: timedelta
    ) -> Claim:
        """Take up to ``limit`` due rows, oldest first, and hide them from others for ``lease``.

        On PostgreSQL ``FOR UPDATE SKIP LOCKED`` lets several collectors claim concurrently
        without waiting for or double-claiming each other's rows; SQLite ignores the clause
        and serialises writers, which is enough for its single collector.
        """
        query = (
            select(OutboxEntry)
            .where(
                OutboxEntry.destination == destination,
                OutboxEntry.state == "pending",
                OutboxEntry.next_attempt_at <= now,
            )
            .order_by(OutboxEntry.id)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        items: list[OutboxItem] = []
        undecodable: list[tuple[int, str]] = []
        for row in session.scalars(query):
            row.attempts += 1
            row.next_attempt_at = now + lease
            try:
                notification = notification_from_json(row.payload)
            except PayloadError as exc:
                undecodable.append((row.id, str(exc)))
                continue
            items.append(
                OutboxItem(row.id, destination, notification, row.attempts, row.created_at)
            )
        session.flush()
        return Claim(items, undecodable)

    @staticmethod
    def mark_delivered(session: Session, ids: Sequence[int], *, now: datetime) -> None:
        session.execute(
            update(OutboxEntry)
            .where(OutboxEntry.id.in_(ids), OutboxEntry.state == "pending")
            .values(state="delivered", delivered_at=now, last_error=None)
        )

    @staticmethod
    def reschedule(session: Session, row_id: int, *, at: datetime, error: str) -> None:
        session.execute(
            update(OutboxEntry)
            .where(OutboxEntry.id == row_id, OutboxEntry.state == "pending")
            .values(next_attempt_at=at, last_error=error[:2000])
        )

    @staticmethod
    def mark_dead(session: Session, ids: Sequence[int], *, error: str) -> None:
        session.execute(
            update(OutboxEntry)
            .where(OutboxEntry.id.in_(ids), OutboxEntry.state == "pending")
            .values(state="dead", last_error=error[:2000])
        )

    @staticmethod
    def requeue_dead(session: Session, destination: str, *, now: datetime | None = None) -> int:
        """Give dead-lettered rows another go (after a person fixed the cause)."""
        result = session.execute(
            update(OutboxEntry)
            .where(OutboxEntry.destination == destination, OutboxEntry.state == "dead")
            .values(state="pending", attempts=0, next_attempt_at=now or utc_now())
        )
        return int(result.rowcount)  # type: ignore[attr-defined]

    @staticmethod
    def pending_count(session: Session, destination: str) -> int:
        query = select(func.count()).where(
            OutboxEntry.destination == destination, OutboxEntry.state == "pending"
        )
        return int(session.scalar(query) or 0)

    @staticmethod
    def purge_delivered(session: Session, *, delivered_before: datetime) -> int:
        """Delete delivered rows older than the retention; dead rows stay for a person."""
        result = session.execute(
            delete(OutboxEntry).where(
                OutboxEntry.state == "delivered", OutboxEntry.delivered_at < delivered_before
            )
        )
        return int(result.rowcount)  # type: ignore[attr-defined]
