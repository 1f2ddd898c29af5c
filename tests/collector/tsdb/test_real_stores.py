"""Writers and the buffered runner against real VictoriaMetrics and InfluxDB 1.6."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from campuswatch.collector.tsdb.base import TsdbRejected, TsdbUnavailable
from campuswatch.collector.tsdb.buffer import BufferedWriter
from campuswatch.collector.tsdb.influx import Influx1Writer, Influx2Writer
from campuswatch.collector.tsdb.points import Point, points_from_message
from campuswatch.collector.tsdb.urls import writer_from_url
from campuswatch.wire.messages import AvMessage, AvProduct
from tests.support.influxdb import InfluxDb1Server
from tests.support.victoriametrics import VictoriaMetricsServer

pytestmark = pytest.mark.e2e

WAIT_S = 60.0
NOW = datetime.now(UTC).replace(microsecond=0)


def sample(index: int, device: str = "pc-1") -> Point:
    return Point(
        "campus_health",
        {"site": "school-1", "device": device},
        {"cpu_pct": float(index), "queue_depth": index},
        NOW - timedelta(minutes=30) + timedelta(milliseconds=index),
    )


def vm_sample_count(vm: VictoriaMetricsServer, match: str) -> int:
    return sum(len(series["values"]) for series in vm.export(match))


@pytest.fixture
def vm_buffered(victoriametrics: VictoriaMetricsServer, tmp_path: Path) -> Iterator[BufferedWriter]:
    writer = writer_from_url(f"victoriametrics://127.0.0.1:{victoriametrics.port}", tmp_path)
    buffered = BufferedWriter(
        writer,
        spool_path=tmp_path / "spool.db",
        batch_size=500,
        flush_interval_s=0.05,
        max_buffer_points=2000,
        retry_initial_s=0.05,
        retry_max_s=0.5,
    )
    yield buffered
    buffered.close()


def test_vm_receives_points_from_messages(
    victoriametrics: VictoriaMetricsServer, vm_buffered: BufferedWriter
) -> None:
    message = AvMessage(
        site="school-1",
        device_id="pc-9",
        ts=NOW - timedelta(seconds=5),
        status="protected",
        products=[AvProduct(name="Windows Defender", source="defender", signature_age_hours=2.0)],
    )
    vm_buffered.submit(points_from_message(message, NOW))
    assert vm_buffered.flush(WAIT_S)
    victoriametrics.force_flush()
    # At the sample's own time: NOW is fixed at import, and in a long run "now" can be
    # further from it than the instant query's 5-minute look-back.
    at_s = NOW.timestamp()
    result = victoriametrics.query('campus_av_sig_age_hours{site="school-1"}', time_s=at_s)
    assert len(result) == 1
    assert result[0]["metric"]["product"] == "Windows Defender"
    assert float(result[0]["value"][1]) == 2.0
    coverage = victoriametrics.query(
        "sum(campus_av_status_protected) / count(campus_av_status_protected)", time_s=at_s
    )
    assert float(coverage[0]["value"][1]) == 1.0


def test_vm_outage_loses_nothing_and_duplicates_nothing(
    victoriametrics: VictoriaMetricsServer, vm_buffered: BufferedWriter
) -> None:
    total = 0
    vm_buffered.submit([sample(i) for i in range(300)])
    total += 300
    assert vm_buffered.flush(WAIT_S)
    victoriametrics.stop()
    for _ in range(10):
        vm_buffered.submit([sample(total + i) for i in range(700)])
        total += 700
        assert vm_buffered.flush(WAIT_S)  # during the outage: spooled
    stats = vm_buffered.stats()
    assert stats.spool_depth > 0
    assert stats.write_errors_total > 0
    victoriametrics.start()
    vm_buffered.submit([sample(total + i) for i in range(100)])
    total += 100
    assert vm_buffered.wait_until_drained(WAIT_S)
    stats = vm_buffered.stats()
    assert stats.points_dropped_total == 0
    assert stats.points_rejected_total == 0
    assert stats.points_written_total == total
    assert vm_sample_count(victoriametrics, 'campus_health_cpu_pct{device="pc-1"}') == total
    assert vm_sample_count(victoriametrics, 'campus_health_queue_depth{device="pc-1"}') == total


def test_vm_down_from_the_start_raises_unavailable(tmp_path: Path) -> None:
    from tests.support.ports import free_port

    writer = Influx2Writer(
        f"http://127.0.0.1:{free_port()}", token="t", org="o", bucket="b", timeout_s=2
    )
    with pytest.raises(TsdbUnavailable):
        writer.write([sample(0)])
    writer.close()


def test_influx1_write_and_influxql_query_back(influxdb1: InfluxDb1Server, tmp_path: Path) -> None:
    writer = writer_from_url(influxdb1.writer_url, tmp_path)
    tricky = Point(
        "campus_telemetry",
        {"site": "school 1,a=b", "device": "cam=1", "device_type": "camera"},
        {"temp_c": 21.25, "on": True, "count": 7},
        NOW,
    )
    writer.write([sample(i) for i in range(50)] + [tricky])
    series = influxdb1.query('SELECT count("cpu_pct") FROM "campus_health"')
    assert series[0]["values"][0][1] == 50
    series = influxdb1.query(
        """SELECT "temp_c", "on", "count" FROM "campus_telemetry" WHERE "site" = 'school 1,a=b' """
        """AND "device" = 'cam=1'"""
    )
    assert series[0]["values"][0][1:] == [21.25, True, 7]
    writer.close()


def test_influx1_type_conflict_is_rejected_and_isolated(
    influxdb1: InfluxDb1Server, tmp_path: Path
) -> None:
    writer = Influx1Writer(influxdb1.url, influxdb1.database)
    writer.write([sample(0)])  # queue_depth is now an integer field
    conflicting = Point(
        "campus_health", {"site": "school-1", "device": "pc-2"}, {"queue_depth": 1.5}, NOW
    )
    with pytest.raises(TsdbRejected):
        writer.write([conflicting])
    buffered = BufferedWriter(writer, spool_path=tmp_path / "spool.db", flush_interval_s=0.05)
    good = [sample(i, device="pc-3") for i in range(20)]
    buffered.submit([*good[:7], conflicting, *good[7:]])
    assert buffered.flush(WAIT_S)
    stats = buffered.stats()
    buffered.close()
    assert stats.points_rejected_total == 1
    assert stats.points_written_total == 20
    series = influxdb1.query(
        """SELECT count("cpu_pct") FROM "campus_health" WHERE "device" = 'pc-3'"""
    )
    assert series[0]["values"][0][1] == 20


def test_influx1_missing_database_is_an_outage_not_a_rejection(
    influxdb1: InfluxDb1Server,
) -> None:
    writer = Influx1Writer(influxdb1.url, "no_such_db")
    with pytest.raises(TsdbUnavailable):
        writer.write([sample(0)])
    writer.close()
