"""Devices' live state: when each was last seen, whether it is online, and the newest
message of each kind it sent (``device_latest``).

Written set-based. A district sends thousands of routine messages a second and each one
changes its device's state, so a batch is stored in a few multi-row statements built once
(``collector/db/bulk.py``), not through the ORM's unit of work (which loads every row,
diffs it and compiles per batch: most of the collector's CPU before this module existed). The
database decides which message is the newest of its kind (``ts`` of the stored row
against the incoming one), so a store-and-forward backlog, a retained message arriving
late, or two collectors sharing the load never put an older state over a newer one.

``state`` is the exception: it is ordered by arrival (``received_at``). A Last Will is
composed when its connection is attempted, so it carries a time a few ms *before* the
"online" that connection then publishes, yet it always means "that connection is gone".
Both travel on one retained topic, which the broker delivers in the order it accepted
them, and the retained message a (re)subscribing collector gets is the broker's current
one, so arrival order is the truth for availability.

Nothing here commits; the caller owns the transaction.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Iterable, Iterator, Sequence
from datetime import datetime
from operator import itemgetter
from typing import Any, Final

import msgspec
from sqlalchemy import ColumnElement, and_, select
from sqlalchemy.orm import Session, aliased

from campuswatch.collector.db.bulk import MultiRowInsert, ValuesUpdate
from campuswatch.collector.db.models import Device, DeviceLatest
from campuswatch.wire.codec import DecodedMessage
from campuswatch.wire.messages import (
    KIND_TYPES,
    HelloMessage,
    InventoryMessage,
    Message,
    StateMessage,
    TelemetryMessage,
    kind_of,
)
from campuswatch.wire.topics import Topic

log = logging.getLogger(__name__)

_UPSERT_LATEST: Final = MultiRowInsert(
    DeviceLatest,
    ("device_id", "kind", "ts", "received_at", "body"),
    "ON CONFLICT (device_id, kind) DO UPDATE SET"
    " ts = excluded.ts, received_at = excluded.received_at, body = excluded.body"
    # Equal times: the later arrival wins, as a redelivery of the same state is harmless.
    # State by arrival (see the module docstring); every other kind by its own time.
    " WHERE CASE WHEN device_latest.kind = 'state'"
    " THEN excluded.received_at >= device_latest.received_at"
    " ELSE excluded.ts >= device_latest.ts END"
    " RETURNING device_id, kind",
)

_TOUCH_DEVICE: Final = ValuesUpdate(
    Device,
    {"id": "device_id", "seen": "last_seen", "skew": "clock_skew_s", "device_type": "device_type"},
    # Last seen only moves forward; skew and type from the device's newest message in the
    # batch (NULL keeps what is there).
    "last_seen = CASE WHEN devices.last_seen IS NULL OR devices.last_seen < v.seen"
    " THEN v.seen ELSE devices.last_seen END,"
    " clock_skew_s = COALESCE(v.skew, devices.clock_skew_s),"
    " device_type = COALESCE(v.device_type, devices.device_type)",
    "devices.device_id = v.id",
)
_SET_ONLINE: Final = ValuesUpdate(
    Device,
    {"id": "device_id", "online": "online", "changed_at": "status_changed_at"},
    "online = v.online, status_changed_at = v.changed_at",
    "devices.device_id = v.id AND (devices.online IS NULL OR devices.online <> v.online)",
)
_MARK_ONLINE: Final = ValuesUpdate(
    Device,
    {"id": "device_id", "changed_at": "status_changed_at"},
    "online = TRUE, status_changed_at = v.changed_at",
    "devices.device_id = v.id AND (devices.online IS NULL OR devices.online = FALSE)"
    " AND (devices.status_changed_at IS NULL OR devices.status_changed_at < v.changed_at)",
)


def message_body(message: Message) -> dict[str, Any]:
    """A message as JSON-ready builtins, datetimes as ISO text (the ``hello`` column);
    ``device_latest.body`` gets the struct itself, which the engine's JSON serializer
    encodes to the same text."""
    body = msgspec.to_builtins(message)
    assert isinstance(body, dict)
    return body


def _order(decoded: DecodedMessage) -> datetime:
    """What decides the newest message of a kind: arrival for ``state``, else its own time."""
    if isinstance(decoded.message, StateMessage):
        return decoded.received_at
    return decoded.message.ts


def record_latest(session: Session, batch: Sequence[DecodedMessage]) -> set[str]:
    """Store each message as its device's latest of its kind unless a newer one is stored.

    Returns the ids of the messages that are now the newest of their kind. The senders'
    ``devices`` rows must exist (flushed) before this is called.
    """
    newest_in_batch: dict[tuple[str, str], DecodedMessage] = {}
    for decoded in batch:
        message = decoded.message
        key = (message.device_id, kind_of(message))
        known = newest_in_batch.get(key)
        # One row per key per statement (PostgreSQL refuses to update a row twice in one).
        if known is None or _order(decoded) >= _order(known):
            newest_in_batch[key] = decoded
    if not newest_in_batch:
        return set()
    rows = [
        {
            "device_id": device_id,
            "kind": kind,
            "ts": decoded.message.ts,
            "received_at": decoded.received_at,
            # The struct itself: the engine's JSON serializer (msgspec) encodes it directly.
            "body": decoded.message,
        }
        # In key order, as every statement here: two collectors sharing the load then lock
        # rows in the same order and wait for each other instead of deadlocking.
        for (device_id, kind), decoded in sorted(newest_in_batch.items(), key=itemgetter(0))
    ]
    written = _UPSERT_LATEST.execute(session.connection(), rows)
    return {newest_in_batch[(device_id, kind)].message.id for device_id, kind in written}


def touch_devices(
    session: Session, batch: Sequence[DecodedMessage], newest: Iterable[str] = ()
) -> None:
    """Advance the senders' ``devices`` rows: last seen, clock skew, device type, and online
    from ``state`` messages among ``newest`` (ids from ``record_latest``)."""
    newest_ids = set(newest)
    by_device: dict[str, dict[str, Any]] = {}
    online_changes: dict[str, dict[str, Any]] = {}
    for decoded in batch:
        message = decoded.message
        row = by_device.setdefault(
            message.device_id,
            {
                "id": message.device_id,
                "seen": decoded.received_at,
                "skew": None,
                "device_type": None,
            },
        )
        if decoded.received_at > row["seen"]:
            row["seen"] = decoded.received_at
        if message.id not in newest_ids:
            continue
        row["skew"] = decoded.clock_skew_s
        if isinstance(message, HelloMessage | InventoryMessage | TelemetryMessage):
            row["device_type"] = message.device_type
        if isinstance(message, StateMessage):
            online_changes[message.device_id] = {
                "id": message.device_id,
                "online": message.status == "online",
                # Arrival, not the message's time: a will's ``ts`` is when its connection
                # began, possibly days before the connection died.
                "changed_at": decoded.received_at,
            }
    if not by_device:
        return
    connection = session.connection()
    _TOUCH_DEVICE.execute(connection, [by_device[key] for key in sorted(by_device)])
    _SET_ONLINE.execute(connection, [online_changes[key] for key in sorted(online_changes)])


def latest_of_kind(kind: str) -> tuple[type[DeviceLatest], ColumnElement[bool]]:
    """``device_latest`` of one kind, to outer-join to ``Device`` in a query:

    ``av, on = latest_of_kind("av"); select(Device.site_id, av.body).outerjoin(av, on)``
    """
    alias = aliased(DeviceLatest, name=f"latest_{kind}")
    return alias, and_(alias.device_id == Device.device_id, alias.kind == kind)


def stored_latest_messages(
    session: Session, sites: Collection[str] | None = None
) -> Iterator[DecodedMessage]:
    """Every device's newest message of each kind, rebuilt as ingest decoded it (the rules
    engine's warm start), or only those of devices at ``sites`` (a partition taken over).
    A row the current wire types cannot read is skipped."""
    query = select(DeviceLatest.kind, DeviceLatest.received_at, DeviceLatest.body)
    if sites is not None:
        query = query.join(Device, Device.device_id == DeviceLatest.device_id).where(
            Device.site_id.in_(sorted(sites))
        )
    rows = session.execute(query).yield_per(1000)
    for kind, received_at, body in rows:
        message_type = KIND_TYPES.get(kind)
        if message_type is None:
            continue
        try:
            message = msgspec.convert(body, message_type)
        except msgspec.ValidationError:
            log.warning("stored latest %s message not readable any more; skipped", kind)
            continue
        topic = Topic(message.site, message.device_id, kind)
        yield DecodedMessage(
            topic, message, received_at, (message.ts - received_at).total_seconds()
        )


def online_states(
    session: Session, device_ids: Iterable[str]
) -> list[tuple[str, bool | None, datetime | None]]:
    """(device, online, status changed at) as the register now holds them: the verdict the
    liveness tracker adopts, so the two never disagree about a device."""
    ids = sorted(set(device_ids))
    if not ids:
        return []
    rows = session.execute(
        select(Device.device_id, Device.online, Device.status_changed_at).where(
            Device.device_id.in_(ids)
        )
    )
    return [(device_id, online, changed_at) for device_id, online, changed_at in rows]


def mark_online(session: Session, seen: dict[str, datetime]) -> None:
    """Devices heard from again after a heartbeat timeout: online from the time of that
    traffic, unless the register holds a newer state (a will that arrived later)."""
    if not seen:
        return
    _MARK_ONLINE.execute(
        session.connection(),
        [{"id": device_id, "changed_at": seen[device_id]} for device_id in sorted(seen)],
    )
