"""Forwarding configuration: a list of named destinations, loadable from YAML or TOML.

Each destination is ``{name, type, options, delivery}``; ``type`` picks the options model, so
a typo in an option name is an error at start-up rather than a silently ignored setting.
Placeholder secrets ("changeme", …) are refused: a SOC that accepts a known secret
accepts forged alerts.
"""

from __future__ import annotations

import ipaddress
import re
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Final, Literal
from urllib.parse import urlsplit

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from campuswatch.collector.forward.base import Destination
from campuswatch.collector.forward.mqtt_destination import DEFAULT_TOPIC, check_topic_template
from campuswatch.collector.forward.runner import DeliveryPolicy, ForwardingTarget

PLACEHOLDER_SECRETS: Final = frozenset(
    {"changeme", "secret", "password", "example", "xxx", "todo", "replaceme", "default", "test"}
)
MIN_HMAC_SECRET_LENGTH: Final = 16
_CREDENTIAL_HEADER: Final = re.compile(r"authorization|token|key|secret|password", re.IGNORECASE)


def is_placeholder(secret: str) -> bool:
    folded = "".join(ch for ch in secret.lower() if ch.isalnum())
    markers = ("changeme", "replace", "yoursecret", "placeholder")
    return folded in PLACEHOLDER_SECRETS or any(m in folded for m in markers) or not folded


def _is_loopback(host: str | None) -> bool:
    if host == "localhost":
        return True
    try:
        return host is not None and ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class _Options(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


Language = Literal["en", "vi"]
"""The language of the alert text a destination receives (title, summary, description).

English by default: a SOC's correlation rules and analysts' searches are usually written
against English rule names, and an upgrade must not change what they match. Set ``vi``
for a provincial SOC whose analysts read Vietnamese."""


class SyslogOptions(_Options):
    host: str
    port: int | None = Field(default=None, ge=1, le=65535)
    transport: Literal["udp", "tcp", "tls"] = "tls"
    facility: str = "local4"
    message_format: Literal["cef", "ecs", "ocsf"] = "cef"
    language: Language = "en"
    hostname: str | None = None
    app_name: str = "campuswatch"
    utf8_bom: bool = False
    max_datagram_bytes: int = Field(default=8192, ge=480, le=65507)
    max_message_bytes: int = Field(default=65536, ge=480)
    timeout_s: float = Field(default=10.0, gt=0)
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    verify: bool = True
    server_name: str | None = None


class WebhookOptions(_Options):
    url: str
    document_format: Literal["ecs", "ocsf"] = "ecs"
    body_framing: Literal["json_array", "ndjson"] = "json_array"
    language: Language = "en"
    hmac_secret: SecretStr | None = None
    headers: dict[str, SecretStr] = Field(default_factory=dict)
    timeout_s: float = Field(default=10.0, gt=0)
    verify_tls: bool = True
    ca_file: str | None = None
    allow_plain_http: bool = False
    """Plain http is refused except to loopback (a local relay) unless this is set."""

    @model_validator(mode="after")
    def _check(self) -> WebhookOptions:
        parts = urlsplit(self.url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"webhook url {self.url!r} must be http(s)://host/...")
        if parts.scheme == "http" and not (self.allow_plain_http or _is_loopback(parts.hostname)):
            raise ValueError("webhook over plain http leaks alerts; use https or allow_plain_http")
        if self.hmac_secret is not None:
            secret = self.hmac_secret.get_secret_value()
            if is_placeholder(secret):
                raise ValueError("hmac_secret is a placeholder; set a real random secret")
            if len(secret) < MIN_HMAC_SECRET_LENGTH:
                raise ValueError(f"hmac_secret needs at least {MIN_HMAC_SECRET_LENGTH} characters")
        for name, value in self.headers.items():
            words = value.get_secret_value().split()
            if _CREDENTIAL_HEADER.search(name) and (not words or is_placeholder(words[-1])):
                raise ValueError(f"header {name} holds a placeholder credential")
        return self


class MqttOptions(_Options):
    broker_url: str
    topic_template: str = DEFAULT_TOPIC
    message_format: Literal["ecs", "ocsf", "cef"] = "ecs"
    language: Language = "en"
    qos: Literal[1, 2] = 1
    client_id: str = "campuswatch-forwarder"
    ack_timeout_s: float = Field(default=10.0, gt=0)
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None

    @field_validator("topic_template")
    @classmethod
    def _template(cls, value: str) -> str:
        check_topic_template(value)
        return value

    @field_validator("broker_url")
    @classmethod
    def _broker(cls, value: str) -> str:
        password = urlsplit(value).password
        if password is not None and is_placeholder(password):
            raise ValueError("broker_url holds a placeholder password")
        return value


class DeliverySettings(_Options):
    batch_size: int = Field(default=100, ge=1, le=10000)
    rate_per_s: float | None = Field(default=None, gt=0)
    burst: int | None = Field(default=None, ge=1)
    backoff_initial_s: float = Field(default=1.0, gt=0)
    backoff_max_s: float = Field(default=300.0, gt=0)
    max_attempts: int | None = Field(default=None, ge=1)
    max_age_s: float | None = Field(default=72 * 3600.0, ge=24 * 3600.0)
    lease_s: float = Field(default=120.0, gt=0)
    poll_interval_s: float = Field(default=1.0, gt=0)
    delivered_retention_s: float | None = Field(default=7 * 86400.0, gt=0)

    def to_policy(self) -> DeliveryPolicy:
        return DeliveryPolicy(**self.model_dump())


_NAME = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_.-]{0,63}$")]


class SyslogTargetSettings(_Options):
    name: _NAME
    type: Literal["syslog"]
    enabled: bool = True
    options: SyslogOptions
    delivery: DeliverySettings = DeliverySettings()


class WebhookTargetSettings(_Options):
    name: _NAME
    type: Literal["webhook"]
    enabled: bool = True
    options: WebhookOptions
    delivery: DeliverySettings = DeliverySettings()


class MqttTargetSettings(_Options):
    name: _NAME
    type: Literal["mqtt"]
    enabled: bool = True
    options: MqttOptions
    delivery: DeliverySettings = DeliverySettings()


TargetSettings = Annotated[
    SyslogTargetSettings | WebhookTargetSettings | MqttTargetSettings,
    Field(discriminator="type"),
]


class ForwardingSettings(_Options):
    destinations: list[TargetSettings] = Field(default_factory=list)

    @model_validator(mode="after")
    def _unique_names(self) -> ForwardingSettings:
        names = [d.name for d in self.destinations]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"destination names must be unique; repeated: {duplicates}")
        return self

    @property
    def enabled_names(self) -> list[str]:
        return [d.name for d in self.destinations if d.enabled]

    @classmethod
    def from_file(cls, path: Path) -> ForwardingSettings:
        """Read ``.yaml``/``.yml`` or ``.toml``, optionally nested under a ``forwarding`` key."""
        text = path.read_text(encoding="utf-8")
        data: Any
        if path.suffix.lower() == ".toml":
            data = tomllib.loads(text)
        elif path.suffix.lower() in (".yaml", ".yml"):
            data = yaml.safe_load(text) or {}
        else:
            raise ValueError(f"{path}: forwarding settings must be .yaml, .yml or .toml")
        if isinstance(data, dict) and "forwarding" in data:
            data = data["forwarding"]
        return cls.model_validate(data)


def destination_address(settings: TargetSettings) -> str:
    """Where a destination delivers, for logs: never a password, token or query string."""
    if isinstance(settings, SyslogTargetSettings):
        from campuswatch.collector.forward.syslog import DEFAULT_PORTS

        options = settings.options
        port = options.port or DEFAULT_PORTS[options.transport]
        return f"{options.transport}://{options.host}:{port}"
    url = (
        settings.options.url
        if isinstance(settings, WebhookTargetSettings)
        else settings.options.broker_url
    )
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"  # an IPv6 literal
    try:
        shown_port = f":{parts.port}" if parts.port else ""
    except ValueError:
        shown_port = ""
    return f"{parts.scheme}://{host}{shown_port}{parts.path}"


def build_destination(settings: TargetSettings) -> Destination:
    """The destination object for one configured entry (imports only what it needs)."""
    if isinstance(settings, SyslogTargetSettings):
        from campuswatch.collector.forward.syslog import SyslogDestination

        return SyslogDestination(**settings.options.model_dump())
    if isinstance(settings, WebhookTargetSettings):
        from campuswatch.collector.forward.webhook import WebhookDestination

        options = settings.options
        return WebhookDestination(
            options.url,
            document_format=options.document_format,
            body_framing=options.body_framing,
            language=options.language,
            hmac_secret=options.hmac_secret.get_secret_value() if options.hmac_secret else None,
            headers={k: v.get_secret_value() for k, v in options.headers.items()},
            timeout_s=options.timeout_s,
            verify_tls=options.verify_tls,
            ca_file=options.ca_file,
        )
    from campuswatch.collector.forward.mqtt_destination import MqttDestination

    return MqttDestination(**settings.options.model_dump())


def build_targets(
    settings: ForwardingSettings,
    factory: Callable[[TargetSettings], Destination] = build_destination,
) -> list[ForwardingTarget]:
    return [
        ForwardingTarget(entry.name, factory(entry), entry.delivery.to_policy())
        for entry in settings.destinations
        if entry.enabled
    ]
