"""``campuswatch collector check``: is every service the settings name reachable and usable?

Each check tries the real thing once with a short timeout, the way the collector will:
the broker (connect and log in, through ``wire/mqtt.py``), the register (connect, schema
revision), the time-series store (its health endpoint, or the SQLite file), the rule pack,
and every enabled forwarding destination (TCP/TLS connect for syslog, an HTTPS request for a
webhook, an MQTT login). Each answers with one line; nothing is written anywhere, so it is
safe to run beside a running collector.
"""

from __future__ import annotations

import os
import secrets
import socket
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Final
from urllib.parse import unquote, urlsplit

from campuswatch.collector.forward.settings import (
    MqttTargetSettings,
    SyslogTargetSettings,
    TargetSettings,
    WebhookTargetSettings,
    destination_address,
)
from campuswatch.collector.settings import CollectorSettings
from campuswatch.wire.mqtt import (
    BrokerAddress,
    BrokerUrlError,
    MqttConnection,
    TlsOptions,
    describe_connect_failure,
    parse_broker_url,
)

# Default port and health endpoint of each HTTP store (VictoriaMetrics answers 200 "OK",
# InfluxDB 1 and 2 answer 204 on /ping).
_HTTP_STORES: Final = {
    "victoriametrics": (8428, "/health"),
    "influx2": (8086, "/ping"),
    "influx1": (8086, "/ping"),
}
_POLL_S: Final = 0.05


@dataclass(frozen=True, slots=True)
class CheckResult:
    name: str
    """What was checked: ``broker``, ``register``, ``forwarding soc-syslog`` …"""
    ok: bool
    detail: str
    """One line: what was found, or what is wrong and where."""


def run_checks(settings: CollectorSettings, *, timeout_s: float = 5.0) -> list[CheckResult]:
    results = [
        check_data_dir(settings.data_dir),
        check_broker(settings, timeout_s),
        check_register(settings.register_url(), timeout_s),
        check_timeseries(settings.tsdb, settings.data_dir, timeout_s),
        check_rules(settings.rules_dir),
    ]
    try:
        forwarding = settings.forwarding_settings()
    except (OSError, ValueError) as exc:
        where = settings.forwarding_config
        detail = " ".join(str(exc).split())  # one line even for a pydantic error
        return [*results, CheckResult("forwarding", False, f"{where}: {detail}")]
    enabled = [entry for entry in (forwarding.destinations if forwarding else []) if entry.enabled]
    if not enabled:
        results.append(CheckResult("forwarding", True, "no destinations: alerts stay local"))
    results.extend(check_destination(entry, timeout_s) for entry in enabled)
    return results


def _one_line(error: BaseException) -> str:
    text = " ".join(str(getattr(error, "orig", None) or error).split())
    return text or type(error).__name__


# --- folders -------------------------------------------------------------------------------


_NO_ENTRY = "{path} cannot be reached: permission denied (run as the collector's user)"


def _exists(path: Path) -> bool | None:
    """Whether ``path`` exists; None when a folder on the way may not be entered."""
    try:
        return path.exists()
    except PermissionError:
        return None


def _nearest_existing(path: Path) -> Path:
    path = path.absolute()
    while not os.path.exists(path) and path != path.parent:  # False where it may not look
        path = path.parent
    return path


def check_data_dir(data_dir: Path) -> CheckResult:
    name = "data dir"
    exists = _exists(data_dir)
    if exists is None:
        return CheckResult(name, False, _NO_ENTRY.format(path=data_dir))
    if exists:
        if not data_dir.is_dir():
            return CheckResult(name, False, f"{data_dir} is not a folder")
        if not os.access(data_dir, os.R_OK | os.W_OK | os.X_OK):
            return CheckResult(
                name, False, f"{data_dir} is not writable by this user (run as the collector's)"
            )
        return CheckResult(name, True, f"{data_dir} writable")
    parent = _nearest_existing(data_dir)
    if os.access(parent, os.W_OK | os.X_OK):
        return CheckResult(name, True, f"{data_dir} will be created at start")
    return CheckResult(name, False, f"{data_dir} does not exist and {parent} is not writable")


def check_rules(rules_dir: Path | None) -> CheckResult:
    from campuswatch.collector.alerting import default_rules_dir
    from campuswatch.collector.rules.loader import load_rule_pack
    from campuswatch.collector.rules.model import RulePackError

    directory = rules_dir or default_rules_dir()
    if directory is None:
        return CheckResult(
            "rules", True, "no rule pack (rules_dir unset, none shipped beside this install)"
        )
    try:
        pack = load_rule_pack(directory)
    except RulePackError as exc:
        first = str(exc.problems[0]) if exc.problems else ""
        return CheckResult(
            "rules",
            False,
            f"{len(exc.problems)} problem(s) in {directory}, first: {first} "
            f"(all: campuswatch rules check {directory})",
        )
    except OSError as exc:
        return CheckResult("rules", False, f"{directory}: {exc.strerror or exc}")
    return CheckResult("rules", True, f"{len(pack.rules)} rules in {directory}")


# --- MQTT (broker and MQTT destinations) ---------------------------------------------------


def try_mqtt_login(
    address: BrokerAddress,
    *,
    username: str | None,
    password: str | None,
    tls: TlsOptions | None,
    timeout_s: float,
) -> str | None:
    """Connect and log in once; None when the broker accepted, else why not (one line).

    A client id of its own, clean start: never the collector's id, whose persistent session
    the broker would otherwise hand over (and a running collector would be thrown off)."""
    connection = MqttConnection(
        f"cw-check-{secrets.token_hex(4)}",
        address,
        username=username,
        password=password,
        tls=tls,
        keepalive_s=max(5, int(timeout_s) * 2),
        reconnect_min_s=max(1.0, timeout_s),
        reconnect_max_s=max(1.0, timeout_s),
    )
    connection.start()
    deadline = time.monotonic() + timeout_s
    try:
        while not connection.wait_connected(_POLL_S):
            if connection.failed_attempts:
                return connection.last_error or "connection failed"
            if time.monotonic() > deadline:
                return f"no answer within {timeout_s:g} s"
        return None
    finally:
        connection.stop(timeout_s=timeout_s)


def check_broker(settings: CollectorSettings, timeout_s: float) -> CheckResult:
    try:
        address = parse_broker_url(settings.broker)
    except BrokerUrlError as exc:
        return CheckResult("broker", False, str(exc))
    user = settings.broker_username or address.username
    failure = try_mqtt_login(
        address,
        username=settings.broker_username,
        password=(
            settings.broker_password.get_secret_value() if settings.broker_password else None
        ),
        tls=TlsOptions(ca_file=settings.broker_ca_file),
        timeout_s=timeout_s,
    )
    if failure is not None:
        return CheckResult("broker", False, f"{address}: {failure}")
    return CheckResult("broker", True, f"{address}: logged in as {user or '(anonymous)'}")


# --- register --------------------------------------------------------------------------------


def check_register(url: str, timeout_s: float) -> CheckResult:
    from alembic.script import ScriptDirectory
    from alembic.util import CommandError
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import SQLAlchemyError

    from campuswatch.collector.db.engine import (
        alembic_config,
        current_revision,
        head_revision,
        make_engine,
    )
    from campuswatch.collector.db.existing import sqlite_path

    name = "register"
    try:
        parsed = make_url(url)
    except (ValueError, SQLAlchemyError) as exc:
        return CheckResult(name, False, f"bad database URL: {_one_line(exc)}")
    where = parsed.render_as_string(hide_password=True)
    path = sqlite_path(url)
    options: dict[str, object] = {}
    if path is not None:
        where = str(path)
        exists = _exists(path)
        if exists is None:
            return CheckResult(name, False, _NO_ENTRY.format(path=path))
        if not exists:
            parent = _nearest_existing(path.parent)
            if os.access(parent, os.W_OK | os.X_OK):
                return CheckResult(name, True, f"{path} will be created at first start")
            return CheckResult(name, False, f"{path} does not exist and {parent} is not writable")
        if not os.access(path, os.R_OK | os.W_OK) or not os.access(path.parent, os.W_OK):
            return CheckResult(
                name,
                False,
                f"{path}: not readable and writable by this user (run as the "
                "collector's user, e.g. sudo -u campuswatch …)",
            )
    elif parsed.get_backend_name() == "postgresql":
        options["connect_args"] = {"connect_timeout": max(1, round(timeout_s))}
    try:
        engine = make_engine(url, **options)
    except (ImportError, ValueError, SQLAlchemyError) as exc:
        return CheckResult(name, False, f"{where}: {_one_line(exc)}")
    try:
        revision = current_revision(engine)
    except SQLAlchemyError as exc:
        return CheckResult(name, False, f"cannot connect to {where}: {_one_line(exc)}")
    finally:
        engine.dispose()
    head = head_revision()
    if revision is None:
        return CheckResult(name, True, f"{where}: reachable, empty (schema made at first start)")
    if revision == head:
        return CheckResult(name, True, f"{where}: schema {revision} (current)")
    try:
        known = ScriptDirectory.from_config(alembic_config()).get_revision(revision) is not None
    except CommandError:
        known = False
    if not known:
        return CheckResult(
            name,
            False,
            f"{where}: schema {revision} is unknown to this version (made by a newer "
            "CampusWatch?); install that version or restore a matching backup",
        )
    return CheckResult(
        name, True, f"{where}: schema {revision}, migrated to {head} when the collector starts"
    )


# --- time series -----------------------------------------------------------------------------


def check_timeseries(url: str | None, data_dir: Path, timeout_s: float) -> CheckResult:
    name = "time series"
    text = (url or "").strip()
    scheme = urlsplit(text).scheme.lower() if text else "sqlite"
    if scheme == "sqlite":
        return _check_sqlite_series(text, data_dir)
    from campuswatch.collector.tsdb.urls import writer_from_url

    try:
        writer_from_url(text, data_dir).close()  # validates the URL as the collector will
    except ValueError as exc:
        return CheckResult(name, False, str(exc))
    parts = urlsplit(text)
    tls = scheme.endswith("s") and scheme[:-1] in _HTTP_STORES
    kind = scheme[:-1] if tls else scheme
    query = parts.query.lower()
    tls = tls or "tls=1" in query or "tls=true" in query
    verify = "verify=0" not in query and "verify=false" not in query
    port, health_path = _HTTP_STORES[kind]
    host = f"[{parts.hostname}]" if parts.hostname and ":" in parts.hostname else parts.hostname
    base = f"{'https' if tls else 'http'}://{host}:{parts.port or port}"
    return _http_reachable(name, base + health_path, verify, None, timeout_s, healthy=_below_300)


def _check_sqlite_series(url: str, data_dir: Path) -> CheckResult:
    from campuswatch.collector.tsdb.urls import DEFAULT_SQLITE_NAME

    path_text = urlsplit(url).path if url else ""
    path_text = path_text[1:] if path_text.startswith("/") else path_text
    relative = Path(unquote(path_text)) if path_text else Path(DEFAULT_SQLITE_NAME)
    path = relative if relative.is_absolute() else data_dir / relative
    exists = _exists(path)
    if exists is None:
        return CheckResult("time series", False, _NO_ENTRY.format(path=f"SQLite {path}"))
    if exists:
        if os.access(path, os.R_OK | os.W_OK):
            return CheckResult("time series", True, f"SQLite {path}")
        return CheckResult("time series", False, f"SQLite {path}: not writable by this user")
    parent = _nearest_existing(path.parent)
    if os.access(parent, os.W_OK | os.X_OK):
        return CheckResult("time series", True, f"SQLite {path} will be created at start")
    return CheckResult("time series", False, f"{path} cannot be created: {parent} not writable")


# --- HTTP (time-series health, webhooks) -------------------------------------------------------


def _below_300(status: int) -> bool:
    return status < 300


def _answered(status: int) -> bool:
    """A server answered for itself; a gateway error means the service behind is away."""
    return status not in (502, 503, 504)


def _http_reachable(
    name: str,
    url: str,
    verify: bool | str,
    headers: dict[str, str] | None,
    timeout_s: float,
    *,
    healthy: Callable[[int], bool],
    method: str = "GET",
) -> CheckResult:
    import httpx

    shown = url.split("?", 1)[0]
    try:
        with httpx.Client(verify=verify, timeout=timeout_s, follow_redirects=False) as client:
            response = client.request(method, url, headers=headers)
    except httpx.HTTPError as exc:
        cause = exc.__cause__ or exc.__context__
        reason = describe_connect_failure(cause) if isinstance(cause, OSError) else _one_line(exc)
        return CheckResult(name, False, f"{shown}: {reason}")
    if not healthy(response.status_code):
        return CheckResult(name, False, f"{shown}: answered HTTP {response.status_code}")
    return CheckResult(name, True, f"{shown}: answered HTTP {response.status_code}")


# --- forwarding destinations -------------------------------------------------------------------


def check_destination(entry: TargetSettings, timeout_s: float) -> CheckResult:
    name = f"forwarding {entry.name}"
    if isinstance(entry, SyslogTargetSettings):
        return _check_syslog(name, entry, timeout_s)
    if isinstance(entry, WebhookTargetSettings):
        options = entry.options
        verify: bool | str = (options.ca_file or True) if options.verify_tls else False
        # HEAD: nothing is delivered; an answer proves the address, the TLS certificate and
        # a listening server (a 405 or 501 for HEAD is fine, a gateway error is not).
        result = _http_reachable(
            name, options.url, verify, None, timeout_s, healthy=_answered, method="HEAD"
        )
        return CheckResult(name, result.ok, f"webhook {result.detail}")
    assert isinstance(entry, MqttTargetSettings)
    options_mqtt = entry.options
    address_text = destination_address(entry)
    try:
        address = parse_broker_url(options_mqtt.broker_url)
    except BrokerUrlError as exc:
        return CheckResult(name, False, str(exc))
    tls = (
        TlsOptions(options_mqtt.ca_file, options_mqtt.cert_file, options_mqtt.key_file)
        if options_mqtt.ca_file or options_mqtt.cert_file
        else None
    )
    failure = try_mqtt_login(
        address, username=None, password=None, tls=tls, timeout_s=min(timeout_s, 30.0)
    )
    if failure is not None:
        return CheckResult(name, False, f"mqtt {address_text}: {failure}")
    return CheckResult(name, True, f"mqtt {address_text}: logged in")


def _check_syslog(name: str, entry: SyslogTargetSettings, timeout_s: float) -> CheckResult:
    from campuswatch.collector.forward.syslog import DEFAULT_PORTS, make_tls_context

    options = entry.options
    port = options.port or DEFAULT_PORTS[options.transport]
    where = f"syslog {options.transport}://{options.host}:{port}"
    if options.transport == "udp":
        try:
            socket.getaddrinfo(options.host, port, type=socket.SOCK_DGRAM)
        except OSError as exc:
            return CheckResult(name, False, f"{where}: {describe_connect_failure(exc)}")
        return CheckResult(name, True, f"{where}: address resolves (UDP confirms no delivery)")
    try:
        context = (
            make_tls_context(
                ca_file=options.ca_file,
                cert_file=options.cert_file,
                key_file=options.key_file,
                verify=options.verify,
            )
            if options.transport == "tls"
            else None
        )
    except (OSError, ssl.SSLError) as exc:
        return CheckResult(name, False, f"{where}: TLS files: {describe_connect_failure(exc)}")
    try:
        with socket.create_connection((options.host, port), timeout=timeout_s) as raw:
            if context is not None:
                server_name = options.server_name or options.host
                with context.wrap_socket(raw, server_hostname=server_name) as secured:
                    version = secured.version()
                return CheckResult(name, True, f"{where}: connected, {version}")
    except OSError as exc:
        return CheckResult(name, False, f"{where}: {describe_connect_failure(exc)}")
    return CheckResult(name, True, f"{where}: connected")
