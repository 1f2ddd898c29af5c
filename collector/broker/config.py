"""``campuswatch broker config``: Mosquitto's configuration, certificates and accounts.

Re-running it is safe: an existing CA in the output folder is reused (agents already trust
it), the server certificate is re-issued for the current host names, and enrolled devices
keep their passwords. Only the collector's password file is (re)written when missing.
"""

from __future__ import annotations

import csv
import grp
import ipaddress
import os
import pwd
import shutil
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Final

from campuswatch.collector.broker.acl import ROLES, Role
from campuswatch.collector.broker.credentials import (
    ACL_FILE,
    PASSWORD_FILE,
    BrokerCredentials,
    write_atomically,
)
from campuswatch.collector.broker.pki import (
    CertificatePair,
    check_ca,
    create_ca,
    is_host_address,
    issue_server_certificate,
)
from campuswatch.wire.topics import is_identifier

CONFIG_FILE: Final = "mosquitto.conf"
COLLECTOR_PASSWORD_FILE: Final = "collector.password"
ISSUED_FILE: Final = "issued-credentials.csv"
# In a folder of its own that Mosquitto's user owns: Mosquitto writes the pid file after it
# has dropped root, so the (root-owned) output folder itself is out of its reach.
RUN_DIR: Final = "run"
PID_FILE: Final = f"{RUN_DIR}/mosquitto.pid"
DATA_DIR: Final = "data"
# The largest wire message (an inventory with a full software list) is capped at 512 KiB.
MAX_PACKET_BYTES: Final = 1024 * 1024


class BrokerConfigError(ValueError):
    """Options that cannot produce a safe broker configuration."""


@dataclass(frozen=True, slots=True)
class BrokerConfigOptions:
    out_dir: Path
    hostnames: tuple[str, ...]
    listen_port: int = 8883
    listen_address: str | None = None
    plain_port: int | None = None
    plain_bind: str = "127.0.0.1"
    ca_cert: Path | None = None
    ca_key: Path | None = None
    run_as_user: str | None = None
    """Mosquitto's ``user``: the account it drops to when started as root (default mosquitto)."""
    collector_username: str = "collector"
    devices_file: Path | None = None


@dataclass(slots=True)
class BrokerConfigResult:
    config_file: Path
    ca_file: Path
    server_cert: CertificatePair
    collector_password_file: Path
    created_ca: bool
    issued: list[tuple[str, str, str]] = field(default_factory=list)
    """(site, device id, role) of accounts created from the devices file."""
    issued_file: Path | None = None


@dataclass(frozen=True, slots=True)
class DeviceLine:
    site: str
    device_id: str
    role: Role


def parse_devices_file(path: Path) -> list[DeviceLine]:
    """``site,device_id[,role]`` per line (``#`` comments); every bad line reported at once."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise BrokerConfigError(f"cannot read devices file {path}: {exc}") from None
    devices: list[DeviceLine] = []
    problems: list[str] = []
    seen: dict[str, int] = {}
    for number, row in enumerate(csv.reader(text.splitlines()), start=1):
        cells = [cell.strip() for cell in row]
        if not cells or not cells[0] or cells[0].startswith("#"):
            continue
        if number == 1 and cells[:2] == ["site", "device_id"]:
            continue  # a header line
        if len(cells) not in (2, 3):
            problems.append(f"{path}:{number}: expected site,device_id[,role]")
            continue
        site, device_id = cells[0], cells[1]
        role = cells[2] if len(cells) == 3 and cells[2] else "device"
        if not is_identifier(site):
            problems.append(f"{path}:{number}: site {site[:80]!r} is not a valid identifier")
        if not is_identifier(device_id):
            problems.append(f"{path}:{number}: device id {device_id[:80]!r} is not valid")
        if role not in ("device", "scanner"):
            problems.append(f"{path}:{number}: role {role[:40]!r} must be device or scanner")
        if device_id in seen:
            problems.append(
                f"{path}:{number}: device {device_id!r} already on line {seen[device_id]}"
            )
        seen[device_id] = number
        if role in ROLES and is_identifier(site) and is_identifier(device_id):
            devices.append(DeviceLine(site, device_id, role))  # type: ignore[arg-type]
    if problems:
        raise BrokerConfigError("\n".join(problems))
    return devices


def render_mosquitto_conf(options: BrokerConfigOptions, server: CertificatePair) -> str:
    out = options.out_dir.resolve()
    lines = [
        f"# Written by `campuswatch broker config` at {datetime.now(UTC):%Y-%m-%d %H:%M} UTC.",
        "# Re-run that command rather than editing: accounts live in credentials.json.",
        "per_listener_settings false",
        "allow_anonymous false",
        f"password_file {out / PASSWORD_FILE}",
        f"acl_file {out / ACL_FILE}",
        f"pid_file {out / PID_FILE}",
        "persistence true",
        f"persistence_location {out / DATA_DIR}/",
        "autosave_interval 60",
        f"max_packet_size {MAX_PACKET_BYTES}",
        # Collectors keep persistent sessions: an hour of a district's traffic fits.
        "max_queued_messages 100000",
        "connection_messages true",
        "log_dest stderr",
    ]
    if options.run_as_user:
        lines.append(f"user {options.run_as_user}")
    lines += [
        "",
        "# Devices: TLS only.",
        f"listener {options.listen_port}"
        + (f" {options.listen_address}" if options.listen_address else ""),
        f"certfile {server.cert.resolve()}",
        f"keyfile {server.key.resolve()}",
        "tls_version tlsv1.2",
    ]
    if options.plain_port is not None:
        lines += [
            "",
            "# The collector on this host: plain MQTT, loopback only, still with a password.",
            f"listener {options.plain_port} {options.plain_bind}",
        ]
    return "\n".join(lines) + "\n"


def _check_options(options: BrokerConfigOptions) -> None:
    if (options.ca_cert is None) != (options.ca_key is None):
        raise BrokerConfigError("--ca-cert and --ca-key go together")
    for label, port in (
        ("--listen-port", options.listen_port),
        ("--plain-port", options.plain_port),
    ):
        if port is not None and not 1 <= port <= 65535:
            raise BrokerConfigError(f"{label} {port} is not a TCP port")
    if options.plain_port is not None and options.plain_port == options.listen_port:
        raise BrokerConfigError("--plain-port and --listen-port must differ")
    if options.plain_port is not None:
        try:
            loopback = ipaddress.ip_address(options.plain_bind).is_loopback
        except ValueError:
            loopback = options.plain_bind == "localhost"
        if not loopback:
            # Passwords would cross the school LAN in clear text.
            raise BrokerConfigError(
                f"--plain-bind {options.plain_bind!r} is not a loopback address; devices "
                "must use the TLS listener"
            )
    if not options.hostnames:
        raise BrokerConfigError("give at least one --hostname (name or IP devices connect to)")
    if options.listen_address is not None and not is_host_address(options.listen_address):
        raise BrokerConfigError(
            f"--listen-address {options.listen_address[:80]!r} is not an IP address or host name"
        )
    if not str(options.out_dir.resolve()).isprintable():
        raise BrokerConfigError("--out must not contain control characters or line breaks")
    if options.run_as_user:
        try:
            pwd.getpwnam(options.run_as_user)
        except KeyError:
            raise BrokerConfigError(f"user {options.run_as_user!r} does not exist") from None


def write_broker_config(options: BrokerConfigOptions) -> BrokerConfigResult:
    _check_options(options)
    devices = parse_devices_file(options.devices_file) if options.devices_file else []
    out = options.out_dir
    file_group = _file_group(options.run_as_user)
    # Explicit modes, whatever the umask: Mosquitto's user must pass through the folder.
    _make_directory(out, 0o755)
    broker_user = (options.run_as_user or "mosquitto") if file_group is not None else None
    _make_directory(out / DATA_DIR, 0o700, owner=broker_user)
    _make_directory(out / RUN_DIR, 0o755, owner=broker_user)

    created_ca = False
    if options.ca_cert is not None and options.ca_key is not None:
        ca = CertificatePair(options.ca_cert, options.ca_key)
        check_ca(ca)
        if options.ca_cert.resolve() != (out / "ca.pem").resolve():
            # For clients; the key stays put.
            write_atomically(out / "ca.pem", _read_pem(options.ca_cert), mode=0o644)
    elif (out / "ca.pem").is_file() and (out / "ca.key").is_file():
        ca = CertificatePair(out / "ca.pem", out / "ca.key")
        check_ca(ca)
    else:
        ca = create_ca(out)
        created_ca = True
    server = issue_server_certificate(ca, out, options.hostnames, key_group=file_group)

    store = BrokerCredentials(out)
    store.remember_settings(pid_file=(out / PID_FILE).resolve(), file_group=file_group)
    password_file = out / COLLECTOR_PASSWORD_FILE
    try:
        known = password_file.read_text(encoding="utf-8").strip() or None
    except (OSError, UnicodeDecodeError):
        known = None
    password = store.ensure_service_account(options.collector_username, known)
    if password != known:
        write_atomically(password_file, password + "\n", mode=0o600)

    result = BrokerConfigResult(
        config_file=out / CONFIG_FILE,
        ca_file=out / "ca.pem",
        server_cert=server,
        collector_password_file=password_file,
        created_ca=created_ca,
    )
    existing = {account.username for account in store.list()}
    issued_rows: list[str] = []
    for device in devices:
        if device.device_id in existing:
            continue  # already enrolled: keep its password
        secret = store.add_device(device.site, device.device_id, role=device.role)
        result.issued.append((device.site, device.device_id, device.role))
        issued_rows.append(f"{device.site},{device.device_id},{device.role},{secret}\n")
    if issued_rows:
        result.issued_file = out / ISSUED_FILE
        write_atomically(
            result.issued_file, "site,device_id,role,password\n" + "".join(issued_rows), mode=0o600
        )
    store.write_files()
    config_text = render_mosquitto_conf(options, server)
    check_mosquitto_conf(config_text)
    write_atomically(result.config_file, config_text, mode=0o644)
    return result


def _make_directory(path: Path, mode: int, *, owner: str | None = None) -> None:
    path.mkdir(parents=True, exist_ok=True)
    os.chmod(path, mode)
    if owner is not None and os.geteuid() == 0:
        shutil.chown(path, user=owner)


def _read_pem(path: Path) -> str:
    try:
        return path.read_text(encoding="ascii")
    except (OSError, UnicodeDecodeError) as exc:
        raise BrokerConfigError(f"cannot read {path}: {exc}") from None


# Every option the generated configuration uses; anything else read back is an injection.
_CONF_KEYS: Final = frozenset(
    {
        "per_listener_settings", "allow_anonymous", "password_file", "acl_file", "pid_file",
        "persistence", "persistence_location", "autosave_interval", "max_packet_size",
        "max_queued_messages", "connection_messages", "log_dest", "user", "listener",
        "certfile", "keyfile", "tls_version",
    }
)  # fmt: skip


def check_mosquitto_conf(text: str) -> None:
    """Read the configuration back as Mosquitto would; refuse anything we did not mean.

    A value with a line break (a folder name, an address) would start a line of its own;
    Mosquitto would obey it — or, worse, refuse to start at the next restart.
    """
    if not text.endswith("\n"):
        raise BrokerConfigError("mosquitto.conf: the last line is cut off")
    seen: set[str] = set()
    for number, line in enumerate(text.split("\n")[:-1], start=1):
        if not line or line.startswith("#"):
            continue
        key, _, value = line.partition(" ")
        if key not in _CONF_KEYS or not value or not value.isprintable():
            raise BrokerConfigError(f"mosquitto.conf line {number}: unexpected {line[:80]!r}")
        if key in {"allow_anonymous", "password_file", "acl_file", "user"} and key in seen:
            raise BrokerConfigError(f"mosquitto.conf line {number}: {key} given twice")
        seen.add(key)
    if "allow_anonymous false" not in text.split("\n"):
        raise BrokerConfigError("mosquitto.conf: allow_anonymous false is missing")


def _file_group(run_as_user: str | None) -> str | None:
    """The group Mosquitto runs as, so it can read its key and account files after dropping root."""
    user = run_as_user or "mosquitto"
    try:
        entry = pwd.getpwnam(user)
    except KeyError:
        return None
    try:
        return grp.getgrgid(entry.pw_gid).gr_name
    except KeyError:
        return None
