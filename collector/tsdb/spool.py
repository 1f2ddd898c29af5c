"""On-disk spool for batches the store could not take: a SQLite file of chunks, FIFO,
bounded by bytes (oldest chunks dropped and counted), surviving restarts."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Final

import msgspec

from campuswatch.collector.tsdb.points import FieldValue, Point

_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)

# (measurement, tags, fields, epoch µs) — msgpack keeps bool/int/float apart.
_Row = tuple[str, dict[str, str], dict[str, FieldValue], int]
_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(list[tuple[str, dict[str, str], dict[str, FieldValue], int]])


def _encode(points: Sequence[Point]) -> bytes:
    rows: list[_Row] = []
    for point in points:
        time = point.time if point.time.tzinfo is not None else point.time.replace(tzinfo=UTC)
        micros = (time - _EPOCH) // timedelta(microseconds=1)
        rows.append((point.measurement, dict(point.tags), dict(point.fields), micros))
    return _encoder.encode(rows)


def _decode(payload: bytes) -> list[Point]:
    return [
        Point(measurement, tags, fields, _EPOCH + timedelta(microseconds=micros))
        for measurement, tags, fields, micros in _decoder.decode(payload)
    ]


class DiskSpool:
    """FIFO of point batches. ``append`` returns how many points it had to drop to stay
    within ``max_bytes``; thread-safe."""

    def __init__(self, path: Path, max_bytes: int) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        # FULL: a spooled batch is what lets the ingest ack an MQTT message; it must survive
        # a power cut, not just a process crash.
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS chunks ("
            " id INTEGER PRIMARY KEY AUTOINCREMENT, points INTEGER NOT NULL,"
            " bytes INTEGER NOT NULL, payload BLOB NOT NULL)"
        )
        row = self._db.execute(
            "SELECT COUNT(*), COALESCE(SUM(points), 0), COALESCE(SUM(bytes), 0) FROM chunks"
        ).fetchone()
        self._chunks, self._points, self._bytes = int(row[0]), int(row[1]), int(row[2])

    @property
    def depth(self) -> int:
        """Points waiting in the spool."""
        return self._points

    @property
    def size_bytes(self) -> int:
        return self._bytes

    def append(self, points: Sequence[Point]) -> int:
        if not points:
            return 0
        payload = _encode(points)
        if len(payload) > self.max_bytes:
            return len(points)
        dropped = 0
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                while self._bytes + len(payload) > self.max_bytes and self._chunks:
                    oldest = self._db.execute(
                        "SELECT id, points, bytes FROM chunks ORDER BY id LIMIT 1"
                    ).fetchone()
                    self._db.execute("DELETE FROM chunks WHERE id = ?", (oldest[0],))
                    self._chunks -= 1
                    self._points -= int(oldest[1])
                    self._bytes -= int(oldest[2])
                    dropped += int(oldest[1])
                self._db.execute(
                    "INSERT INTO chunks (points, bytes, payload) VALUES (?, ?, ?)",
                    (len(points), len(payload), payload),
                )
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                self._reload_totals()
                raise
            self._chunks += 1
            self._points += len(points)
            self._bytes += len(payload)
        return dropped

    def _reload_totals(self) -> None:
        row = self._db.execute(
            "SELECT COUNT(*), COALESCE(SUM(points), 0), COALESCE(SUM(bytes), 0) FROM chunks"
        ).fetchone()
        self._chunks, self._points, self._bytes = int(row[0]), int(row[1]), int(row[2])

    def peek_oldest(self) -> tuple[int, list[Point]] | None:
        """The oldest chunk's id and points, left in place until ``remove`` confirms it."""
        with self._lock:
            row = self._db.execute("SELECT id, payload FROM chunks ORDER BY id LIMIT 1").fetchone()
        if row is None:
            return None
        try:
            return int(row[0]), _decode(bytes(row[1]))
        except msgspec.DecodeError:
            # A torn or foreign chunk must not block the spool forever: hand it back empty so
            # the caller removes it (and counts nothing it could not read).
            return int(row[0]), []

    def remove(self, chunk_id: int) -> None:
        with self._lock:
            row = self._db.execute(
                "DELETE FROM chunks WHERE id = ? RETURNING points, bytes", (chunk_id,)
            ).fetchone()
            if row is not None:
                self._chunks -= 1
                self._points -= int(row[0])
                self._bytes -= int(row[1])

    def replace(self, chunk_id: int, points: Sequence[Point]) -> None:
        """Put back what is left of a chunk after part of it was written or rejected."""
        payload = _encode(points)
        with self._lock:
            row = self._db.execute(
                "SELECT points, bytes FROM chunks WHERE id = ?", (chunk_id,)
            ).fetchone()
            if row is None:
                return
            self._db.execute(
                "UPDATE chunks SET points = ?, bytes = ?, payload = ? WHERE id = ?",
                (len(points), len(payload), payload, chunk_id),
            )
            self._points += len(points) - int(row[0])
            self._bytes += len(payload) - int(row[1])

    def close(self) -> None:
        with self._lock:
            self._db.close()
