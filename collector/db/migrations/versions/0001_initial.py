"""Initial schema: sites, assets (MACs, history), devices, idempotency, dead letters, access.

Revision ID: 0001_initial
Revises:
Create Date: 2025-11-23

Written from the models once and kept by hand: a migration must not import model code,
because models change later and old migrations must still build the old schema.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001_initial"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "api_tokens",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("site_scope", sa.String(length=64), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_used_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "role IN ('admin', 'soc', 'facilities', 'viewer')", name=op.f("ck_api_tokens_role")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_api_tokens")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_api_tokens_token_hash")),
    )
    op.create_table(
        "dead_letters",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("topic", sa.String(length=1024), nullable=False),
        sa.Column("reason", sa.String(length=32), nullable=False),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.Column("payload", sa.LargeBinary(), nullable=False),
        sa.Column("payload_truncated", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_dead_letters")),
    )
    op.create_index(
        op.f("ix_dead_letters_received_at"), "dead_letters", ["received_at"], unique=False
    )
    op.create_table(
        "processed_messages",
        sa.Column("message_id", sa.String(length=36), nullable=False),
        sa.Column("device_id", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("message_id", name=op.f("pk_processed_messages")),
    )
    op.create_index(
        op.f("ix_processed_messages_received_at"),
        "processed_messages",
        ["received_at"],
        unique=False,
    )
    op.create_table(
        "sites",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("parent_id", sa.String(length=64), nullable=True),
        sa.Column("level", sa.String(length=16), nullable=False),
        sa.Column("name", sa.String(length=256), nullable=False),
        sa.Column("uplink_type", sa.String(length=16), nullable=True),
        sa.Column("digital_maturity_level", sa.SmallInteger(), nullable=True),
        sa.Column("auto_created", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "level IN ('province', 'district', 'school', 'building', 'room')",
            name=op.f("ck_sites_level"),
        ),
        sa.CheckConstraint(
            "digital_maturity_level IS NULL OR digital_maturity_level BETWEEN 0 AND 3",
            name=op.f("ck_sites_maturity"),
        ),
        sa.ForeignKeyConstraint(
            ["parent_id"], ["sites.id"], name=op.f("fk_sites_parent_id_sites"), ondelete="RESTRICT"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sites")),
    )
    op.create_index(op.f("ix_sites_parent_id"), "sites", ["parent_id"], unique=False)
    op.create_table(
        "users",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("username", sa.String(length=128), nullable=False),
        sa.Column("password_hash", sa.String(length=512), nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("site_scope", sa.String(length=64), nullable=True),
        sa.Column("language", sa.String(length=8), nullable=False),
        sa.Column("disabled", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "role IN ('admin', 'soc', 'facilities', 'viewer')", name=op.f("ck_users_role")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_users")),
        sa.UniqueConstraint("username", name=op.f("uq_users_username")),
    )
    op.create_table(
        "assets",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("asset_tag", sa.String(length=64), nullable=True),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("name", sa.String(length=256), nullable=True),
        sa.Column("vendor", sa.String(length=256), nullable=True),
        sa.Column("model", sa.String(length=256), nullable=True),
        sa.Column("serial", sa.String(length=256), nullable=True),
        sa.Column("device_id", sa.String(length=64), nullable=True),
        sa.Column("os_name", sa.String(length=256), nullable=True),
        sa.Column("os_version", sa.String(length=256), nullable=True),
        sa.Column("firmware_version", sa.String(length=256), nullable=True),
        sa.Column("site_id", sa.String(length=64), nullable=True),
        sa.Column("room", sa.String(length=128), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("purchase_date", sa.Date(), nullable=True),
        sa.Column("warranty_end", sa.Date(), nullable=True),
        sa.Column("source", sa.String(length=16), nullable=False),
        sa.Column("first_seen", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_seen", sa.DateTime(timezone=True), nullable=True),
        sa.Column("registered", sa.Boolean(), nullable=False),
        sa.Column("manual_fields", sa.JSON(), nullable=False),
        sa.Column("security_level", sa.SmallInteger(), nullable=True),
        sa.Column("protection_plan_approved_on", sa.Date(), nullable=True),
        sa.Column("notes", sa.Text(), nullable=True),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "source IN ('agent', 'device', 'discovery', 'manual', 'import')",
            name=op.f("ck_assets_source"),
        ),
        sa.CheckConstraint(
            "status IN ('in_service', 'in_repair', 'lost', 'retired')",
            name=op.f("ck_assets_status"),
        ),
        sa.CheckConstraint(
            "security_level IS NULL OR security_level BETWEEN 1 AND 5",
            name=op.f("ck_assets_security_level"),
        ),
        sa.ForeignKeyConstraint(
            ["site_id"], ["sites.id"], name=op.f("fk_assets_site_id_sites"), ondelete="RESTRICT"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_assets")),
        sa.UniqueConstraint("asset_tag", name=op.f("uq_assets_asset_tag")),
        sa.UniqueConstraint("device_id", name=op.f("uq_assets_device_id")),
    )
    op.create_index(op.f("ix_assets_serial"), "assets", ["serial"], unique=False)
    op.create_index(op.f("ix_assets_site_id"), "assets", ["site_id"], unique=False)
    op.create_table(
        "asset_history",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("asset_id", sa.Integer(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("field", sa.String(length=64), nullable=False),
        sa.Column("old_value", sa.Text(), nullable=True),
        sa.Column("new_value", sa.Text(), nullable=True),
        sa.Column("actor", sa.String(length=512), nullable=False),
        sa.Column("source", sa.String(length=16), nullable=False),
        sa.ForeignKeyConstraint(
            ["asset_id"],
            ["assets.id"],
            name=op.f("fk_asset_history_asset_id_assets"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_asset_history")),
    )
    op.create_index(op.f("ix_asset_history_asset_id"), "asset_history", ["asset_id"], unique=False)
    op.create_table(
        "asset_macs",
        sa.Column("mac", sa.String(length=17), nullable=False),
        sa.Column("asset_id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["asset_id"],
            ["assets.id"],
            name=op.f("fk_asset_macs_asset_id_assets"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("mac", name=op.f("pk_asset_macs")),
    )
    op.create_index(op.f("ix_asset_macs_asset_id"), "asset_macs", ["asset_id"], unique=False)
    op.create_table(
        "devices",
        sa.Column("device_id", sa.String(length=64), nullable=False),
        sa.Column("site_id", sa.String(length=64), nullable=False),
        sa.Column("device_type", sa.String(length=32), nullable=True),
        sa.Column("asset_id", sa.Integer(), nullable=True),
        sa.Column("online", sa.Boolean(), nullable=True),
        sa.Column("status_changed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_seen", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_message_at", sa.JSON(), nullable=False),
        sa.Column("latest", sa.JSON(), nullable=False),
        sa.Column("hello", sa.JSON(), nullable=True),
        sa.Column("software_version", sa.String(length=256), nullable=True),
        sa.Column("fingerprint", sa.String(length=64), nullable=True),
        sa.Column("clock_skew_s", sa.Float(), nullable=True),
        sa.ForeignKeyConstraint(
            ["asset_id"],
            ["assets.id"],
            name=op.f("fk_devices_asset_id_assets"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["site_id"], ["sites.id"], name=op.f("fk_devices_site_id_sites"), ondelete="RESTRICT"
        ),
        sa.PrimaryKeyConstraint("device_id", name=op.f("pk_devices")),
    )
    op.create_index(op.f("ix_devices_asset_id"), "devices", ["asset_id"], unique=False)
    op.create_index(op.f("ix_devices_site_id"), "devices", ["site_id"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_devices_site_id"), table_name="devices")
    op.drop_index(op.f("ix_devices_asset_id"), table_name="devices")
    op.drop_table("devices")
    op.drop_index(op.f("ix_asset_macs_asset_id"), table_name="asset_macs")
    op.drop_table("asset_macs")
    op.drop_index(op.f("ix_asset_history_asset_id"), table_name="asset_history")
    op.drop_table("asset_history")
    op.drop_index(op.f("ix_assets_site_id"), table_name="assets")
    op.drop_index(op.f("ix_assets_serial"), table_name="assets")
    op.drop_table("assets")
    op.drop_table("users")
    op.drop_index(op.f("ix_sites_parent_id"), table_name="sites")
    op.drop_table("sites")
    op.drop_index(op.f("ix_processed_messages_received_at"), table_name="processed_messages")
    op.drop_table("processed_messages")
    op.drop_index(op.f("ix_dead_letters_received_at"), table_name="dead_letters")
    op.drop_table("dead_letters")
    op.drop_table("api_tokens")
