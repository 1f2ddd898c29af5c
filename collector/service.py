"""The running collector: builds every part from settings, starts and stops them in order."""

from __future__ import annotations

import gc
import logging
import threading
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session, sessionmaker

from campuswatch.collector.alerting import Alerting
from campuswatch.collector.alerts.policy import AlertPolicy
from campuswatch.collector.api.context import ApiContext
from campuswatch.collector.db.access import hash_token
from campuswatch.collector.db.engine import make_engine, session_factory, upgrade
from campuswatch.collector.db.housekeeping import prune_dead_letters, prune_processed
from campuswatch.collector.db.models import ApiToken, Device
from campuswatch.collector.enrolment.service import EnrolmentService
from campuswatch.collector.forward.settings import ForwardingSettings, destination_address
from campuswatch.collector.ingest import BatchSink, Ingestor
from campuswatch.collector.liveness import LivenessTracker
from campuswatch.collector.metrics import MetricSources, build_registry
from campuswatch.collector.ownership import OwnedConnections
from campuswatch.collector.register.assets import describe_site_cycle, find_site_cycles
from campuswatch.collector.reports.schedule import default_archive_dir
from campuswatch.collector.reports.scheduler import ReportScheduler
from campuswatch.collector.settings import CollectorSettings
from campuswatch.collector.sinks import RegisterSink
from campuswatch.collector.tsdb.buffer import BufferedWriter
from campuswatch.collector.tsdb.sqlite_store import SqliteStore
from campuswatch.collector.tsdb.urls import writer_from_url
from campuswatch.wire.codec import encode_message
from campuswatch.wire.ids import utc_now
from campuswatch.wire.messages import CommandMessage
from campuswatch.wire.mqtt import MqttConnection, ReceivedMessage, TlsOptions, parse_broker_url
from campuswatch.wire.topics import build_topic, subscription

log = logging.getLogger(__name__)
# A batch is stamped when received and committed a little later: re-read that much of the
# past at each liveness refresh so another collector's late commit is not missed.
LIVENESS_SYNC_OVERLAP = timedelta(seconds=30)


def log_forwarding_destinations(forwarding: ForwardingSettings | None) -> None:
    """One line per active SOC destination, or a warning that alerts stay local."""
    active = [entry for entry in (forwarding.destinations if forwarding else []) if entry.enabled]
    if not active:
        log.warning("forwarding: no destinations configured; alerts stay local")
        return
    for entry in active:
        log.info(
            "forwarding: destination %s (%s) to %s",
            entry.name,
            entry.type,
            destination_address(entry),
        )


REPORT_START_DELAY_S = 300.0
"""The first report pass waits out the collector's start (backlog, sim connecting)."""
BOOTSTRAP_TOKEN_NAME = "bootstrap-admin (CW_ADMIN_TOKEN)"


def set_gc_young_threshold(allocations: int) -> None:
    """Process-wide (one collector runs per process): how many allocations between two
    looks for reference cycles among new objects (``CollectorSettings.gc_young_threshold``;
    docs/scale.md has the measurements)."""
    _, middle, old = gc.get_threshold()
    gc.set_threshold(allocations, middle, old)


class CollectorService:
    def __init__(self, settings: CollectorSettings) -> None:
        self.settings = settings
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        self.engine = make_engine(settings.register_url())
        upgrade(self.engine)
        self.sessions: sessionmaker[Session] = session_factory(self.engine)
        self._bootstrap_admin_token()
        self._report_site_cycles()
        self.liveness = LivenessTracker(settings.liveness)
        self._liveness_synced_at: datetime = utc_now()
        self._seed_liveness()
        self.timeseries_writer = writer_from_url(
            settings.tsdb,
            settings.data_dir,
            raw_retention_days=settings.tsdb_raw_retention_days,
            retention_days=settings.tsdb_retention_days,
        )
        self._timeseries_maintained_at: datetime | None = None
        self.tsdb = BufferedWriter(
            self.timeseries_writer, spool_path=settings.data_dir / "tsdb-spool.sqlite"
        )
        self.register_sink = RegisterSink(self.liveness)
        self.alerting = Alerting(
            self.sessions,
            rules_dir=settings.rules_dir,
            forwarding_config=settings.forwarding or settings.forwarding_config,
            collector_id=settings.collector_id,
            policy=AlertPolicy(
                group_wait=timedelta(seconds=settings.alert_group_wait_s),
                update_interval=timedelta(seconds=settings.alert_update_interval_s),
            ),
        )
        # Read again only to say at start what is forwarded where (Alerting has already
        # refused a bad file): a collector that forwards nothing must say so.
        self.forwarding = settings.forwarding_settings()
        self.sinks: list[BatchSink] = [self.register_sink, self.alerting]
        self.enrolment = EnrolmentService(
            self.sessions,
            broker_dir=settings.broker_dir,
            agent_broker_url=settings.agent_broker_url,
        )
        self.extra_metrics: list[Callable[[], Any]] = [
            self.alerting.metrics,
            self.enrolment.metrics,
        ]
        broker = parse_broker_url(settings.broker)
        share = settings.share_group
        topic_filter = subscription()
        if share:
            topic_filter = f"$share/{share}/{topic_filter}"

        login: dict[str, Any] = {
            "username": settings.broker_username,
            "password": (
                settings.broker_password.get_secret_value() if settings.broker_password else None
            ),
            "tls": TlsOptions(ca_file=settings.broker_ca_file),
        }

        # Every connection together may hold no more unacknowledged messages than the ingest
        # queue takes, so paho's thread hands over without waiting (MQTT 5 Receive Maximum).
        connections = len(settings.ownership.partitions) if settings.ownership else 1
        receive_maximum = max(1, min(65_535, settings.max_pending_messages // connections))

        def persistent(
            client_id: str,
            on_message: Callable[[ReceivedMessage], None],
            on_disconnect: Callable[[str], None] | None = None,
        ) -> MqttConnection:
            return MqttConnection(
                client_id,
                broker,
                **login,
                manual_ack=True,
                # A persistent session: while the collector restarts, the broker keeps
                # what arrives for it, so a collector restart loses nothing.
                clean_start=False,
                session_expiry_s=7 * 24 * 3600,
                max_inflight=1000,
                receive_maximum=receive_maximum,
                on_message=on_message,
                on_disconnect=on_disconnect,
            )

        def connect(on_message: Callable[[ReceivedMessage], None]) -> MqttConnection:
            if settings.ownership is None:
                return persistent(f"cw-{settings.collector_id}", on_message)
            # One persistent session per partition this collector holds the lock of.
            return OwnedConnections(
                settings.ownership,
                collector_id=settings.collector_id,
                register_url=settings.register_url(),
                broker=broker,
                partition_connection=persistent,
                on_message=on_message,
                on_acquire=self.alerting.restore_state,
                on_release=self.alerting.forget_sites,
                **login,
            )

        self.ingestor = Ingestor(
            connect,
            self.sessions,
            self.tsdb,
            self.sinks,
            topic_filter=topic_filter,
            batch_size=settings.batch_size,
            batch_wait_s=settings.batch_wait_s,
            max_pending=settings.max_pending_messages,
        )
        if isinstance(self.ingestor.connection, OwnedConnections):
            self.extra_metrics.append(self.ingestor.connection.metrics)
        self.registry = build_registry(
            MetricSources(
                self.ingestor, self.tsdb, self.liveness, self.sessions, self.extra_metrics
            )
        )
        self.api_context = ApiContext(
            settings=settings,
            sessions=self.sessions,
            liveness=self.liveness,
            registry=self.registry,
            send_command=self.send_command,
            timeseries=(
                self.timeseries_writer if isinstance(self.timeseries_writer, SqliteStore) else None
            ),
            health_checks={
                "broker": self._broker_health,
                "tsdb": self._tsdb_health,
                "ingest": self._ingest_health,
            },
            extras={
                "alert_manager": self.alerting.manager,
                "enrolment": self.enrolment,
                # Notifications are already in the outbox (same transaction); just wake
                # the forwarders.
                "alert_notify": lambda _notifications: self.alerting.forwarder.wake(),
            },
        )
        self.reports: ReportScheduler | None = None
        if settings.report_schedule_interval_s > 0:
            self.reports = ReportScheduler(
                self.sessions,
                default_archive_dir(settings.data_dir),
                series=self.timeseries_writer
                if isinstance(self.timeseries_writer, SqliteStore)
                else None,
                interval_s=settings.report_schedule_interval_s,
                start_delay_s=REPORT_START_DELAY_S,
                # Everything, and each district for its education office and SOC.
                site_levels=("province", "district"),
            )
        self._stop = threading.Event()
        self._housekeeper = threading.Thread(
            target=self._housekeeping_loop, name="housekeeping", daemon=True
        )

    # --- lifecycle ---------------------------------------------------------------------

    def start(self) -> None:
        set_gc_young_threshold(self.settings.gc_young_threshold)
        if self.reports is not None:
            self.reports.start()
        # With [ownership] the engine is warmed per partition as this collector takes it.
        self.alerting.restore_state(() if self.settings.ownership else None)
        self._warn_sites_in_no_partition()
        self.alerting.start()
        log_forwarding_destinations(self.forwarding)
        self.ingestor.start()
        self._housekeeper.start()
        log.info(
            "collector %s: broker %s, register %s, time series %s",
            self.settings.collector_id,
            self.settings.broker,
            self.engine.url.render_as_string(hide_password=True),
            type(self.timeseries_writer).__name__,
        )

    def stop(self) -> None:
        if self._stop.is_set():
            return
        self._stop.set()
        self.ingestor.stop()
        self.alerting.stop()
        self.tsdb.close()
        # A report pass in progress reads the register: let it finish, but not hold Ctrl-C
        # for the minute a full pass of PDFs can take.
        if self.reports is not None and not self.reports.stop(timeout_s=20):
            log.warning("report generation still running at shutdown; abandoned")
        self.timeseries_writer.close()
        self.engine.dispose()

    # --- pieces ------------------------------------------------------------------------

    def send_command(self, command: CommandMessage) -> bool:
        topic = build_topic(command.site, command.device_id, "cmd")
        return self.ingestor.connection.publish(topic, encode_message(command), qos=1) is not None

    def _bootstrap_admin_token(self) -> None:
        token = self.settings.admin_token
        if token is None:
            return
        digest = hash_token(token.get_secret_value())
        with self.sessions() as session, session.begin():
            existing = session.scalar(select(ApiToken).where(ApiToken.token_hash == digest))
            if existing is None:
                session.add(ApiToken(name=BOOTSTRAP_TOKEN_NAME, token_hash=digest, role="admin"))

    def _warn_sites_in_no_partition(self) -> None:
        """With ``[ownership]`` a school in no partition is heard by no collector: say so."""
        ownership = self.settings.ownership
        if ownership is None:
            return
        covered = {site for partition in ownership.partitions for site in partition.sites}
        with self.sessions() as session:
            sites = set(session.scalars(select(Device.site_id).distinct()))
        missing = sorted(sites - covered)
        if missing:
            log.error(
                "ownership: %d sites with devices are in no partition, so no collector hears "
                "them: %s%s; add them to a partition of group %s",
                len(missing),
                ", ".join(missing[:20]),
                " …" if len(missing) > 20 else "",
                ownership.group,
            )

    def _report_site_cycles(self) -> None:
        """A cycle stored before they were refused (or written by hand) is named at start;
        /healthz keeps naming it (``site_tree``) until someone re-parents a site on it."""
        with self.sessions() as session:
            cycles = find_site_cycles(session)
        for cycle in cycles:
            log.error(
                "the site tree has a cycle: %s; scoped accounts on it see every site below "
                "it, re-parent one of these sites (PUT /api/v1/sites/{id})",
                describe_site_cycle(cycle),
            )

    def _refresh_liveness(self, now: datetime) -> None:
        """Adopt what other collectors on this register have heard.

        Collectors that share one register but not one broker (a district each, docs/scale.md)
        hear disjoint devices: without this, each would show the others' devices as unknown
        and, after a heartbeat timeout, write them offline while they are talking. Read are
        the state changes since the last pass, and, before a timeout, the register's last
        contact of the devices due: a few rows a pass, not every device's every message."""
        since = self._liveness_synced_at - LIVENESS_SYNC_OVERLAP
        self._liveness_synced_at = now
        columns = (
            Device.device_id,
            Device.site_id,
            Device.device_type,
            Device.online,
            Device.last_seen,
            Device.status_changed_at,
        )
        with self.sessions() as session:
            rows = list(session.execute(select(*columns).where(Device.status_changed_at >= since)))
            self.liveness.adopt([tuple(row) for row in rows])  # type: ignore[misc]
            overdue = self.liveness.overdue(now)
            for start in range(0, len(overdue), 1000):
                chunk = overdue[start : start + 1000]
                rows = list(session.execute(select(*columns).where(Device.device_id.in_(chunk))))
                self.liveness.adopt([tuple(row) for row in rows])  # type: ignore[misc]

    def _seed_liveness(self) -> None:
        self._liveness_synced_at = utc_now()
        with self.sessions() as session:
            rows = session.execute(
                select(
                    Device.device_id,
                    Device.site_id,
                    Device.device_type,
                    Device.online,
                    Device.last_seen,
                )
            ).all()
        self.liveness.load([tuple(row) for row in rows])  # type: ignore[misc]

    def _broker_health(self) -> tuple[bool, str]:
        connection = self.ingestor.connection
        if connection.connected:
            return True, "ok"
        return False, f"not connected: {connection.last_error or 'connecting'}"

    def _tsdb_health(self) -> tuple[bool, str]:
        stats = self.tsdb.stats()
        if stats.spool_depth:
            return False, f"store unreachable, {stats.spool_depth} points spooled"
        return True, "ok"

    def _ingest_health(self) -> tuple[bool, str]:
        stats = self.ingestor.stats
        since = stats.failing_since
        if since is None:
            return True, "ok"
        return False, (
            f"cannot store for {time.time() - since:.0f} s, retrying "
            f"({self.ingestor.pending} messages waiting): {stats.last_error}"
        )

    def housekeeping(self) -> None:
        now = utc_now()
        self._refresh_liveness(now)
        changes = self.liveness.expire(now)
        with self.sessions() as session, session.begin():
            # One UPDATE per 500 timed-out devices, not an ORM load and write each: a
            # collector that fell behind times out thousands at once, and the SQLite write
            # lock this holds stalls ingest meanwhile.
            by_time: dict[datetime, list[str]] = {}
            for change in changes:
                by_time.setdefault(change.at, []).append(change.device_id)
            for at, device_ids in by_time.items():
                for start in range(0, len(device_ids), 500):
                    session.execute(
                        update(Device)
                        .where(
                            Device.device_id.in_(device_ids[start : start + 500]),
                            or_(Device.online.is_(None), Device.online.is_(True)),
                        )
                        .values(online=False, status_changed_at=at)
                    )
            prune_dead_letters(session, self.settings.dead_letter_keep)
            prune_processed(session)
        self.alerting.tick(now)
        self._maintain_timeseries(now)

    def _maintain_timeseries(self, now: datetime) -> None:
        # The embedded store has no retention of its own (VictoriaMetrics and InfluxDB do).
        store = self.timeseries_writer
        last = self._timeseries_maintained_at
        interval = timedelta(seconds=self.settings.tsdb_maintenance_interval_s)
        if not isinstance(store, SqliteStore) or (last is not None and now - last < interval):
            return
        self._timeseries_maintained_at = now
        result = store.maintain(now)
        if result.rolled_up_samples or result.deleted_samples or result.deleted_rollups:
            log.info(
                "time series: %d raw samples folded into hourly averages, %d samples and "
                "%d hourly averages past retention deleted",
                result.rolled_up_samples,
                result.deleted_samples,
                result.deleted_rollups,
            )

    def _housekeeping_loop(self) -> None:
        # Liveness timeouts, pruning, rule ticks (absence, ratio) and alert timers.
        interval = self.settings.housekeeping_interval_s
        while not self._stop.wait(interval):
            started = time.monotonic()
            try:
                self.housekeeping()
            except Exception:
                log.exception("housekeeping failed; retrying in %s s", interval)
            if time.monotonic() - started > interval:
                log.warning("housekeeping took longer than its interval")
