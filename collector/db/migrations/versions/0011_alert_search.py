"""Alerts: ``search_text``, what the alert search looks in (every language, folded).

The folding is copied here, not imported, so this revision keeps meaning what it meant
when later code changes.

Revision ID: 0011_alert_search
Revises: 0010_asset_owner
Create Date: 2026-12-03
"""

from __future__ import annotations

import json
import unicodedata
from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0011_alert_search"
down_revision = "0010_asset_owner"
branch_labels = None
depends_on = None


def _fold(text: str) -> str:
    decomposed = unicodedata.normalize("NFD", text.replace("đ", "d").replace("Đ", "D"))
    return "".join(char for char in decomposed if not unicodedata.combining(char)).casefold()


def _search_text(row: Any) -> str:
    parts = [row.summary or "", row.rule_title or "", row.device_id or "", row.fingerprint or ""]
    texts = row.texts
    if isinstance(texts, str):  # SQLite hands JSON back as text here
        try:
            texts = json.loads(texts)
        except ValueError:
            texts = {}
    if isinstance(texts, dict):
        for language in sorted(texts):
            prose = texts[language]
            if isinstance(prose, dict):
                parts.extend(str(prose.get(part) or "") for part in ("title", "summary"))
    return _fold("\n".join(part for part in parts if part))


def upgrade() -> None:
    with op.batch_alter_table("alerts") as batch:
        batch.add_column(sa.Column("search_text", sa.Text(), nullable=False, server_default=""))
    connection = op.get_bind()
    alerts = sa.table(
        "alerts",
        sa.column("id", sa.Integer),
        sa.column("summary", sa.Text),
        sa.column("rule_title", sa.String),
        sa.column("device_id", sa.String),
        sa.column("fingerprint", sa.String),
        sa.column("texts", sa.JSON),
        sa.column("search_text", sa.Text),
    )
    rows = connection.execute(
        sa.select(
            alerts.c.id,
            alerts.c.summary,
            alerts.c.rule_title,
            alerts.c.device_id,
            alerts.c.fingerprint,
            alerts.c.texts,
        )
    ).fetchall()
    for row in rows:
        connection.execute(
            alerts.update().where(alerts.c.id == row.id).values(search_text=_search_text(row))
        )


def downgrade() -> None:
    with op.batch_alter_table("alerts") as batch:
        batch.drop_column("search_text")
