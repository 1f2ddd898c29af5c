"""A migrated register database per test, on SQLite and on PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy.orm import Session

from campuswatch.collector.db.engine import make_engine, session_factory
from campuswatch.wire.codec import DecodedMessage
from campuswatch.wire.messages import Message, kind_of
from campuswatch.wire.topics import Topic

T0 = datetime(2025, 3, 1, 8, 0, tzinfo=UTC)


@pytest.fixture
def session(migrated_db_url: str) -> Iterator[Session]:
    engine = make_engine(migrated_db_url)
    with session_factory(engine)() as db_session:
        yield db_session
    engine.dispose()


def decoded(message: Message, received_at: datetime | None = None) -> DecodedMessage:
    """What the codec would hand ingest for ``message``."""
    received = received_at or message.ts + timedelta(seconds=1)
    topic = Topic(message.site, message.device_id, kind_of(message))
    return DecodedMessage(topic, message, received, (message.ts - received).total_seconds())
