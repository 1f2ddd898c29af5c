"""Agent settings: one typed class, read from a TOML file and ``CW_AGENT_*`` variables.

msgspec rather than pydantic-settings here on purpose: the agent runs on every lab PC and
its resident memory is a product target (≤ 35 MB), pydantic alone costs ~15 MB.
Precedence: defaults < config file < environment < command-line options.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta

from campuswatch.wire.codec import MAX_PAYLOAD_BYTES
from campuswatch.wire.messages import Identifier, UplinkType

ENV_PREFIX = "CW_AGENT_"
MIN_QUEUE_BYTES = 2 * MAX_PAYLOAD_BYTES
"""The smallest queue holds the largest message the wire allows with as much again after it:
a queue smaller than one inventory message would drop it for good (it is only re-sent when
it changes)."""
Seconds = Annotated[float, Meta(gt=0)]


class ConfigError(ValueError):
    """The configuration cannot be used; the message says which setting and why."""


class ProbeIntervals(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    av: Seconds = 300.0
    net: Seconds = 60.0
    health: Seconds = 60.0
    inventory_check: Seconds = 3600.0
    """How often inventory is re-collected; it is only *sent* when its digest changed."""
    jitter_fraction: Annotated[float, Meta(ge=0, le=0.5)] = 0.1


class NetSettings(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    uplink_type: UplinkType = "unknown"
    """What the school's contract says the uplink is; the agent cannot tell fibre from 4G."""
    dns_names: list[str] = msgspec.field(default_factory=lambda: ["moet.gov.vn", "google.com"])
    http_targets: list[str] = msgspec.field(
        default_factory=lambda: ["https://moet.gov.vn/", "https://www.google.com/generate_204"]
    )
    ping_count: Annotated[int, Meta(ge=1, le=20)] = 4
    timeout_s: Seconds = 5.0


class AvSettings(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    max_signature_age_hours: Annotated[float, Meta(gt=0)] = 72.0
    clamav_database_dirs: list[str] = msgspec.field(
        default_factory=lambda: ["/var/lib/clamav", "/var/lib/clamav-unofficial"]
    )
    freshclam_log: str = "/var/log/clamav/freshclam.log"
    powershell: str = "powershell.exe"
    command_timeout_s: Seconds = 30.0


class MqttSettings(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    broker: str = "mqtt://127.0.0.1:1883"
    """mqtt://host:port or mqtts://host:port (TLS)."""
    username: str | None = None
    password: str | None = None
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    tls_insecure: bool = False
    keepalive_s: Annotated[int, Meta(ge=5, le=3600)] = 60
    reconnect_min_s: Seconds = 1.0
    reconnect_max_s: Seconds = 120.0


class QueueSettings(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    max_bytes: Annotated[int, Meta(ge=MIN_QUEUE_BYTES)] = 64 * 1024 * 1024
    """Store-and-forward bound; beyond it the oldest messages are dropped and counted."""
    max_inflight: Annotated[int, Meta(ge=1, le=1000)] = 20
    rate_per_s: Annotated[float, Meta(gt=0)] = 50.0
    """Leaky bucket: a backlog drains at this rate so a school reconnecting cannot flood."""


class EnrolmentSettings(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Enrol automatically at start (for disk images): the school's token and the collector."""

    server: str | None = None
    """The collector's address, e.g. ``https://collector.district.vn``."""
    token: str | None = None
    ca_file: str | None = None
    """CA that signed the collector's HTTPS certificate, if not a public one."""


class AgentSettings(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    site: Identifier | None = None
    device_id: Identifier | None = None
    """Leave unset: the id is derived from hardware facts and kept in the state dir."""
    state_dir: str = ""
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    collect_software: bool = True
    mqtt: MqttSettings = msgspec.field(default_factory=MqttSettings)
    intervals: ProbeIntervals = msgspec.field(default_factory=ProbeIntervals)
    net: NetSettings = msgspec.field(default_factory=NetSettings)
    av: AvSettings = msgspec.field(default_factory=AvSettings)
    queue: QueueSettings = msgspec.field(default_factory=QueueSettings)
    enrolment: EnrolmentSettings = msgspec.field(default_factory=EnrolmentSettings)

    def resolved_state_dir(self) -> Path:
        if self.state_dir:
            return Path(self.state_dir)
        if os.name == "nt":
            return Path(os.environ.get("PROGRAMDATA", r"C:\ProgramData")) / "CampusWatch"
        return (
            Path("/var/lib/campuswatch-agent")
            if os.geteuid() == 0
            else (Path.home() / ".local/state/campuswatch-agent")
        )


def _env_overrides(environ: dict[str, str]) -> dict[str, Any]:
    """``CW_AGENT_MQTT__BROKER=…`` → ``{"mqtt": {"broker": "…"}}`` (double underscore nests)."""
    result: dict[str, Any] = {}
    for key, value in environ.items():
        if not key.startswith(ENV_PREFIX):
            continue
        path = key[len(ENV_PREFIX) :].lower().split("__")
        node = result
        for part in path[:-1]:
            node = node.setdefault(part, {})
        node[path[-1]] = value
    return result


def _merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def load_settings(
    config_file: Path | None = None,
    overrides: dict[str, Any] | None = None,
    environ: dict[str, str] | None = None,
) -> AgentSettings:
    """Build settings or raise ``ConfigError`` naming the file and the offending setting."""
    data: dict[str, Any] = {}
    if config_file is not None:
        try:
            data = tomllib.loads(config_file.read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigError(f"cannot read config file {config_file}: {exc.strerror}") from None
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"config file {config_file} is not valid TOML: {exc}") from None
    data = _merge(data, _env_overrides(dict(os.environ if environ is None else environ)))
    data = _merge(data, {k: v for k, v in (overrides or {}).items() if v is not None})
    try:
        # strict=False lets environment strings like "30" or "true" convert to numbers/bools.
        return msgspec.convert(data, AgentSettings, strict=False)
    except msgspec.ValidationError as exc:
        where = f" in {config_file}" if config_file else ""
        raise ConfigError(f"invalid setting{where}: {exc}") from None
