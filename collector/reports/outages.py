"""School Internet outages in a period, from the time-series store.

Source: the ``campus_net`` measurement, field ``internet_ok`` (1/0), written for every
``net`` report an agent sends (every 60 s by default), tagged with the school's site id.
The store averages the samples of all devices of a site into fixed buckets; a bucket whose
average is 0 means every device that reported in it found the Internet unreachable. Agents
keep reports during an outage and replay them with their own timestamps once the link is
back, so the outage is seen even though nothing reached the collector while it lasted.

Why not ``campus_state`` (online/offline): lab PCs are shut down every evening, and the
stored point keeps only 0/1, not whether the reason was a clean shutdown or a lost link, so
every night would count as an outage. An empty bucket (nobody reported: night, holiday,
power cut) is "unknown" and never counted as an outage.

Down buckets separated by at most ``max_gap`` of silence form one outage; an "up" bucket
ends it. Its length is from the first down bucket's start to the last one's end.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final, Protocol

from campuswatch.collector.tsdb.points import MEASUREMENT_NET

DEFAULT_BUCKET: Final = timedelta(minutes=5)
DEFAULT_MAX_GAP: Final = timedelta(minutes=15)


class SeriesReader(Protocol):
    """What is read from the store; ``SqliteStore`` has exactly this method."""

    def query(
        self,
        measurement: str,
        field: str,
        tags: Mapping[str, str] | None = None,
        start: datetime | int = 0,
        end: datetime | int | None = None,
        step: timedelta | None = None,
    ) -> list[tuple[int, float]]: ...


@dataclass(frozen=True, slots=True)
class Outage:
    site_id: str
    start_ms: int
    end_ms: int

    @property
    def minutes(self) -> float:
        return (self.end_ms - self.start_ms) / 60_000


def site_outages(
    reader: SeriesReader,
    site_id: str,
    start: datetime,
    end: datetime,
    *,
    bucket: timedelta = DEFAULT_BUCKET,
    max_gap: timedelta = DEFAULT_MAX_GAP,
) -> list[Outage]:
    """Outages of one site's Internet link within ``[start, end)``, clipped to it."""
    step_ms = int(bucket / timedelta(milliseconds=1))
    gap_ms = int(max_gap / timedelta(milliseconds=1))
    buckets = reader.query(
        MEASUREMENT_NET, "internet_ok", tags={"site": site_id}, start=start, end=end, step=bucket
    )
    start_ms = int(start.timestamp() * 1000)
    end_ms = int(end.timestamp() * 1000)
    outages: list[Outage] = []
    open_start: int | None = None
    open_end = 0
    for bucket_start, average in buckets:
        down = average == 0.0
        if open_start is not None and (not down or bucket_start - open_end > gap_ms):
            outages.append(Outage(site_id, max(open_start, start_ms), min(open_end, end_ms)))
            open_start = None
        if down:
            if open_start is None:
                open_start = bucket_start
            open_end = bucket_start + step_ms
    if open_start is not None:
        outages.append(Outage(site_id, max(open_start, start_ms), min(open_end, end_ms)))
    return outages
