"""Alerts by fingerprint, newest last: the alert manager looks up a batch's current alerts
(the open one, else the latest) with one indexed query, instead of reading the whole alerts
table for every new signal (a district keeps thousands of open and many resolved alerts).

Revision ID: 0013_alert_fingerprint_index
Revises: 0012_login_counters
Create Date: 2026-12-03
"""

from __future__ import annotations

from alembic import op

revision = "0013_alert_fingerprint_index"
down_revision = "0012_login_counters"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_alerts_fingerprint_id", "alerts", ["fingerprint", "id"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_alerts_fingerprint_id", table_name="alerts")
