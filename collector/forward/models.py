"""The outbox table: one row per (notification, destination), in the register database.

It shares the register's declarative ``Base`` so alert transitions and their outbox rows
commit in one transaction, and Alembic sees one metadata (migration ``0003_outbox``).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Final

from sqlalchemy import CheckConstraint, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from campuswatch.collector.db.models import Base, utc_now

OUTBOX_STATES: Final = ("pending", "delivered", "dead")


class OutboxEntry(Base):
    """A notification waiting for, delivered to, or given up on by one destination.

    While a forwarder is sending a row it stays ``pending`` with ``next_attempt_at`` pushed
    one lease ahead, so no other forwarder finds it due; a forwarder that dies mid-send
    thereby releases its rows when the lease runs out.
    """

    __tablename__ = "outbox"
    __table_args__ = (
        CheckConstraint("state IN ('pending', 'delivered', 'dead')", name="state"),
        Index(
            "ix_outbox_destination_state_next_attempt_at", "destination", "state", "next_attempt_at"
        ),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    destination: Mapped[str] = mapped_column(String(64))
    # The notification's own unique id, so a person can find every copy of one event.
    event_id: Mapped[str] = mapped_column(String(64), index=True)
    payload: Mapped[dict[str, Any]] = mapped_column()
    created_at: Mapped[datetime] = mapped_column(default=utc_now)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(default=utc_now)
    last_error: Mapped[str | None] = mapped_column(Text)
    delivered_at: Mapped[datetime | None] = mapped_column()
    state: Mapped[str] = mapped_column(String(16), default="pending")
