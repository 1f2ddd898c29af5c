"""Prometheus metrics computed at scrape time from the collector's own state.

A custom collector (prometheus_client's ``Collector`` protocol) reads counters kept by the
ingest runner, the time-series buffer and the liveness tracker, so nothing is double-counted
and tests use their own ``CollectorRegistry`` (no global registry).
Names: ``campuswatch_<subsystem>_<name>_<unit>``; counters end in ``_total``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector, CollectorRegistry
from sqlalchemy import func, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from campuswatch.collector.db.models import Device
from campuswatch.collector.ingest import INGEST_REJECT_REASONS, Ingestor
from campuswatch.collector.liveness import LivenessTracker
from campuswatch.collector.register.device_state import latest_of_kind
from campuswatch.collector.tsdb.buffer import BufferedWriter
from campuswatch.wire.ids import utc_now

log = logging.getLogger(__name__)


@dataclass
class MetricSources:
    ingestor: Ingestor
    tsdb: BufferedWriter
    liveness: LivenessTracker
    sessions: sessionmaker[Session]
    extra: list[Callable[[], Iterator[Metric]]]


class CampusWatchCollector(Collector):
    def __init__(self, sources: MetricSources) -> None:
        self.sources = sources

    def collect(self) -> Iterator[Metric]:
        yield from self._ingest()
        yield from self._tsdb()
        yield from self._liveness()
        yield from self._antivirus()
        for extra in self.sources.extra:
            yield from extra()

    def _ingest(self) -> Iterator[Metric]:
        stats = self.sources.ingestor.stats
        received = CounterMetricFamily(
            "campuswatch_ingest_messages_received", "MQTT messages received", labels=[]
        )
        received.add_metric([], stats.received_total)
        yield received
        stored = CounterMetricFamily(
            "campuswatch_ingest_messages_stored",
            "Messages stored (first delivery), by kind",
            labels=["kind"],
        )
        for kind, count in sorted(stats.messages_by_kind.items()):
            stored.add_metric([kind], count)
        yield stored
        duplicates = CounterMetricFamily(
            "campuswatch_ingest_duplicates", "Redelivered messages ignored by id"
        )
        duplicates.add_metric([], stats.duplicates_total)
        yield duplicates
        rejected = CounterMetricFamily(
            "campuswatch_ingest_rejected",
            "Messages rejected (dead-lettered), by reason",
            labels=["reason"],
        )
        for reason in INGEST_REJECT_REASONS:
            rejected.add_metric([reason], stats.rejected_total.get(reason, 0))
        yield rejected
        sink_errors = CounterMetricFamily(
            "campuswatch_ingest_sink_errors",
            "Messages a sink failed on (dead-lettered as sink_error), by sink",
            labels=["sink"],
        )
        for name in [*(sink.name for sink in self.sources.ingestor.sinks), "after_commit"]:
            sink_errors.add_metric([name], stats.sink_errors_total.get(name, 0))
        yield sink_errors
        pending = GaugeMetricFamily(
            "campuswatch_ingest_queue_messages", "Messages received but not yet stored"
        )
        pending.add_metric([], self.sources.ingestor.pending)
        yield pending
        batch = CounterMetricFamily(
            "campuswatch_ingest_batch_seconds", "Time spent storing batches"
        )
        batch.add_metric([], stats.batch_seconds_total)
        yield batch
        if stats.last_batch_at is not None:
            # An alert on time() - this catches a stalled ingest however it stalled.
            last_batch = GaugeMetricFamily(
                "campuswatch_ingest_last_batch_timestamp_seconds",
                "Unix time the last batch was stored",
            )
            last_batch.add_metric([], stats.last_batch_at)
            yield last_batch
        failures = CounterMetricFamily(
            "campuswatch_ingest_store_failures",
            "Attempts to store a batch that failed (e.g. the database away); each is retried",
        )
        failures.add_metric([], stats.store_failures_total)
        yield failures
        failing = GaugeMetricFamily(
            "campuswatch_ingest_store_failing",
            "1 while a batch cannot be stored and is being retried (nothing is acknowledged)",
        )
        failing.add_metric([], 0 if stats.failing_since is None else 1)
        yield failing

    def _tsdb(self) -> Iterator[Metric]:
        stats = self.sources.tsdb.stats()
        for name, value, text in (
            ("points_written", stats.points_written_total, "Points written to the store"),
            ("points_dropped", stats.points_dropped_total, "Points dropped (buffer+spool full)"),
            ("points_rejected", stats.points_rejected_total, "Points the store refused"),
            ("write_errors", stats.write_errors_total, "Failed write attempts"),
        ):
            counter = CounterMetricFamily(f"campuswatch_tsdb_{name}", text)
            counter.add_metric([], value)
            yield counter
        for name, value, text in (
            ("buffer_points", stats.buffer_depth, "Points waiting in memory"),
            ("spool_points", stats.spool_depth, "Points waiting in the disk spool"),
        ):
            gauge = GaugeMetricFamily(f"campuswatch_tsdb_{name}", text)
            gauge.add_metric([], value)
            yield gauge
        histogram = HistogramMetricFamily(
            "campuswatch_tsdb_write_latency_seconds", "Latency of successful writes"
        )
        buckets = [
            (repr(bound), count)
            for bound, count in stats.write_latency_buckets
            if bound != float("inf")
        ]
        buckets.append(("+Inf", stats.write_latency_count))
        histogram.add_metric([], buckets, stats.write_latency_sum_s)
        yield histogram

    def _liveness(self) -> Iterator[Metric]:
        gauge = GaugeMetricFamily(
            "campuswatch_devices",
            "Devices by site, type and liveness status",
            labels=["site", "device_type", "status"],
        )
        liveness = self.sources.liveness
        by_type = liveness.by_type(utc_now())
        for (site, device_type, status), count in sorted(by_type.items()):
            gauge.add_metric([site, device_type, status], count)
        yield gauge
        unreachable = GaugeMetricFamily(
            "campuswatch_site_unreachable",
            "1 when every device of a site went silent",
            labels=["site"],
        )
        for site_status in liveness.summarise_sites(by_type).values():
            unreachable.add_metric([site_status.site_id], 1 if site_status.unreachable else 0)
        yield unreachable

    def _antivirus(self) -> Iterator[Metric]:
        """Coverage by site from the latest ``av`` message of each PC (the plans' KPI)."""
        coverage = GaugeMetricFamily(
            "campuswatch_av_devices",
            "PCs by site and antivirus status (latest report)",
            labels=["site", "status"],
        )
        try:
            with self.sources.sessions() as session:
                counts = antivirus_coverage(session)
        except SQLAlchemyError:
            # The database away must not take the other metrics (the outage's own) with it.
            log.warning("antivirus coverage left out of /metrics: database unavailable")
            return
        for (site_id, status), count in sorted(counts.items()):
            coverage.add_metric([site_id, status], count)
        yield coverage


def antivirus_coverage(session: Session) -> dict[tuple[str, str], int]:
    """(site, status of the latest ``av`` report, or ``unreported``) → PCs and servers."""
    av, of_device = latest_of_kind("av")
    # Counted by the database: a district's 100,000 devices' reports are not read into
    # Python at every scrape.
    reports = (
        select(
            Device.site_id.label("site_id"),
            func.coalesce(av.body["status"].as_string(), "unreported").label("status"),
        )
        .outerjoin(av, of_device)
        .where(Device.device_type.in_(("pc", "server")))
        .subquery()
    )
    rows = session.execute(
        select(reports.c.site_id, reports.c.status, func.count()).group_by(
            reports.c.site_id, reports.c.status
        )
    )
    return {(site_id, status): count for site_id, status, count in rows}


def build_registry(sources: MetricSources) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(CampusWatchCollector(sources))
    return registry
