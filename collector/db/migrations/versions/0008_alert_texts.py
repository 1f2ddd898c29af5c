"""Alerts: ``texts``, the title, summary and description in every language.

Rendered when the alert fires (rule id + values would not survive a rule being edited or
removed), so the UI, reports and each SOC destination show the alert in their reader's
language. Alerts from before keep ``{}`` and are shown with their English columns.

Revision ID: 0008_alert_texts
Revises: 0007_audit_events
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008_alert_texts"
down_revision = "0007_audit_events"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("alerts") as batch:
        batch.add_column(
            sa.Column("texts", sa.JSON(), nullable=False, server_default=sa.text("'{}'"))
        )


def downgrade() -> None:
    with op.batch_alter_table("alerts") as batch:
        batch.drop_column("texts")
