"""Migration 0002 builds exactly the alert models, and round-trips down and up.

The whole-schema comparison at head is tests/collector/db/test_migrations.py.
"""

from __future__ import annotations

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect

import campuswatch.collector.alerts.models  # noqa: F401  (registers the alert tables)
from campuswatch.collector.db.engine import (
    alembic_config,
    current_revision,
    make_engine,
    upgrade,
)
from campuswatch.collector.db.models import Base

ALERT_TABLES = {"alerts", "alert_evidence", "alert_audit", "silences"}
# Columns later revisions add to these tables (0008_alert_texts: alerts.texts,
# 0011_alert_search: alerts.search_text).
LATER_COLUMNS = {("alerts", "texts"), ("alerts", "search_text")}
# Indexes later revisions add (0013_alert_fingerprint_index).
LATER_INDEXES = {"ix_alerts_fingerprint_id"}


def _schema_diff(url: str) -> list[object]:
    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            # Only the alert tables: later revisions (0003_outbox, ...) are not applied here.
            opts = {"compare_type": True, "include_object": _is_alert_object}
            context = MigrationContext.configure(connection, opts=opts)
            return list(compare_metadata(context, Base.metadata))
    finally:
        engine.dispose()


def _is_alert_object(
    item: object, name: str | None, type_: str, reflected: bool, compare_to: object
) -> bool:
    table = item if type_ == "table" else getattr(item, "table", None)
    table_name = getattr(table, "name", name)
    if type_ == "column" and (table_name, name) in LATER_COLUMNS:
        return False
    if type_ == "index" and name in LATER_INDEXES:
        return False
    return table_name in ALERT_TABLES


def _downgrade(url: str, revision: str) -> None:
    engine = make_engine(url)
    try:
        with engine.begin() as connection:
            config = alembic_config()
            config.attributes["connection"] = connection
            command.downgrade(config, revision)
    finally:
        engine.dispose()


def test_alert_migration_matches_models_and_round_trips(db_url: str) -> None:
    upgrade(db_url, "0002_alerts")
    assert _schema_diff(db_url) == []

    _downgrade(db_url, "0001_initial")
    engine = make_engine(db_url)
    try:
        assert current_revision(engine) == "0001_initial"
        assert not ALERT_TABLES & set(inspect(engine).get_table_names())
    finally:
        engine.dispose()

    upgrade(db_url, "0002_alerts")
    assert _schema_diff(db_url) == []
    engine = make_engine(db_url)
    try:
        assert set(inspect(engine).get_table_names()) >= ALERT_TABLES
        indexes = {index["name"]: index for index in inspect(engine).get_indexes("alerts")}
        assert indexes["ux_alerts_open_fingerprint"]["unique"]
    finally:
        engine.dispose()


def test_alerts_raised_before_0011_are_found_by_their_vietnamese_text(db_url: str) -> None:
    from datetime import UTC, datetime

    from sqlalchemy import text

    from campuswatch.collector.alerts.queries import list_alerts
    from campuswatch.collector.db.engine import session_factory

    upgrade(db_url, "0010_asset_owner")
    engine = make_engine(db_url)
    try:
        at = datetime(2025, 3, 3, tzinfo=UTC)
        with engine.begin() as connection:
            connection.execute(
                text(
                    "INSERT INTO alerts (fingerprint, rule_id, rule_title, level, state, "
                    "silenced, inhibited, site_id, device_id, summary, description, labels, "
                    "tags, runbook_en, runbook_vi, texts, first_seen, last_seen, opened_at, "
                    "occurrences, escalation_step, group_key) VALUES ('f|s|pc-01', 'r', "
                    "'Stale', 'low', 'firing', false, false, 's', 'pc-01', 'stale', '', "
                    "'{}', '[]', '', '', :texts, :at, :at, :at, 1, 0, 's|r')"
                ),
                {"texts": '{"vi": {"title": "Chữ ký virus đã cũ"}}', "at": at},
            )
        upgrade(engine)
        with session_factory(engine)() as session:
            rows, total = list_alerts(session, search="CHU KY")
        assert (total, rows[0].device_id) == (1, "pc-01")
    finally:
        engine.dispose()
