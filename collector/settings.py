"""Collector settings: one pydantic-settings class, ``CW_COLLECTOR_*`` environment variables.

The first admin token is read from ``CW_ADMIN_TOKEN`` (as the API docs promise) and refused
when it is a placeholder or too short to be a secret.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

from campuswatch.collector.forward.settings import ForwardingSettings
from campuswatch.wire.topics import IDENTIFIER_JSON_PATTERN, IDENTIFIER_PATTERN, is_identifier

PLACEHOLDER_SECRETS = {"changeme", "change-me", "secret", "admin", "password", "token", "xxx"}


class LivenessSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CW_LIVENESS_", extra="forbid")

    heartbeat_timeout_s: dict[str, float] = Field(
        default_factory=lambda: {
            # An agent reports health every 60 s; Wazuh calls an agent gone after 15 min, we
            # say offline after missing five reports. Sensors report more often.
            "pc": 300.0,
            "server": 300.0,
            "env_sensor": 300.0,
            "default": 600.0,  # ThingsBoard's default inactivity timeout
        }
    )
    flap_window_s: float = 60.0
    """A device that bounces more than ``flap_threshold`` times in this window is 'flapping'."""
    flap_threshold: int = 3
    site_unreachable_min_devices: int = 3
    """A school is 'unreachable' when at least this many of its devices all went silent."""


class PartitionSettings(BaseModel):
    """A share of the devices one collector at a time handles: whole schools (sites)."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=IDENTIFIER_JSON_PATTERN)
    """Names the partition's MQTT session (client id) and PostgreSQL lock: never rename a
    partition while its session holds messages."""
    sites: list[str] = Field(min_length=1)
    """Site ids (the ``cw/v1/{site}/…`` topic level, usually schools) whose messages this
    partition holds; every message of a device goes with its site."""
    prefer: str | None = None
    """The ``collector_id`` that runs this partition when it is alive; another collector
    runs it only while that one is away, and hands it back once it returns."""

    @field_validator("sites")
    @classmethod
    def _site_ids(cls, sites: list[str]) -> list[str]:
        bad = [site for site in sites if not is_identifier(site)]
        if bad:
            raise ValueError(
                f"site ids must match {IDENTIFIER_PATTERN} (no MQTT wildcards): {bad[:3]}"
            )
        if len(set(sites)) != len(sites):
            raise ValueError("a site is listed twice")
        return sites


class OwnershipSettings(BaseModel):
    """Per-device ownership across collectors (docs/scale.md#ownership): each partition is
    run by one collector at a time, the holder of its PostgreSQL advisory lock."""

    model_config = ConfigDict(extra="forbid")

    group: str = Field(pattern=IDENTIFIER_JSON_PATTERN)
    """The collectors sharing these partitions (e.g. the district): every one of them lists
    the same partitions under the same group."""
    partitions: list[PartitionSettings] = Field(min_length=1)
    poll_interval_s: float = Field(default=2.0, ge=0.2, le=60)
    """How often a collector tries to take partitions nobody runs (and checks its own):
    a dead collector's partitions are taken within this plus a reconnect."""
    handback_grace_s: float = Field(default=10.0, ge=0, le=3600)
    """A partition's preferred collector counts as back once alive this long."""

    @model_validator(mode="after")
    def _disjoint(self) -> OwnershipSettings:
        names: set[str] = set()
        owner: dict[str, str] = {}
        for partition in self.partitions:
            if partition.name in names:
                raise ValueError(f"partition {partition.name!r} is listed twice")
            names.add(partition.name)
            for site in partition.sites:
                if site in owner:
                    raise ValueError(
                        f"site {site!r} is in partitions {owner[site]!r} and "
                        f"{partition.name!r}: a site belongs to one partition"
                    )
                owner[site] = partition.name
        return self


class CollectorSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CW_COLLECTOR_", extra="forbid")

    broker: str = "mqtt://127.0.0.1:1883"
    broker_username: str | None = None
    broker_password: SecretStr | None = None
    broker_ca_file: str | None = None
    share_group: str | None = None
    """MQTT v5 shared subscription group: collectors with the same group split the messages,
    each device's among them, so a rule over several messages of one device can miss;
    ``ownership`` keeps each device on one collector instead."""
    ownership: OwnershipSettings | None = None
    """Partitions of sites run by one collector at a time (PostgreSQL register only)."""
    collector_id: str = "collector-1"
    data_dir: Path = Path("./campuswatch-data")
    listen: str = "127.0.0.1:8080"
    tsdb: str | None = None
    """None = embedded SQLite in data_dir; or victoriametrics://, influx2://, influx1:// URLs."""
    db: str | None = None
    """None = SQLite register in data_dir; or postgresql+psycopg://user@host/db."""
    rules_dir: Path | None = None
    broker_dir: Path | None = None
    """The folder ``campuswatch broker config --out`` wrote; enrolment issues logins into it."""
    agent_broker_url: str | None = None
    """The broker address handed to enrolled agents (e.g. ``mqtts://broker.school.vn:8883``);
    the collector's own ``broker`` is often a loopback listener agents cannot reach."""
    forwarding_config: Path | None = None
    """A separate YAML/TOML file of SOC destinations (docs/forwarding.md)."""
    forwarding: ForwardingSettings | None = None
    """The same destinations inline: ``[[forwarding.destinations]]`` in the collector's config
    file (collector/config_file.py). One source or the other, never both."""
    admin_token: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("CW_ADMIN_TOKEN", "admin_token")
    )
    display_token: SecretStr | None = None
    metrics_token: SecretStr | None = None
    """When set, ``/metrics`` answers only ``Authorization: Bearer <this>`` (it shows
    antivirus coverage per school); unset, anyone who reaches the port may scrape it."""
    public_url: str | None = None
    """The address staff open the UI at (``https://campuswatch.school.vn``). A cookie-
    authenticated write must come from a page of this origin or of the request's own Host;
    set it when a reverse proxy rewrites the Host header."""
    trusted_proxies: list[str] = Field(default_factory=list)
    """Addresses of reverse proxies whose ``X-Forwarded-For`` names the real client (for the
    per-address login limit). Empty: the connecting address is the client, always."""
    max_request_body_bytes: int = Field(default=1024 * 1024, ge=16 * 1024, le=1024**3)
    """Largest request body accepted, checked before authentication; the register imports
    (CSV/XLSX uploads) have their own, larger limit."""
    login_failures_per_account: int = Field(default=5, ge=1, le=1000)
    """Failed UI logins for one user name within ``login_window_s`` before it is locked."""
    login_failures_per_address: int = Field(default=20, ge=1, le=100_000)
    """Failed UI logins from one client address within ``login_window_s`` before it is locked
    (higher than per account: a school's staff share one NAT address)."""
    login_window_s: float = Field(default=900.0, gt=0, le=86_400)
    login_lockout_s: float = Field(default=900.0, gt=0, le=86_400)
    """How long a locked user name or address is refused without its password being tried."""
    batch_size: int = Field(default=500, ge=1, le=10_000)
    batch_wait_s: float = Field(default=0.05, gt=0, le=5)
    max_pending_messages: int = Field(default=50_000, ge=100)
    dead_letter_keep: int = Field(default=10_000, ge=100)
    tsdb_raw_retention_days: float | None = Field(default=7.0, ge=1)
    """Embedded SQLite time-series store only: raw samples older than this are kept as hourly
    averages (min, max, count too). None keeps every raw sample."""
    tsdb_retention_days: float | None = Field(default=400.0, ge=1)
    """Embedded SQLite store only: anything older is deleted (400 days spans a school year
    and the annual report's comparison). None keeps everything. VictoriaMetrics and InfluxDB
    keep their own retention (``-retentionPeriod``, bucket retention)."""
    tsdb_maintenance_interval_s: float = Field(default=3600.0, ge=60, le=7 * 86_400)
    """How often the embedded store is folded and pruned."""
    report_schedule_interval_s: float = Field(default=3600.0, ge=0)
    """How often due compliance reports are generated into ``data_dir/reports`` (the
    six-month one before 5 June, the annual one before 5 December, …); 0 turns it off."""
    alert_group_wait_s: float = Field(default=30.0, ge=0, le=3600)
    """How long a new alert group waits before notifying the SOC (Alertmanager's group_wait):
    long enough for a school's uplink alert to arrive and mute its 200 device alerts; 0
    notifies at once."""
    alert_update_interval_s: float = Field(default=300.0, ge=1, le=86_400)
    """At most one "updated" per open alert this often, carrying the count and last time of
    its repeated triggers (like Alertmanager's group_interval)."""
    gc_young_threshold: int = Field(default=10_000, ge=700, le=1_000_000)
    """Allocations between two looks for reference cycles among new objects (Python's
    default is 700). An ingest batch allocates far more, so at 700 its short-lived objects
    reached the older generations and whole-heap collections over a district's state ran
    every few seconds. Lower it to trade CPU for less memory held by garbage cycles."""
    housekeeping_interval_s: float = Field(default=10.0, gt=0, le=300)
    """How often liveness timeouts, time-driven rules (absence, ratio, ``for``) and alert
    timers (group_wait, repeats, escalations) are evaluated."""
    liveness: LivenessSettings = Field(default_factory=LivenessSettings)

    @field_validator("admin_token", "display_token", "metrics_token")
    @classmethod
    def _refuse_placeholder(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None:
            return None
        secret = value.get_secret_value()
        if secret.lower() in PLACEHOLDER_SECRETS or len(secret) < 16:
            raise ValueError(
                "refusing a placeholder or short token: use at least 16 random characters "
                "(e.g. `python -c 'import secrets; print(secrets.token_urlsafe(24))'`)"
            )
        return value

    @field_validator("broker_password")
    @classmethod
    def _refuse_placeholder_password(cls, value: SecretStr | None) -> SecretStr | None:
        # No length rule: a school's own broker may have its own password policy; a
        # sample's placeholder left in place is never a real password.
        if value is not None and value.get_secret_value().lower() in PLACEHOLDER_SECRETS:
            raise ValueError(
                "refusing a placeholder password: use the broker's real one (the one "
                "`campuswatch broker config` wrote to collector.password)"
            )
        return value

    @model_validator(mode="after")
    def _raw_retention_within_retention(self) -> CollectorSettings:
        raw, kept = self.tsdb_raw_retention_days, self.tsdb_retention_days
        if raw is not None and kept is not None and raw > kept:
            raise ValueError(
                f"tsdb_raw_retention_days ({raw:g}) is longer than tsdb_retention_days "
                f"({kept:g}): raw samples cannot outlive everything; lower the first"
            )
        return self

    @model_validator(mode="after")
    def _ownership_needs_postgres(self) -> CollectorSettings:
        if self.ownership is None:
            return self
        if self.share_group:
            raise ValueError(
                "share_group and [ownership] both set: a shared subscription splits each "
                "device's messages between collectors; keep [ownership] and remove share_group"
            )
        if not self.register_url().startswith("postgresql"):
            raise ValueError(
                '[ownership] needs a PostgreSQL register (db = "postgresql+psycopg://…"): '
                "its partitions are guarded by PostgreSQL advisory locks; with SQLite run a "
                "single collector without [ownership]"
            )
        return self

    @model_validator(mode="after")
    def _one_forwarding_source(self) -> CollectorSettings:
        if self.forwarding is not None and self.forwarding_config is not None:
            raise ValueError(
                "forwarding destinations come from [forwarding] in the config file or from "
                "forwarding_config, not both: remove one"
            )
        return self

    def forwarding_settings(self) -> ForwardingSettings | None:
        """The SOC destinations, inline or read from ``forwarding_config`` (which raises
        OSError or ValueError for a file it cannot read or validate)."""
        if self.forwarding is not None:
            return self.forwarding
        if self.forwarding_config is not None:
            return ForwardingSettings.from_file(self.forwarding_config)
        return None

    def register_url(self) -> str:
        from campuswatch.collector.db.engine import default_url

        return self.db or default_url(self.data_dir)
