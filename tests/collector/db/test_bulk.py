"""Multi-row statements: chunking, RETURNING, and values stored as the ORM stores them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import select

from campuswatch.collector.db.bulk import MultiRowInsert, ValuesUpdate
from campuswatch.collector.db.engine import make_engine, session_factory, upgrade
from campuswatch.collector.db.models import Device, ProcessedMessage, Site

T0 = datetime(2026, 11, 23, 8, 0, 0, 123456, tzinfo=UTC)


def test_rows_are_written_in_chunks_and_only_new_rows_come_back(db_url: str) -> None:
    upgrade(db_url)
    engine = make_engine(db_url)
    claim = MultiRowInsert(
        ProcessedMessage,
        ("message_id", "device_id", "kind", "received_at"),
        "ON CONFLICT (message_id) DO NOTHING RETURNING message_id",
        chunk_rows=2,
    )
    rows = [
        {"message_id": f"m-{n}", "device_id": "pc-1", "kind": "health", "received_at": T0}
        for n in range(5)
    ]
    try:
        with session_factory(engine)() as session, session.begin():
            written = claim.execute(session.connection(), rows)
            assert sorted(row[0] for row in written) == [f"m-{n}" for n in range(5)]
        with session_factory(engine)() as session, session.begin():
            again = claim.execute(
                session.connection(), [*rows[3:], {**rows[0], "message_id": "m-9"}]
            )
            assert [row[0] for row in again] == ["m-9"]
        with session_factory(engine)() as session:
            stored = session.get_one(ProcessedMessage, "m-4")
            assert stored.received_at == T0  # read back through the ORM: same value
    finally:
        engine.dispose()


def test_values_update_changes_only_the_rows_its_where_allows(db_url: str) -> None:
    upgrade(db_url)
    engine = make_engine(db_url)
    touch = ValuesUpdate(
        Device,
        {"id": "device_id", "seen": "last_seen"},
        "last_seen = v.seen",
        "devices.device_id = v.id AND (devices.last_seen IS NULL OR devices.last_seen < v.seen)",
        chunk_rows=2,
    )
    try:
        with session_factory(engine)() as session, session.begin():
            session.add(Site(id="s", level="school", name="S"))
            session.flush()
            for n in range(5):
                session.add(Device(device_id=f"pc-{n}", site_id="s", last_seen=T0))
        later = T0 + timedelta(minutes=1)
        with session_factory(engine)() as session, session.begin():
            touch.execute(
                session.connection(),
                [
                    {"id": f"pc-{n}", "seen": later if n % 2 else T0 - timedelta(hours=1)}
                    for n in range(5)
                ],
            )
        with session_factory(engine)() as session:
            seen = {
                row.device_id: row.last_seen
                for row in session.execute(select(Device.device_id, Device.last_seen))
            }
        assert seen == {f"pc-{n}": later if n % 2 else T0 for n in range(5)}
    finally:
        engine.dispose()
