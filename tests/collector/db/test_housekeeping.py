from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from campuswatch.collector.db.access import (
    create_api_token,
    create_user,
    find_api_token,
    verify_password,
)
from campuswatch.collector.db.engine import make_engine, session_factory, upgrade
from campuswatch.collector.db.housekeeping import (
    MAX_DEAD_LETTER_PAYLOAD,
    add_dead_letter,
    claim_message,
    dead_letter_count,
    is_processed,
    prune_dead_letters,
    prune_processed,
)
from campuswatch.collector.db.models import DeadLetter
from campuswatch.wire.codec import DecodedMessage
from campuswatch.wire.messages import StateMessage
from campuswatch.wire.topics import Topic

NOW = datetime(2025, 3, 1, tzinfo=UTC)


@pytest.fixture
def session(db_url: str) -> Iterator[Session]:
    upgrade(db_url)
    engine = make_engine(db_url)
    with session_factory(engine)() as db_session:
        yield db_session
    engine.dispose()


def _decoded(received_at: datetime) -> DecodedMessage:
    message = StateMessage(device_id="d1", site="s1", ts=received_at, status="online")
    return DecodedMessage(Topic("s1", "d1", "state"), message, received_at, 0.0)


def test_claim_message_is_idempotent(session: Session) -> None:
    first = _decoded(NOW)
    assert claim_message(session, first) is True
    assert claim_message(session, first) is False
    session.commit()
    assert claim_message(session, first) is False
    assert is_processed(session, first.message.id)


def test_prune_processed_removes_only_old_ids(session: Session) -> None:
    old = _decoded(NOW - timedelta(days=20))
    recent = _decoded(NOW - timedelta(days=1))
    claim_message(session, old)
    claim_message(session, recent)
    assert prune_processed(session, older_than_days=14, now=NOW) == 1
    assert not is_processed(session, old.message.id)
    assert is_processed(session, recent.message.id)


def test_dead_letters_are_truncated_and_bounded(session: Session) -> None:
    big = add_dead_letter(
        session, topic="cw/v1/x", reason="oversize", detail="d", payload=b"x" * 200_000
    )
    session.flush()
    assert len(big.payload) == MAX_DEAD_LETTER_PAYLOAD and big.payload_truncated
    for number in range(30):
        add_dead_letter(session, topic="t", reason="json", detail=str(number), payload="{")
    session.flush()
    assert prune_dead_letters(session, keep=10) == 21
    assert dead_letter_count(session) == 10
    kept = list(session.scalars(select(DeadLetter.detail).order_by(DeadLetter.id)))
    assert kept == [str(number) for number in range(20, 30)]
    assert prune_dead_letters(session, keep=10) == 0


def test_tokens_and_passwords(session: Session) -> None:
    token, plain = create_api_token(session, name="soc", role="soc", site_scope="hcm")
    assert token.token_hash != plain and find_api_token(session, plain) is token
    assert token.last_used_at is not None
    token.revoked_at = NOW
    assert find_api_token(session, plain) is None
    user = create_user(session, username="lan", password="mật khẩu dài", role="facilities")
    assert verify_password("mật khẩu dài", user.password_hash)
    assert not verify_password("wrong", user.password_hash)
    assert not verify_password("x", "garbage")
    with pytest.raises(ValueError, match="role"):
        create_user(session, username="x", password="y", role="root")
