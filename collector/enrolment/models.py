"""Enrolment tokens and enrolled devices, in the register database (migration 0004).

A token belongs to one school: every agent enrolled with it reports under that school and
the broker ACL pins it there. Only the token's SHA-256 is stored; the token itself is shown
once, like an API token.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, CheckConstraint, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from campuswatch.collector.db.models import Base, utc_now


class EnrolmentToken(Base):
    __tablename__ = "enrolment_tokens"
    __table_args__ = (
        CheckConstraint("max_uses >= 1", name="max_uses"),
        CheckConstraint("uses >= 0", name="uses"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    # Not a foreign key, like API token scopes: the token's history must outlive the site.
    site_id: Mapped[str] = mapped_column(String(64), index=True)
    note: Mapped[str] = mapped_column(String(256), default="")
    created_by: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(default=utc_now)
    expires_at: Mapped[datetime] = mapped_column()
    max_uses: Mapped[int] = mapped_column(Integer)
    uses: Mapped[int] = mapped_column(Integer, default=0)
    last_used_at: Mapped[datetime | None] = mapped_column()
    revoked_at: Mapped[datetime | None] = mapped_column()


class Enrolment(Base):
    """One device's MQTT login as the collector issued it; revocation is kept, not deleted."""

    __tablename__ = "enrolments"

    device_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    site_id: Mapped[str] = mapped_column(String(64), index=True)
    machine: Mapped[dict[str, Any]] = mapped_column(JSON)
    """Hashed hardware facts (``wire.enrolment.MachineFacts``) of the enrolled machine."""
    hostname: Mapped[str | None] = mapped_column(String(255))
    agent_version: Mapped[str | None] = mapped_column(String(64))
    token_id: Mapped[int | None] = mapped_column(Integer)
    enrolled_at: Mapped[datetime] = mapped_column(default=utc_now)
    last_enrolled_at: Mapped[datetime] = mapped_column(default=utc_now)
    enrol_count: Mapped[int] = mapped_column(Integer, default=1)
    clone_attempts: Mapped[int] = mapped_column(Integer, default=0)
    """Refused enrolments of this id from other machines (cloned images)."""
    revoked_at: Mapped[datetime | None] = mapped_column()
    revoked_by: Mapped[str | None] = mapped_column(String(128))
    revoke_note: Mapped[str | None] = mapped_column(Text)
