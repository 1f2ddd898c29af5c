"""Login counters: failed UI logins per user name and client address, shared by every
collector on the register, so N collectors behind one proxy give no N times the guesses.

Revision ID: 0012_login_counters
Revises: 0011_alert_search
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012_login_counters"
down_revision = "0011_alert_search"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "login_counters",
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("key", sa.Text(), nullable=False),
        sa.Column("failures", sa.JSON(), nullable=False),
        sa.Column("pending", sa.JSON(), nullable=False),
        sa.Column("locked_until", sa.Float(), nullable=False),
        sa.Column("touched", sa.Float(), nullable=False),
        sa.CheckConstraint("kind IN ('account', 'address')", name=op.f("ck_login_counters_kind")),
        sa.PrimaryKeyConstraint("kind", "key", name=op.f("pk_login_counters")),
    )
    op.create_index(
        "ix_login_counters_kind_touched", "login_counters", ["kind", "touched"], unique=False
    )


def downgrade() -> None:
    op.drop_index("ix_login_counters_kind_touched", table_name="login_counters")
    op.drop_table("login_counters")
