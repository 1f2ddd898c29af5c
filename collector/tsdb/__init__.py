"""Time-series storage: the point scheme, the writers (SQLite, InfluxDB 1.x/2.x/3.x,
VictoriaMetrics) and the buffered runner in front of them. See docs/timeseries.md."""

from campuswatch.collector.tsdb.base import (
    TimeSeriesWriter,
    TsdbError,
    TsdbRejected,
    TsdbUnavailable,
)
from campuswatch.collector.tsdb.buffer import BufferedWriter, BufferStats
from campuswatch.collector.tsdb.influx import (
    Influx1Writer,
    Influx2Writer,
    encode_line_protocol,
)
from campuswatch.collector.tsdb.points import Point, points_from_message
from campuswatch.collector.tsdb.sqlite_store import SqliteStore
from campuswatch.collector.tsdb.urls import writer_from_url

__all__ = [
    "BufferStats",
    "BufferedWriter",
    "Influx1Writer",
    "Influx2Writer",
    "Point",
    "SqliteStore",
    "TimeSeriesWriter",
    "TsdbError",
    "TsdbRejected",
    "TsdbUnavailable",
    "encode_line_protocol",
    "points_from_message",
    "writer_from_url",
]
