"""Assets: ``ignored``, for discovered hosts a person has looked at and let be.

Revision ID: 0005_asset_ignored
Revises: 0004_enrolment
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005_asset_ignored"
down_revision = "0004_enrolment"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("assets") as batch:
        batch.add_column(
            sa.Column("ignored", sa.Boolean(), nullable=False, server_default=sa.false())
        )


def downgrade() -> None:
    with op.batch_alter_table("assets") as batch:
        batch.drop_column("ignored")
