"""The two-method contract every time-series sink implements, and its two failure kinds."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Protocol

from campuswatch.collector.tsdb.points import Point


class TsdbError(Exception):
    """Base of the errors a writer raises."""


class TsdbUnavailable(TsdbError):
    """Transient: connection refused/reset, timeout, HTTP 5xx or 429. Retry the same batch."""


class TsdbRejected(TsdbError):
    """Permanent: the store refused the data itself (HTTP 4xx). Retrying the batch won't help;
    bisect it to find the bad points."""


class TimeSeriesWriter(Protocol):
    """A sink for points. Implementations do no buffering or retrying: ``BufferedWriter``
    (the runner) owns that, so each writer stays a thin protocol adapter."""

    def write(self, points: Sequence[Point]) -> None:
        """Store all of ``points`` or raise ``TsdbUnavailable`` / ``TsdbRejected``."""
        ...

    def close(self) -> None: ...


class SeriesReader(Protocol):
    """Reading back, for the UI's charts and the reports. Only the embedded ``SqliteStore``
    implements it; external stores are read by Grafana."""

    def query(
        self,
        measurement: str,
        field: str,
        tags: Mapping[str, str] | None = None,
        start: datetime | int = 0,
        end: datetime | int | None = None,
        step: timedelta | None = None,
    ) -> list[tuple[int, float]]:
        """``(epoch ms, value)`` in ``[start, end)``; with ``step``, bucket averages stamped
        with the bucket start. ``int`` times are epoch milliseconds."""
        ...
