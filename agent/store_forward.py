"""On-disk store-and-forward queue: what the agent produced but the broker has not acked.

A SQLite file in the state dir (stdlib, crash-safe, no extra dependency). Messages are kept
until the broker's PUBACK, survive agent restarts and power cuts, and are bounded by size:
when full, the *oldest* are dropped and counted (Telegraf's rule — fresh status beats stale).
"""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

import msgspec

_SCHEMA = """
CREATE TABLE IF NOT EXISTS queue (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    topic TEXT NOT NULL,
    payload BLOB NOT NULL,
    retain INTEGER NOT NULL DEFAULT 0,
    size INTEGER NOT NULL,
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""


class QueuedMessage(msgspec.Struct, frozen=True):
    seq: int
    topic: str
    payload: bytes
    retain: bool


class StoreAndForwardQueue:
    """Thread-safe; one writer (probes) and one reader (the sender) share it."""

    def __init__(self, path: Path, max_bytes: int) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        # The queue is read front to back and mostly empty: a 2 MB page cache per PC is waste.
        self._db.execute("PRAGMA cache_size=-256")
        self._db.executescript(_SCHEMA)
        row = self._db.execute("SELECT COALESCE(SUM(size), 0), COUNT(*) FROM queue").fetchone()
        self._bytes, self._depth = int(row[0]), int(row[1])
        self._dropped = self._counter("dropped")

    def _counter(self, name: str) -> int:
        row = self._db.execute("SELECT value FROM counters WHERE name = ?", (name,)).fetchone()
        return int(row[0]) if row else 0

    def put(self, topic: str, payload: bytes, *, retain: bool = False) -> int:
        """Append a message; return how many old messages had to be dropped to make room."""
        return self.append(topic, payload, retain=retain)[1]

    def append(self, topic: str, payload: bytes, *, retain: bool = False) -> tuple[int | None, int]:
        """Append a message; return its ``seq`` (None if refused) and how many were dropped."""
        size = len(payload) + len(topic)
        dropped = 0
        with self._lock:
            if size > self.max_bytes:
                # Making room would empty the queue and still not fit: lose only this one.
                self._dropped += 1
                self._save_dropped(self._dropped)
                return None, 1
            self._db.execute("BEGIN IMMEDIATE")
            try:
                while self._depth and self._bytes + size > self.max_bytes:
                    oldest = self._db.execute(
                        "SELECT seq, size FROM queue ORDER BY seq LIMIT 1"
                    ).fetchone()
                    self._db.execute("DELETE FROM queue WHERE seq = ?", (oldest[0],))
                    self._bytes -= int(oldest[1])
                    self._depth -= 1
                    dropped += 1
                if dropped:
                    self._dropped += dropped
                    self._save_dropped(self._dropped)
                cursor = self._db.execute(
                    "INSERT INTO queue(topic, payload, retain, size, created) VALUES(?,?,?,?,?)",
                    (topic, payload, int(retain), size, time.time()),
                )
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._bytes += size
            self._depth += 1
            assert cursor.lastrowid is not None
            return int(cursor.lastrowid), dropped

    def peek(self, after_seq: int, limit: int) -> list[QueuedMessage]:
        """The oldest messages with ``seq`` greater than ``after_seq``, in order."""
        with self._lock:
            rows = self._db.execute(
                "SELECT seq, topic, payload, retain FROM queue WHERE seq > ? ORDER BY seq LIMIT ?",
                (after_seq, limit),
            ).fetchall()
        return [QueuedMessage(int(r[0]), r[1], bytes(r[2]), bool(r[3])) for r in rows]

    def drop_not_under(self, topic_prefix: str) -> int:
        """Drop (and count) every message whose topic does not start with ``topic_prefix``.

        A cloned disk carries the golden image's queue; after taking its own id the agent
        must never send those messages under the other device's topics.
        """
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                row = self._db.execute(
                    "SELECT COUNT(*), COALESCE(SUM(size), 0) FROM queue "
                    "WHERE substr(topic, 1, ?) != ?",
                    (len(topic_prefix), topic_prefix),
                ).fetchone()
                dropped, size = int(row[0]), int(row[1])
                if dropped:
                    self._db.execute(
                        "DELETE FROM queue WHERE substr(topic, 1, ?) != ?",
                        (len(topic_prefix), topic_prefix),
                    )
                    self._save_dropped(self._dropped + dropped)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._dropped += dropped
            self._bytes -= size
            self._depth -= dropped
            return dropped

    def _save_dropped(self, total: int) -> None:
        self._db.execute(
            "INSERT INTO counters(name, value) VALUES('dropped', ?) "
            "ON CONFLICT(name) DO UPDATE SET value = excluded.value",
            (total,),
        )

    def contains(self, seq: int) -> bool:
        with self._lock:
            return (
                self._db.execute("SELECT 1 FROM queue WHERE seq = ?", (seq,)).fetchone() is not None
            )

    def remove(self, seq: int) -> None:
        """Forget a message the broker acknowledged."""
        with self._lock:
            row = self._db.execute("SELECT size FROM queue WHERE seq = ?", (seq,)).fetchone()
            if row is None:
                return  # already dropped for space, or a duplicate ack
            self._db.execute("DELETE FROM queue WHERE seq = ?", (seq,))
            self._bytes -= int(row[0])
            self._depth -= 1

    @property
    def depth(self) -> int:
        return self._depth

    @property
    def size_bytes(self) -> int:
        return self._bytes

    @property
    def dropped_total(self) -> int:
        return self._dropped

    def close(self) -> None:
        with self._lock:
            self._db.close()
