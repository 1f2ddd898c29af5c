"""Response and request models: every route declares what it returns."""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Any, Generic, Literal, TypeVar

from fastapi import Path, Query
from pydantic import BaseModel, ConfigDict, Field, field_validator

from campuswatch.collector.db.access import UI_SESSION_PREFIX
from campuswatch.wire.topics import IDENTIFIER_JSON_PATTERN

T = TypeVar("T")

MAX_ROW_ID = 2**31 - 1
"""Row ids are 32-bit on PostgreSQL; a larger one cannot exist and must not reach the driver."""
RowId = Annotated[int, Path(ge=1, le=MAX_ROW_ID)]
PageNumber = Annotated[int, Query(ge=1, le=1_000_000)]


class Page(BaseModel, Generic[T]):
    items: list[T]
    total: int
    page: int
    page_size: int


class SiteOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    parent_id: str | None
    level: str
    name: str
    uplink_type: str | None
    digital_maturity_level: int | None
    auto_created: bool


class SiteStatus(SiteOut):
    devices: int
    online: int
    offline: int
    flapping: int
    unknown: int
    unreachable: bool


class SiteIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str = Field(pattern=IDENTIFIER_JSON_PATTERN)  # the wire's ids, matched whole
    parent_id: str | None = Field(default=None, max_length=64)
    level: Literal["province", "district", "school", "building", "room"]
    name: str = Field(min_length=1, max_length=256)
    uplink_type: Literal["fibre", "4g", "5g", "adsl", "satellite", "other", "unknown"] | None = None
    digital_maturity_level: int | None = Field(default=None, ge=0, le=3)


class DeviceOut(BaseModel):
    device_id: str
    site_id: str
    device_type: str | None
    status: Literal["online", "offline", "flapping", "unknown"]
    online: bool | None
    last_seen: datetime | None
    status_changed_at: datetime | None
    asset_id: int | None
    software_version: str | None
    clock_skew_s: float | None
    av_status: str | None = None


class DeviceDetail(DeviceOut):
    hello: dict[str, Any] | None
    latest: dict[str, Any]
    last_message_at: dict[str, Any]


class CommandIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    command: Literal["refresh_inventory", "run_probes", "rescan", "reboot", "identify"]
    args: dict[str, str] = Field(default_factory=dict)


class CommandOut(BaseModel):
    sent: bool
    message_id: str


class AssetOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    asset_tag: str | None
    kind: str
    name: str | None
    vendor: str | None
    model: str | None
    serial: str | None
    macs: list[str]
    device_id: str | None
    os_name: str | None
    os_version: str | None
    firmware_version: str | None
    site_id: str | None
    room: str | None
    owner: str | None = None
    status: str
    purchase_date: date | None
    warranty_end: date | None
    source: str
    first_seen: datetime | None
    last_seen: datetime | None
    registered: bool
    ignored: bool
    manual_fields: list[str]
    security_level: int | None
    protection_plan_approved_on: date | None
    notes: str | None
    version: int


class AssetEdit(BaseModel):
    """A facilities manager's edit; fields set here are never overwritten by device reports."""

    model_config = ConfigDict(extra="forbid")

    changes: dict[str, Any] = Field(min_length=1)
    expected_version: int | None = None


class AssetHistoryOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    at: datetime
    field: str
    old_value: str | None
    new_value: str | None
    actor: str
    source: str


class RowErrorOut(BaseModel):
    row: int
    column: str
    message: str


class ImportReportOut(BaseModel):
    filename: str
    dry_run: bool
    rows: int
    created: int
    updated: int
    unchanged: int
    applied: bool
    errors: list[RowErrorOut]


class DeadLetterOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    received_at: datetime
    topic: str
    reason: str
    detail: str
    payload_preview: str
    payload_truncated: bool


class TokenIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=128)
    role: Literal["admin", "soc", "facilities", "viewer"]
    site_scope: str | None = Field(default=None, max_length=64)
    """A site id: the token sees that site and the sites under it."""

    @field_validator("name")
    @classmethod
    def _not_a_login(cls, name: str) -> str:
        # A web UI login's token is named ui-session:USER and audited as user:USER; a
        # token named so would act, in the audit log, as that person.
        if name.startswith(UI_SESSION_PREFIX):
            raise ValueError(f"a token name must not start with {UI_SESSION_PREFIX!r}")
        return name


class TokenOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    name: str
    role: str
    site_scope: str | None
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None


class TokenCreated(TokenOut):
    token: str
    """Shown once; only its hash is stored."""


class Health(BaseModel):
    status: Literal["ok", "degraded"]
    checks: dict[str, str]


class SeriesOut(BaseModel):
    measurement: str
    field: str
    step_s: int
    times_ms: list[int]
    """Bucket starts (epoch ms), oldest first; a bucket without samples is left out."""
    values: list[float]
    """The average of each bucket, in the order of ``times_ms``."""


class Problem(BaseModel):
    """Every refusal: ``{"detail": <message>}``."""

    detail: Any


class ValidationProblem(BaseModel):
    """422: FastAPI's list of field errors, the register's ``{field: message}`` or one
    message."""

    detail: list[dict[str, Any]] | dict[str, Any] | str


_PROBLEMS: dict[int, str] = {
    400: "The body could not be read (not UTF-8)",
    401: "No bearer token, or an unknown or revoked one",
    403: "The token's role or site scope does not allow this",
    404: "No such object, or outside the token's site scope",
    409: "The object changed meanwhile, or is in a state that does not allow this",
    413: "The body is too large",
    422: "The request is not valid",
    503: "The collector has no broker connection",
}


def problems(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI entries for a route's refusals, so clients (and schemathesis) know them."""
    return {
        code: {
            "model": ValidationProblem if code == 422 else Problem,
            "description": _PROBLEMS[code],
        }
        for code in codes
    }
