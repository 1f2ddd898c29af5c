"""KPI snapshots: antivirus and broadband per site and local day, for closed periods.

Revision ID: 0009_kpi_snapshots
Revises: 0008_alert_texts
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009_kpi_snapshots"
down_revision = "0008_alert_texts"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "kpi_snapshots",
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("site_id", sa.String(64), nullable=False),
        sa.Column("taken_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("is_school", sa.Boolean(), nullable=False),
        sa.Column("uplink_type", sa.String(16), nullable=True),
        sa.Column("reachable", sa.Boolean(), nullable=False),
        sa.Column("computers", sa.Integer(), nullable=False),
        sa.Column("av_protected", sa.Integer(), nullable=False),
        sa.Column("av_parts", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("day", "site_id", name=op.f("pk_kpi_snapshots")),
    )


def downgrade() -> None:
    op.drop_table("kpi_snapshots")
