"""Assets: ``owner``, the person responsible for the equipment (set when it is confirmed).

Revision ID: 0010_asset_owner
Revises: 0009_kpi_snapshots
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010_asset_owner"
down_revision = "0009_kpi_snapshots"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("assets") as batch:
        batch.add_column(sa.Column("owner", sa.String(length=128), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("assets") as batch:
        batch.drop_column("owner")
