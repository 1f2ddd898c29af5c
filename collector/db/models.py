"""The collector's relational state: assets, device state, idempotency, dead letters, access.

Portable between SQLite and PostgreSQL: plain strings with CHECK constraints instead of
native enums (adding a value must not need ``ALTER TYPE``), the generic ``JSON`` type, and
``UtcDateTime`` so every time read back is timezone-aware UTC whatever the backend stores.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, date, datetime
from typing import Any, ClassVar, Final

from sqlalchemy import (
    JSON,
    Boolean,
    CheckConstraint,
    Date,
    DateTime,
    Dialect,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    SmallInteger,
    String,
    Text,
    TypeDecorator,
    false,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

SITE_LEVELS: Final = ("province", "district", "school", "building", "room")
UPLINK_TYPES: Final = ("fibre", "4g", "5g", "adsl", "satellite", "other", "unknown")
ASSET_KINDS: Final = (
    "pc",
    "server",
    "laptop",
    "projector",
    "interactive_panel",
    "display",
    "camera",
    "env_sensor",
    "access_point",
    "switch",
    "router",
    "firewall",
    "printer",
    "smart_plug",
    "access_controller",
    "scanner",
    "information_system",
    "other",
)
# Lifecycle of the physical thing. Whether a person has accepted the record is a separate
# flag (``registered``): a discovered device is usually in service, and a lost projector was
# registered, so folding "unregistered" into this list would lose one of the two facts.
ASSET_STATUSES: Final = ("in_service", "in_repair", "lost", "retired")
ASSET_SOURCES: Final = ("agent", "device", "discovery", "manual", "import")
ROLES: Final = ("admin", "soc", "facilities", "viewer")

# Fixed names so Alembic and both databases agree on every constraint and index name.
NAMING_CONVENTION: Final = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def _in_list(column: str, values: tuple[str, ...]) -> str:
    quoted = ", ".join(f"'{value}'" for value in values)
    return f"{column} IN ({quoted})"


def utc_now() -> datetime:
    return datetime.now(UTC)


class UtcDateTime(TypeDecorator[datetime]):
    """Timezone-aware datetimes in, UTC-aware datetimes out, on every backend.

    SQLite has no zone support and returns naive values; storing naive UTC there and
    re-attaching UTC on the way out keeps comparisons and sorting correct. A naive value
    on the way in is refused: guessing its zone is how audit times end up hours off.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value.isoformat()} given; attach a time zone")
        if value.tzinfo is not UTC:
            value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def bind_processor(self, dialect: Dialect) -> Callable[[datetime | None], Any] | None:
        if dialect.name != "sqlite":
            return super().bind_processor(dialect)

        # Ingest binds several times per message; doing SQLite's text form in one step here
        # (the same text its DATETIME type writes) halves what binding them costs.
        def to_sqlite_text(value: datetime | None) -> str | None:
            if value is None:
                return None
            if value.tzinfo is not UTC:
                naive = self.process_bind_param(value, dialect)
                assert naive is not None
                return naive.isoformat(sep=" ", timespec="microseconds")
            # "YYYY-MM-DD HH:MM:SS.ffffff+00:00" without its offset.
            return value.isoformat(sep=" ", timespec="microseconds")[:-6]

        return to_sqlite_text

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map: ClassVar[dict[Any, Any]] = {
        datetime: UtcDateTime(),
        dict[str, Any]: JSON,
        list[str]: JSON,
    }


class Site(Base):
    """A node of the province → district → school → building → room tree."""

    __tablename__ = "sites"
    __table_args__ = (
        CheckConstraint(_in_list("level", SITE_LEVELS), name="level"),
        CheckConstraint(
            "digital_maturity_level IS NULL OR digital_maturity_level BETWEEN 0 AND 3",
            name="maturity",
        ),
    )

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    parent_id: Mapped[str | None] = mapped_column(
        ForeignKey("sites.id", ondelete="RESTRICT"), index=True
    )
    level: Mapped[str] = mapped_column(String(16))
    name: Mapped[str] = mapped_column(String(256))
    uplink_type: Mapped[str | None] = mapped_column(String(16))
    digital_maturity_level: Mapped[int | None] = mapped_column(SmallInteger)
    # Created because a message named it; a person should place it in the tree.
    auto_created: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(default=utc_now)
    updated_at: Mapped[datetime] = mapped_column(default=utc_now, onupdate=utc_now)


class Asset(Base):
    """One thing in the facilities register: hardware, or an information system."""

    __tablename__ = "assets"
    __table_args__ = (
        CheckConstraint(_in_list("status", ASSET_STATUSES), name="status"),
        CheckConstraint(_in_list("source", ASSET_SOURCES), name="source"),
        CheckConstraint(
            "security_level IS NULL OR security_level BETWEEN 1 AND 5", name="security_level"
        ),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    asset_tag: Mapped[str | None] = mapped_column(String(64), unique=True)
    kind: Mapped[str] = mapped_column(String(32), default="other")
    name: Mapped[str | None] = mapped_column(String(256))
    vendor: Mapped[str | None] = mapped_column(String(256))
    model: Mapped[str | None] = mapped_column(String(256))
    serial: Mapped[str | None] = mapped_column(String(256), index=True)
    device_id: Mapped[str | None] = mapped_column(String(64), unique=True)
    os_name: Mapped[str | None] = mapped_column(String(256))
    os_version: Mapped[str | None] = mapped_column(String(256))
    firmware_version: Mapped[str | None] = mapped_column(String(256))
    site_id: Mapped[str | None] = mapped_column(
        ForeignKey("sites.id", ondelete="RESTRICT"), index=True
    )
    room: Mapped[str | None] = mapped_column(String(128))
    # Who answers for it (a teacher in charge of a lab, the school's IT person): set by the
    # facilities manager, never by a message.
    owner: Mapped[str | None] = mapped_column(String(128))
    status: Mapped[str] = mapped_column(String(16), default="in_service")
    purchase_date: Mapped[date | None] = mapped_column(Date)
    warranty_end: Mapped[date | None] = mapped_column(Date)
    source: Mapped[str] = mapped_column(String(16))
    first_seen: Mapped[datetime | None] = mapped_column()
    last_seen: Mapped[datetime | None] = mapped_column()
    registered: Mapped[bool] = mapped_column(Boolean, default=False)
    # A discovered host a person has looked at and let be (a visitor's phone): no
    # "unknown device" alert for it, and it is not counted as a registered asset either.
    ignored: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    manual_fields: Mapped[list[str]] = mapped_column(default=list)
    # Decree 85/2016 security level and the date its protection plan was approved.
    security_level: Mapped[int | None] = mapped_column(SmallInteger)
    protection_plan_approved_on: Mapped[date | None] = mapped_column(Date)
    notes: Mapped[str | None] = mapped_column(Text)
    version: Mapped[int] = mapped_column(Integer, default=1)
    created_at: Mapped[datetime] = mapped_column(default=utc_now)
    updated_at: Mapped[datetime] = mapped_column(default=utc_now, onupdate=utc_now)

    macs: Mapped[list[AssetMac]] = relationship(
        back_populates="asset", cascade="all, delete-orphan", order_by="AssetMac.mac"
    )

    # SQLAlchemy bumps ``version`` on every UPDATE and fails a flush whose row changed
    # underneath it, so two editors (or an editor and the ingest) cannot silently overwrite.
    __mapper_args__ = {"version_id_col": version}  # noqa: RUF012 (SQLAlchemy reads it as-is)

    @property
    def mac_list(self) -> list[str]:
        return [entry.mac for entry in self.macs]


class AssetMac(Base):
    """A MAC address belongs to at most one asset: the primary key enforces it."""

    __tablename__ = "asset_macs"

    mac: Mapped[str] = mapped_column(String(17), primary_key=True)
    asset_id: Mapped[int] = mapped_column(ForeignKey("assets.id", ondelete="CASCADE"), index=True)

    asset: Mapped[Asset] = relationship(back_populates="macs")


class AssetHistory(Base):
    """One field change of one asset, with who or what made it."""

    __tablename__ = "asset_history"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    asset_id: Mapped[int] = mapped_column(ForeignKey("assets.id", ondelete="CASCADE"), index=True)
    at: Mapped[datetime] = mapped_column(default=utc_now)
    field: Mapped[str] = mapped_column(String(64))
    old_value: Mapped[str | None] = mapped_column(Text)
    new_value: Mapped[str | None] = mapped_column(Text)
    # A user name, "message:<id>" or "import:<file>:<row>".
    actor: Mapped[str] = mapped_column(String(512))
    source: Mapped[str] = mapped_column(String(16))


class Device(Base):
    """Live state of one sender (agent, smart device, scanner) as the collector last saw it."""

    __tablename__ = "devices"

    device_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    site_id: Mapped[str] = mapped_column(ForeignKey("sites.id", ondelete="RESTRICT"), index=True)
    device_type: Mapped[str | None] = mapped_column(String(32))
    asset_id: Mapped[int | None] = mapped_column(
        ForeignKey("assets.id", ondelete="SET NULL"), index=True
    )
    # None until a state message arrives: "unknown" must not look like "offline".
    online: Mapped[bool | None] = mapped_column(Boolean)
    status_changed_at: Mapped[datetime | None] = mapped_column()
    last_seen: Mapped[datetime | None] = mapped_column()
    hello: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    software_version: Mapped[str | None] = mapped_column(String(256))
    fingerprint: Mapped[str | None] = mapped_column(String(64))
    clock_skew_s: Mapped[float | None] = mapped_column(Float)
    latest_messages: Mapped[list[DeviceLatest]] = relationship(
        order_by="DeviceLatest.kind", viewonly=True
    )
    """Read side only: ingest writes ``device_latest`` with set-based upserts, not the ORM."""

    @property
    def latest(self) -> dict[str, dict[str, Any]]:
        """kind → body of the newest message of that kind (by the message's own time)."""
        return {row.kind: row.body for row in self.latest_messages}

    @property
    def last_message_at(self) -> dict[str, str]:
        """kind → when the collector received that newest message (ISO 8601)."""
        return {row.kind: row.received_at.isoformat() for row in self.latest_messages}


class DeviceLatest(Base):
    """The newest message of each kind a device sent: its live state, one row per kind.

    A row per (device, kind) rather than one JSON object per device: ingest can then upsert
    a batch's rows without reading them first, and "newest" is decided by the database
    (``ts`` of the stored row against the incoming one), so a store-and-forward backlog or
    two collectors sharing the load never put an older state over a newer one.
    """

    __tablename__ = "device_latest"

    device_id: Mapped[str] = mapped_column(
        ForeignKey("devices.device_id", ondelete="CASCADE"), primary_key=True
    )
    kind: Mapped[str] = mapped_column(String(16), primary_key=True)
    ts: Mapped[datetime] = mapped_column()
    """The message's own timestamp: decides which message is the newest."""
    received_at: Mapped[datetime] = mapped_column()
    body: Mapped[dict[str, Any]] = mapped_column()


class ProcessedMessage(Base):
    """Message ids already applied; a redelivered QoS 1 message finds its id here."""

    __tablename__ = "processed_messages"

    message_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    device_id: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(16))
    received_at: Mapped[datetime] = mapped_column(index=True)


class DeadLetter(Base):
    """A payload the collector refused, kept (bounded) so a person can see why."""

    __tablename__ = "dead_letters"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    received_at: Mapped[datetime] = mapped_column(index=True)
    topic: Mapped[str] = mapped_column(String(1024))
    reason: Mapped[str] = mapped_column(String(32))
    detail: Mapped[str] = mapped_column(Text)
    payload: Mapped[bytes] = mapped_column(LargeBinary)
    payload_truncated: Mapped[bool] = mapped_column(Boolean, default=False)


class ApiToken(Base):
    """A bearer token for the API; only its sha256 is stored."""

    __tablename__ = "api_tokens"
    __table_args__ = (CheckConstraint(_in_list("role", ROLES), name="role"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(128))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    role: Mapped[str] = mapped_column(String(16))
    # Deliberately not a foreign key: deleting a site must never widen a token to "all sites".
    site_scope: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utc_now)
    last_used_at: Mapped[datetime | None] = mapped_column()
    revoked_at: Mapped[datetime | None] = mapped_column()


class User(Base):
    """A web UI login; password stored as an scrypt hash (see ``collector.db.access``)."""

    __tablename__ = "users"
    __table_args__ = (CheckConstraint(_in_list("role", ROLES), name="role"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    username: Mapped[str] = mapped_column(String(128), unique=True)
    password_hash: Mapped[str] = mapped_column(String(512))
    role: Mapped[str] = mapped_column(String(16))
    site_scope: Mapped[str | None] = mapped_column(String(64))
    language: Mapped[str] = mapped_column(String(8), default="vi")
    disabled: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(default=utc_now)


# The alert and outbox tables live with their subsystems but share this metadata, so
# Alembic's comparison and create_all see one schema.
from campuswatch.collector.alerts import models as _alert_models  # noqa: E402, F401
from campuswatch.collector.enrolment import models as _enrolment_models  # noqa: E402, F401
from campuswatch.collector.forward import models as _outbox_models  # noqa: E402, F401
from campuswatch.collector.reports import snapshot_model as _snapshot_models  # noqa: E402, F401


class AuditEvent(Base):
    """Who changed an account, a token or another administrative object, and when.

    Written in the same transaction as the change, so a change without its record cannot
    exist. Never holds a secret: passwords and tokens appear only as "changed"."""

    __tablename__ = "audit_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(default=utc_now, index=True)
    actor: Mapped[str] = mapped_column(String(160))
    """``user:NAME``, ``token:NAME`` or ``cli:UNIX-USER`` (a command run on the server)."""
    action: Mapped[str] = mapped_column(String(64))
    target: Mapped[str] = mapped_column(String(160))
    detail: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class LoginCounter(Base):
    """Failed UI logins for one user name or client address, shared by every collector on
    this register (``collector.web.login_limits``); times are Unix seconds."""

    __tablename__ = "login_counters"
    __table_args__ = (
        CheckConstraint(_in_list("kind", ("account", "address")), name="kind"),
        Index("ix_login_counters_kind_touched", "kind", "touched"),
    )

    kind: Mapped[str] = mapped_column(String(16), primary_key=True)
    key: Mapped[str] = mapped_column(Text, primary_key=True)
    failures: Mapped[list[float]] = mapped_column(JSON, default=list)
    """Times of failed attempts within the window."""
    pending: Mapped[list[float]] = mapped_column(JSON, default=list)
    """Start times of attempts still being checked (they count as failures until they end)."""
    locked_until: Mapped[float] = mapped_column(Float, default=0.0)
    touched: Mapped[float] = mapped_column(Float)
    """Last use: rows untouched for longer than the window are pruned, the oldest evicted."""
