"""Message ids (UUIDv7, RFC 9562) and UTC timestamps.

UUIDv7 sorts by creation time, so the collector's idempotency table doubles as an
arrival-ordered log, and ids from a store-and-forward backlog keep their original order.
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from datetime import UTC, datetime

_lock = threading.Lock()
_last_ms = 0
_counter = 0


def new_message_id() -> str:
    """A UUIDv7 string; strictly increasing within this process even inside one millisecond."""
    global _last_ms, _counter
    with _lock:
        now_ms = time.time_ns() // 1_000_000
        if now_ms <= _last_ms:
            # Same (or backwards-stepped) millisecond: keep the old timestamp and count up in
            # the 12-bit rand_a field so ordering survives; borrow a millisecond on overflow.
            _counter += 1
            if _counter > 0xFFF:
                _last_ms += 1
                _counter = 0
            now_ms = _last_ms
        else:
            _last_ms = now_ms
            _counter = int.from_bytes(os.urandom(2), "big") & 0x3FF  # leave room to count up
        counter = _counter
    rand_b = int.from_bytes(os.urandom(8), "big") & ((1 << 62) - 1)
    value = (now_ms & ((1 << 48) - 1)) << 80
    value |= 0x7 << 76
    value |= counter << 64
    value |= 0b10 << 62
    value |= rand_b
    return str(uuid.UUID(int=value))


def message_id_time(message_id: str) -> datetime:
    """The creation time a UUIDv7 carries (millisecond precision)."""
    value = uuid.UUID(message_id).int
    return datetime.fromtimestamp((value >> 80) / 1000, tz=UTC)


def utc_now() -> datetime:
    return datetime.now(UTC)
