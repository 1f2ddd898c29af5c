"""The embedded default time-series store: one SQLite file, no set-up.

Layout (why): a *series* is one (measurement, tags, field) triple, so a sample row is just
``(series_id, ts, value)`` in a ``WITHOUT ROWID`` table keyed by ``(series_id, ts)``: the
smallest row SQLite can hold, one B-tree serving both inserts and range scans, and a
re-sent sample overwrites itself instead of counting twice (the runner retries batches).
Old raw samples are folded into ``rollup_hourly`` (sum/count/min/max per hour) by
``maintain``; queries read both tables so a range spanning the boundary is seamless.

Threads: one writer connection guarded by a lock; every read opens its own connection, and
WAL lets readers run while the writer commits.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import closing, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Final

from campuswatch.collector.tsdb.base import TsdbRejected, TsdbUnavailable
from campuswatch.collector.tsdb.influx import timestamp
from campuswatch.collector.tsdb.points import Point

_HOUR_MS: Final = 3_600_000
_DAY_MS: Final = 24 * _HOUR_MS

_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS series (
    id          INTEGER PRIMARY KEY,
    measurement TEXT NOT NULL,
    field       TEXT NOT NULL,
    tags        TEXT NOT NULL,          -- canonical JSON: sorted keys, no spaces
    series_key  TEXT NOT NULL UNIQUE    -- measurement + field + tags, the identity
);
CREATE INDEX IF NOT EXISTS series_by_measurement_field ON series (measurement, field);
CREATE TABLE IF NOT EXISTS samples (
    series_id INTEGER NOT NULL,
    ts        INTEGER NOT NULL,         -- epoch milliseconds, UTC
    value     REAL    NOT NULL,
    PRIMARY KEY (series_id, ts)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS samples_by_ts ON samples (ts);
CREATE TABLE IF NOT EXISTS rollup_hourly (
    series_id INTEGER NOT NULL,
    ts        INTEGER NOT NULL,         -- start of the hour, epoch milliseconds
    sum       REAL    NOT NULL,
    count     INTEGER NOT NULL,
    min       REAL    NOT NULL,
    max       REAL    NOT NULL,
    PRIMARY KEY (series_id, ts)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS rollup_by_ts ON rollup_hourly (ts);
"""

# Both tables seen as one: raw samples weigh 1, an hourly rollup row weighs its count.
_UNION_SOURCE: Final = """
    SELECT series_id, ts, value, 1 AS weight FROM samples
    UNION ALL
    SELECT series_id, ts, sum / count AS value, count AS weight FROM rollup_hourly
"""


@dataclass(frozen=True, slots=True)
class MaintenanceResult:
    rolled_up_samples: int
    deleted_samples: int
    deleted_rollups: int


def _canonical_tags(tags: Mapping[str, str]) -> str:
    return json.dumps(dict(sorted(tags.items())), separators=(",", ":"), ensure_ascii=False)


def _to_ms(time: datetime | int) -> int:
    return time if isinstance(time, int) else timestamp(time, "ms")


class SqliteStore:
    """Writer (``TimeSeriesWriter``) and reader of the embedded store."""

    def __init__(
        self,
        path: Path,
        *,
        raw_retention_days: float | None = 7.0,
        retention_days: float | None = 400.0,
    ) -> None:
        """``raw_retention_days``: raw samples older than this are kept only as hourly
        averages (None: never down-sample). ``retention_days``: anything older is deleted."""
        self.path = path
        self.raw_retention_days = raw_retention_days
        self.retention_days = retention_days
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._series_ids: dict[tuple[object, ...], int] = {}
        self._writer = self._connect()
        self._writer.execute("PRAGMA journal_mode=WAL")
        self._writer.executescript(_SCHEMA)
        self._closed = False

    def _connect(self) -> sqlite3.Connection:
        # check_same_thread=False: the writer connection is used from the runner's thread
        # and maintain() may run elsewhere; self._lock serialises them.
        connection = sqlite3.connect(self.path, timeout=30.0, check_same_thread=False)
        # FULL: a committed batch survives power loss, which the ingest ack relies on;
        # with batches of ~1000 points the fsync per commit is cheap.
        connection.execute("PRAGMA synchronous=FULL")
        connection.execute("PRAGMA busy_timeout=30000")
        return connection

    @contextmanager
    def _reader(self) -> Iterator[sqlite3.Connection]:
        with closing(sqlite3.connect(self.path, timeout=30.0)) as connection:
            yield connection

    # --- writing -------------------------------------------------------------------------

    def _series_id(
        self, measurement: str, field: str, tags: Mapping[str, str], tags_key: tuple[object, ...]
    ) -> int:
        """``tags_key``: the sorted tag items, computed once per point by the caller."""
        # Looked up for every sample: a tuple key is much cheaper than the canonical JSON.
        cache_key = (measurement, field, tags_key)
        cached = self._series_ids.get(cache_key)
        if cached is not None:
            return cached
        tags_json = _canonical_tags(tags)
        key = f"{measurement}\x1f{field}\x1f{tags_json}"
        self._writer.execute(
            "INSERT OR IGNORE INTO series (measurement, field, tags, series_key)"
            " VALUES (?, ?, ?, ?)",
            (measurement, field, tags_json, key),
        )
        row = self._writer.execute("SELECT id FROM series WHERE series_key = ?", (key,)).fetchone()
        series_id = int(row[0])
        self._series_ids[cache_key] = series_id
        return series_id

    def write(self, points: Sequence[Point]) -> None:
        with self._lock:
            if self._closed:
                raise TsdbUnavailable("SQLite store is closed")
            try:
                with self._writer:  # one transaction per batch
                    rows: list[tuple[int, int, float]] = []
                    for point in points:
                        tags_key = tuple(sorted(point.tags.items()))
                        at_ms = timestamp(point.time, "ms")
                        rows.extend(
                            (
                                self._series_id(point.measurement, name, point.tags, tags_key),
                                at_ms,
                                float(value),
                            )
                            for name, value in point.fields.items()
                        )
                    self._writer.executemany(
                        "INSERT OR REPLACE INTO samples (series_id, ts, value) VALUES (?, ?, ?)",
                        rows,
                    )
            except sqlite3.IntegrityError as error:  # e.g. NaN → NULL into NOT NULL
                self._series_ids.clear()  # ids made in the rolled-back transaction are gone
                raise TsdbRejected(f"SQLite refused a sample: {error}") from error
            except sqlite3.OperationalError as error:  # disk full, locked, I/O error
                self._series_ids.clear()
                raise TsdbUnavailable(f"SQLite write failed: {error}") from error

    def close(self) -> None:
        with self._lock:
            if not self._closed:
                self._closed = True
                self._writer.close()

    # --- reading -------------------------------------------------------------------------

    @staticmethod
    def _series_filter(
        measurement: str, field: str, tags: Mapping[str, str] | None
    ) -> tuple[str, list[object]]:
        clauses = ["measurement = ?", "field = ?"]
        params: list[object] = [measurement, field]
        for key, value in sorted((tags or {}).items()):
            clauses.append("json_extract(tags, ?) = ?")
            params += [f'$."{key}"', value]
        return " AND ".join(clauses), params

    def query(
        self,
        measurement: str,
        field: str,
        tags: Mapping[str, str] | None = None,
        start: datetime | int = 0,
        end: datetime | int | None = None,
        step: timedelta | None = None,
    ) -> list[tuple[int, float]]:
        """Samples of every series matching ``tags`` (a subset match) in ``[start, end)``,
        as ``(epoch ms, value)`` sorted by time.

        With ``step``, samples (of all matching series together) are averaged into buckets
        aligned to multiples of ``step`` since the epoch and stamped with the bucket start;
        hourly rollups count with the weight of the samples they replaced.
        """
        where, params = self._series_filter(measurement, field, tags)
        start_ms = _to_ms(start)
        end_ms = _to_ms(end) if end is not None else 2**62
        source = f"""
            SELECT s.ts, s.value, s.weight FROM ({_UNION_SOURCE}) AS s
            WHERE s.series_id IN (SELECT id FROM series WHERE {where})
              AND s.ts >= ? AND s.ts < ?
        """
        params += [start_ms, end_ms]
        if step is None:
            sql = f"SELECT ts, value FROM ({source}) ORDER BY ts"
        else:
            step_ms = int(step / timedelta(milliseconds=1))
            if step_ms <= 0:
                raise ValueError(f"step must be positive, got {step}")
            sql = f"""
                SELECT (ts / {step_ms}) * {step_ms} AS bucket,
                       SUM(value * weight) / SUM(weight)
                FROM ({source}) GROUP BY bucket ORDER BY bucket
            """
        with self._reader() as connection:
            return [(int(ts), float(value)) for ts, value in connection.execute(sql, params)]

    def latest(
        self, measurement: str, field: str, tags: Mapping[str, str] | None = None
    ) -> tuple[int, float] | None:
        """The newest sample of the matching series (the newest of all if several match)."""
        where, params = self._series_filter(measurement, field, tags)
        sql = f"""
            SELECT s.ts, s.value FROM ({_UNION_SOURCE}) AS s
            WHERE s.series_id IN (SELECT id FROM series WHERE {where})
            ORDER BY s.ts DESC LIMIT 1
        """
        with self._reader() as connection:
            row = connection.execute(sql, params).fetchone()
        return None if row is None else (int(row[0]), float(row[1]))

    def series(self, measurement: str) -> list[tuple[str, dict[str, str]]]:
        """``(field, tags)`` of every series of a measurement, for listings and dashboards."""
        with self._reader() as connection:
            rows = connection.execute(
                "SELECT field, tags FROM series WHERE measurement = ? ORDER BY id", (measurement,)
            ).fetchall()
        return [(str(field), dict(json.loads(tags))) for field, tags in rows]

    # --- maintenance ---------------------------------------------------------------------

    def maintain(self, now: datetime | None = None) -> MaintenanceResult:
        """Fold raw samples older than ``raw_retention_days`` into hourly rollups and delete
        anything older than ``retention_days``. Safe to run at any interval: only whole hours
        are folded, and samples arriving late for a folded hour are merged into it."""
        now_ms = _to_ms(now or datetime.now(UTC))
        rolled = deleted_samples = deleted_rollups = 0
        with self._lock:
            if self._closed:
                raise TsdbUnavailable("SQLite store is closed")
            with self._writer:
                if self.raw_retention_days is not None:
                    cutoff = now_ms - int(self.raw_retention_days * _DAY_MS)
                    cutoff -= cutoff % _HOUR_MS
                    self._writer.execute(
                        f"""
                        INSERT INTO rollup_hourly (series_id, ts, sum, count, min, max)
                        SELECT series_id, (ts / {_HOUR_MS}) * {_HOUR_MS} AS hour,
                               SUM(value), COUNT(*), MIN(value), MAX(value)
                        FROM samples WHERE ts < ? GROUP BY series_id, hour
                        ON CONFLICT (series_id, ts) DO UPDATE SET
                            sum = sum + excluded.sum,
                            count = count + excluded.count,
                            min = MIN(min, excluded.min),
                            max = MAX(max, excluded.max)
                        """,
                        (cutoff,),
                    )
                    rolled = self._writer.execute(
                        "DELETE FROM samples WHERE ts < ?", (cutoff,)
                    ).rowcount
                if self.retention_days is not None:
                    cutoff = now_ms - int(self.retention_days * _DAY_MS)
                    deleted_samples = self._writer.execute(
                        "DELETE FROM samples WHERE ts < ?", (cutoff,)
                    ).rowcount
                    deleted_rollups = self._writer.execute(
                        "DELETE FROM rollup_hourly WHERE ts < ?", (cutoff,)
                    ).rowcount
        return MaintenanceResult(rolled, deleted_samples, deleted_rollups)
