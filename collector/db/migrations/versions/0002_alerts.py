"""Alert lifecycle: silences, alerts (one open per fingerprint), evidence, audit trail.

Revision ID: 0002_alerts
Revises: 0001_initial
Create Date: 2025-11-24

Written by hand from ``campuswatch.collector.alerts.models`` and kept independent of it,
like 0001: old migrations must keep building the old schema after the models move on.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002_alerts"
down_revision = "0001_initial"
branch_labels = None
depends_on = None

_OPEN = "state <> 'resolved'"


def upgrade() -> None:
    op.create_table(
        "silences",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("matchers", sa.JSON(), nullable=False),
        sa.Column("starts_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ends_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_by", sa.String(length=128), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("comment", sa.Text(), nullable=False),
        sa.Column("expired_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("expired_by", sa.String(length=128), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_silences")),
    )
    op.create_index(op.f("ix_silences_ends_at"), "silences", ["ends_at"], unique=False)

    op.create_table(
        "alerts",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("fingerprint", sa.String(length=256), nullable=False),
        sa.Column("rule_id", sa.String(length=128), nullable=False),
        sa.Column("rule_title", sa.String(length=512), nullable=False),
        sa.Column("level", sa.String(length=16), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("silenced", sa.Boolean(), nullable=False),
        sa.Column("silence_id", sa.Integer(), nullable=True),
        sa.Column("inhibited", sa.Boolean(), nullable=False),
        sa.Column("inhibited_by", sa.Integer(), nullable=True),
        sa.Column("site_id", sa.String(length=64), nullable=False),
        sa.Column("device_id", sa.String(length=64), nullable=True),
        sa.Column("summary", sa.Text(), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("labels", sa.JSON(), nullable=False),
        sa.Column("tags", sa.JSON(), nullable=False),
        sa.Column("runbook_en", sa.Text(), nullable=False),
        sa.Column("runbook_vi", sa.Text(), nullable=False),
        sa.Column("first_seen", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_seen", sa.DateTime(timezone=True), nullable=False),
        sa.Column("opened_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("occurrences", sa.Integer(), nullable=False),
        sa.Column("acknowledged_by", sa.String(length=128), nullable=True),
        sa.Column("acknowledged_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("resolved_by", sa.String(length=128), nullable=True),
        sa.Column("resolved_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("escalation_step", sa.Integer(), nullable=False),
        sa.Column("last_notified_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("pending_since", sa.DateTime(timezone=True), nullable=True),
        sa.Column("group_reported_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("group_key", sa.String(length=193), nullable=False),
        sa.CheckConstraint(
            "state IN ('firing', 'acknowledged', 'resolved')", name=op.f("ck_alerts_state")
        ),
        sa.CheckConstraint(
            "level IN ('info', 'low', 'medium', 'high', 'critical')", name=op.f("ck_alerts_level")
        ),
        sa.ForeignKeyConstraint(
            ["silence_id"],
            ["silences.id"],
            name=op.f("fk_alerts_silence_id_silences"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["inhibited_by"],
            ["alerts.id"],
            name=op.f("fk_alerts_inhibited_by_alerts"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_alerts")),
    )
    for column in ("rule_id", "state", "silence_id", "inhibited_by", "site_id", "device_id"):
        op.create_index(op.f(f"ix_alerts_{column}"), "alerts", [column], unique=False)
    op.create_index(op.f("ix_alerts_last_seen"), "alerts", ["last_seen"], unique=False)
    op.create_index(op.f("ix_alerts_group_key"), "alerts", ["group_key"], unique=False)
    op.create_index(
        "ux_alerts_open_fingerprint",
        "alerts",
        ["fingerprint"],
        unique=True,
        sqlite_where=sa.text(_OPEN),
        postgresql_where=sa.text(_OPEN),
    )

    op.create_table(
        "alert_evidence",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("alert_id", sa.Integer(), nullable=False),
        sa.Column("message_id", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("ts", sa.DateTime(timezone=True), nullable=False),
        sa.Column("excerpt", sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(
            ["alert_id"],
            ["alerts.id"],
            name=op.f("fk_alert_evidence_alert_id_alerts"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_alert_evidence")),
    )
    op.create_index(
        op.f("ix_alert_evidence_alert_id"), "alert_evidence", ["alert_id"], unique=False
    )

    op.create_table(
        "alert_audit",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("alert_id", sa.Integer(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("action", sa.String(length=24), nullable=False),
        sa.Column("actor", sa.String(length=128), nullable=False),
        sa.Column("note", sa.Text(), nullable=True),
        sa.Column("from_state", sa.String(length=16), nullable=True),
        sa.Column("to_state", sa.String(length=16), nullable=True),
        sa.CheckConstraint(
            "action IN ('opened', 'updated', 'acknowledged', 'unacknowledged', 'resolved', "
            "'reopened', 'silenced', 'unsilenced', 'inhibited', 'uninhibited', 'escalated', "
            "'notified', 'commented')",
            name=op.f("ck_alert_audit_action"),
        ),
        sa.ForeignKeyConstraint(
            ["alert_id"],
            ["alerts.id"],
            name=op.f("fk_alert_audit_alert_id_alerts"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_alert_audit")),
    )
    op.create_index(op.f("ix_alert_audit_alert_id"), "alert_audit", ["alert_id"], unique=False)


def downgrade() -> None:
    op.drop_table("alert_audit")
    op.drop_table("alert_evidence")
    # Dropping the table drops its indexes; the self-referencing key goes with it.
    op.drop_table("alerts")
    op.drop_table("silences")
