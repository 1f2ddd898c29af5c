"""The device routes: the series endpoint reads the embedded store in buckets."""

from __future__ import annotations

from datetime import timedelta

from campuswatch.collector.tsdb.base import SeriesReader
from campuswatch.collector.tsdb.sqlite_store import SqliteStore
from campuswatch.wire import encode_message
from campuswatch.wire.ids import utc_now
from campuswatch.wire.messages import HealthMessage
from tests.collector.conftest import RunningCollector
from tests.collector.test_ingest_e2e import publish
from tests.support.mosquitto import MosquittoBroker
from tests.support.waiting import wait_until

SITE = "thcs-a"
DEVICE = "pc-1"
STEP_S = 600


def test_series_are_bucket_averages_of_the_device_samples(
    mosquitto: MosquittoBroker, collector: RunningCollector
) -> None:
    now = utc_now().replace(microsecond=0)
    samples = [(now - timedelta(minutes=minutes), float(minutes)) for minutes in range(55, 0, -4)]
    for ts, cpu in samples:
        message = HealthMessage(device_id=DEVICE, site=SITE, ts=ts, cpu_pct=cpu)
        publish(mosquitto, f"cw/v1/{SITE}/{DEVICE}/health", encode_message(message))
    other = HealthMessage(device_id="pc-2", site=SITE, ts=now - timedelta(minutes=3), cpu_pct=99)
    publish(mosquitto, f"cw/v1/{SITE}/pc-2/health", encode_message(other))
    wait_until(lambda: collector.service.ingestor.stats.stored_total >= len(samples) + 1)
    collector.service.tsdb.wait_until_drained(10)

    series = collector.get(
        f"/api/v1/devices/{DEVICE}/series",
        measurement="campus_health",
        field="cpu_pct",
        hours=1,
        step_s=STEP_S,
    )

    buckets: dict[int, list[float]] = {}
    for ts, cpu in samples:
        start = int(ts.timestamp()) // STEP_S * STEP_S * 1000
        buckets.setdefault(start, []).append(cpu)
    assert series["step_s"] == STEP_S
    assert series["times_ms"] == sorted(buckets)
    assert series["values"] == [sum(v) / len(v) for _, v in sorted(buckets.items())]
    assert len(series["times_ms"]) < len(samples)  # bucketed, not raw
    direct = _reader(collector.service.api_context.timeseries).query(
        "campus_health", "cpu_pct", {"device": DEVICE}, step=timedelta(seconds=STEP_S)
    )
    assert direct == list(zip(series["times_ms"], series["values"], strict=True))


def test_series_of_an_unknown_device_is_not_found(collector: RunningCollector) -> None:
    response = collector.api.get(
        "/api/v1/devices/nope/series", params={"measurement": "campus_health", "field": "cpu_pct"}
    )
    assert response.status_code == 404


def _reader(store: SqliteStore) -> SeriesReader:
    """mypy checks here that the embedded store is what the endpoint reads."""
    return store
