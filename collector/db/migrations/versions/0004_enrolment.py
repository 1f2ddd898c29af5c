"""Enrolment tokens per school and the per-device logins issued with them.

Revision ID: 0004_enrolment
Revises: 0003_outbox
Create Date: 2026-11-23

Written by hand from ``campuswatch.collector.enrolment.models`` (migrations never import
model code).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004_enrolment"
down_revision = "0003_outbox"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "enrolment_tokens",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("site_id", sa.String(length=64), nullable=False),
        sa.Column("note", sa.String(length=256), nullable=False),
        sa.Column("created_by", sa.String(length=128), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("max_uses", sa.Integer(), nullable=False),
        sa.Column("uses", sa.Integer(), nullable=False),
        sa.Column("last_used_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint("max_uses >= 1", name=op.f("ck_enrolment_tokens_max_uses")),
        sa.CheckConstraint("uses >= 0", name=op.f("ck_enrolment_tokens_uses")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_enrolment_tokens")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_enrolment_tokens_token_hash")),
    )
    op.create_index(op.f("ix_enrolment_tokens_site_id"), "enrolment_tokens", ["site_id"])
    op.create_table(
        "enrolments",
        sa.Column("device_id", sa.String(length=64), nullable=False),
        sa.Column("site_id", sa.String(length=64), nullable=False),
        sa.Column("machine", sa.JSON(), nullable=False),
        sa.Column("hostname", sa.String(length=255), nullable=True),
        sa.Column("agent_version", sa.String(length=64), nullable=True),
        sa.Column("token_id", sa.Integer(), nullable=True),
        sa.Column("enrolled_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_enrolled_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("enrol_count", sa.Integer(), nullable=False),
        sa.Column("clone_attempts", sa.Integer(), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("revoked_by", sa.String(length=128), nullable=True),
        sa.Column("revoke_note", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("device_id", name=op.f("pk_enrolments")),
    )
    op.create_index(op.f("ix_enrolments_site_id"), "enrolments", ["site_id"])


def downgrade() -> None:
    op.drop_index(op.f("ix_enrolments_site_id"), table_name="enrolments")
    op.drop_table("enrolments")
    op.drop_index(op.f("ix_enrolment_tokens_site_id"), table_name="enrolment_tokens")
    op.drop_table("enrolment_tokens")
