"""Two collectors on one PostgreSQL register still keep one open alert per fingerprint."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import timedelta

import pytest
from sqlalchemy import Engine, func, select
from sqlalchemy.exc import IntegrityError

from campuswatch.collector.alerts.manager import AlertManager
from campuswatch.collector.alerts.models import Alert
from campuswatch.collector.alerts.policy import AlertPolicy
from campuswatch.collector.db.engine import make_engine, session_factory, upgrade
from campuswatch.collector.signals import AlertNotification
from tests.collector.alerts.conftest import T0, signal
from tests.support.postgres import temporary_postgres_database

ROUNDS = 30


@pytest.fixture
def pg_engine() -> Iterator[Engine]:
    with temporary_postgres_database() as url:
        upgrade(url)
        engine = make_engine(url, pool_size=4)
        yield engine
        engine.dispose()


def test_two_collectors_racing_on_the_same_fingerprints(pg_engine: Engine) -> None:
    policy = AlertPolicy(group_wait=timedelta(0))
    collectors = [AlertManager(session_factory(pg_engine), settings=policy) for _ in range(2)]
    start = threading.Barrier(2)
    errors: list[BaseException] = []
    sent: list[list[AlertNotification]] = [[], []]

    def run(index: int) -> None:
        try:
            start.wait()
            for round_number in range(ROUNDS):
                at = T0 + timedelta(seconds=round_number)
                # Fingerprints in opposite orders: the per-fingerprint locks must not deadlock.
                devices = ["pc-01", "pc-02", "pc-03"]
                if index:
                    devices.reverse()
                batch = [signal(device, at=at) for device in devices]
                sent[index] += collectors[index].process(batch, at)
        except BaseException as exc:  # reported below; a thread cannot fail the test itself
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(index,)) for index in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    with session_factory(pg_engine)() as session:
        rows = session.execute(
            select(Alert.fingerprint, func.count(), func.sum(Alert.occurrences)).group_by(
                Alert.fingerprint
            )
        ).all()
    assert sorted((count, total) for _, count, total in rows) == [(1, 2 * ROUNDS)] * 3
    opened = [note for notes in sent for note in notes if note.event == "opened"]
    assert len(opened) == 1  # one group (same site and rule), told once across both collectors


def test_the_database_itself_refuses_a_second_open_alert(pg_engine: Engine) -> None:
    manager = AlertManager(session_factory(pg_engine))
    manager.process([signal()], T0)
    with session_factory(pg_engine)() as session:
        [existing] = session.scalars(select(Alert))
        session.add(
            Alert(
                **{
                    column.key: getattr(existing, column.key)
                    for column in Alert.__table__.columns
                    if column.key != "id"
                }
            )
        )
        with pytest.raises(IntegrityError, match="ux_alerts_open_fingerprint"):
            session.commit()
