"""Outbox for SOC forwarding: one row per (alert notification, destination).

Revision ID: 0003_outbox
Revises: 0002_alerts
Create Date: 2025-11-23

Written by hand from ``campuswatch.collector.forward.models``; a migration must not import
model code, because models change later and old migrations must still build the old schema.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003_outbox"
down_revision = "0002_alerts"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "outbox",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("destination", sa.String(length=64), nullable=False),
        sa.Column("event_id", sa.String(length=64), nullable=False),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("delivered_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.CheckConstraint(
            "state IN ('pending', 'delivered', 'dead')", name=op.f("ck_outbox_state")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_outbox")),
    )
    op.create_index(
        "ix_outbox_destination_state_next_attempt_at",
        "outbox",
        ["destination", "state", "next_attempt_at"],
    )
    op.create_index(op.f("ix_outbox_event_id"), "outbox", ["event_id"])


def downgrade() -> None:
    op.drop_index(op.f("ix_outbox_event_id"), table_name="outbox")
    op.drop_index("ix_outbox_destination_state_next_attempt_at", table_name="outbox")
    op.drop_table("outbox")
