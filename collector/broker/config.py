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
from urllib.parse import urlsplit

from campuswatch.collector.broker.acl import DEVICE_KINDS, ROLES, Role, edge_username
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
from campuswatch.wire.topics import PREFIX, VERSION, is_identifier

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
# Per client of the district broker, i.e. per collector session. Schools' edges flush what they
# queued during an outage faster than a collector stores it, and the broker drops what goes
# beyond this bound: measured, one edge's 180,000 queued messages lost 25,556 with a bound of
# 100,000 and none with 1,000,000, which costs at most ~0.7 KB of broker memory per message
# held (docs/broker.md, "School edge"). Only a collector that falls behind fills it.
DISTRICT_QUEUE_MESSAGES: Final = 1_000_000
# An edge must hold an hour of its school's traffic while the uplink is down. An agent sends
# about 2.2 messages a minute with its default intervals (health and net each minute, av
# every 5); 6 a minute leaves room for classroom devices' telemetry and bursts of events:
# 500 devices x 6 msgs/min x 60 min = 180,000 messages (docs/broker.md, "School edge").
EDGE_MESSAGES_PER_DEVICE_MINUTE: Final = 6
EDGE_OUTAGE_MINUTES: Final = 60
EDGE_DISTRICT_CA_FILE: Final = "district-ca.pem"
BRIDGE_CONNECTION: Final = "district"


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
    edge: EdgeOptions | None = None
    """A school's edge broker bridged to the district's (``--bridge-to``)."""
    queue_messages: int | None = None
    """Mosquitto's ``max_queued_messages``; default: an edge's hour, or the district's bound."""


@dataclass(frozen=True, slots=True)
class EdgeOptions:
    """How a school's edge broker reaches the district broker, and for which school."""

    bridge_to: str
    """``mqtts://HOST:PORT`` of the district broker (TLS only: the uplink crosses the Internet)."""
    site: str
    district_ca: Path
    """The district broker's CA certificate (its ``ca.pem``)."""
    password_file: Path
    """The edge's district login's password, as ``campuswatch broker add-edge`` printed it."""
    username: str | None = None
    """Default ``edge-{site}``."""
    school_devices: int = 500
    """Sizes the queue that holds an hour of the school's messages while the uplink is down."""
    restart_timeout_s: tuple[int, int] = (5, 60)
    """Mosquitto's bridge back-off: first retry after the first, growing up to the second."""

    @property
    def login(self) -> str:
        return self.username or edge_username(self.site)

    @property
    def queue_messages(self) -> int:
        return self.school_devices * EDGE_MESSAGES_PER_DEVICE_MINUTE * EDGE_OUTAGE_MINUTES


def parse_bridge_url(url: str) -> tuple[str, int]:
    """``mqtts://HOST[:PORT]`` → (host, port 8883 by default); plain ``mqtt://`` is refused."""
    if not url.isprintable():
        raise BrokerConfigError("--bridge-to must not contain control characters")
    parts = urlsplit(url)
    if parts.scheme != "mqtts":
        raise BrokerConfigError(
            f"--bridge-to {url[:80]!r}: give mqtts://HOST:PORT (the uplink must use TLS)"
        )
    try:
        port = parts.port or 8883
    except ValueError:
        raise BrokerConfigError(f"--bridge-to {url[:80]!r}: the port is not a TCP port") from None
    host = parts.hostname or ""
    if parts.path not in ("", "/") or parts.query or parts.username or not is_host_address(host):
        raise BrokerConfigError(f"--bridge-to {url[:80]!r}: expected mqtts://HOST:PORT")
    return host, port


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


def render_mosquitto_conf(
    options: BrokerConfigOptions, server: CertificatePair, bridge_password: str = ""
) -> str:
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
        # Per client: a district's collectors, or an edge's bridge (an hour of its school).
        f"max_queued_messages {queue_messages(options)}",
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
    if options.edge is not None:
        lines += render_bridge(options.edge, bridge_password, out / EDGE_DISTRICT_CA_FILE)
    return "\n".join(lines) + "\n"


def queue_messages(options: BrokerConfigOptions) -> int:
    if options.queue_messages is not None:
        return options.queue_messages
    return options.edge.queue_messages if options.edge else DISTRICT_QUEUE_MESSAGES


def render_bridge(edge: EdgeOptions, password: str, district_ca: Path) -> list[str]:
    """The ``connection`` block that carries the school's topics to the district broker.

    ``cleansession false`` plus persistence: while the uplink is down, the bridge is a
    disconnected persistent client of this broker, so its QoS 1 messages queue here (up to
    ``max_queued_messages``) and survive a restart of this broker; they go up in order when
    the link returns. Only the kinds a device may send go up, one line each, so a ``cmd``
    never leaves the school; commands for the school's devices come down.
    """
    host, port = parse_bridge_url(edge.bridge_to)
    address = f"[{host}]" if ":" in host else host
    school = f"{PREFIX}/{VERSION}/{edge.site}/+"
    first, most = edge.restart_timeout_s
    return [
        "",
        f"# Uplink to the district broker as {edge.login}: this school's topics only.",
        f"connection {BRIDGE_CONNECTION}",
        f"address {address}:{port}",
        f"bridge_cafile {district_ca.resolve()}",
        "bridge_tls_version tlsv1.2",
        "bridge_protocol_version mqttv311",
        # Tells the district broker it is a bridge: it does not echo our messages back.
        "try_private true",
        f"remote_clientid {edge.login}",
        f"remote_username {edge.login}",
        f"remote_password {password}",
        f"local_clientid bridge-{edge.login}",
        "cleansession false",
        # Mosquitto's "1"/"0" connection notices are not wire messages; the district would
        # count them as rejects (and the ACL refuses the $SYS topic anyway).
        "notifications false",
        f"restart_timeout {first} {most}",
        "keepalive_interval 60",
        *(f"topic {school}/{kind} out 1" for kind in DEVICE_KINDS),
        f"topic {school}/cmd in 1",
    ]


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
    if options.queue_messages is not None and options.queue_messages < 1000:
        raise BrokerConfigError("--queue-messages below 1000 would drop messages at once")
    if options.edge is not None:
        _check_edge(options.edge, options.devices_file)


def _check_edge(edge: EdgeOptions, devices_file: Path | None) -> None:
    parse_bridge_url(edge.bridge_to)
    if not is_identifier(edge.site):
        raise BrokerConfigError(f"--site {edge.site[:80]!r} is not a valid identifier")
    if not is_identifier(edge.login):
        raise BrokerConfigError(f"bridge user {edge.login[:80]!r} is not a valid identifier")
    if edge.school_devices < 1:
        raise BrokerConfigError("--school-devices must be at least 1")
    first, most = edge.restart_timeout_s
    if not 1 <= first <= most:
        raise BrokerConfigError("bridge restart timeouts must be 1 <= first <= most seconds")
    for label, path in (
        ("--bridge-ca", edge.district_ca),
        ("--bridge-password-file", edge.password_file),
    ):
        if not path.is_file():
            raise BrokerConfigError(f"{label} {path} is not a file")
    for device in parse_devices_file(devices_file) if devices_file else []:
        if device.site != edge.site:
            raise BrokerConfigError(
                f"{devices_file}: {device.device_id} is at site {device.site}; this edge "
                f"carries site {edge.site} only"
            )


def _read_bridge_password(path: Path) -> str:
    """The first line of the file ``add-edge`` wrote, or ``USER PASSWORD`` as it printed."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise BrokerConfigError(f"cannot read {path}: {exc}") from None
    words = lines[0].split() if lines else []
    password = words[-1] if words else ""
    # It goes into mosquitto.conf as one word on one line.
    if not password or not password.isprintable() or not password.isascii() or " " in password:
        raise BrokerConfigError(f"{path}: no password on its first line")
    return password


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

    bridge_password = ""
    if options.edge is not None:
        bridge_password = _read_bridge_password(options.edge.password_file)
        district_ca = _read_pem(options.edge.district_ca)
        if "-----BEGIN CERTIFICATE-----" not in district_ca:
            raise BrokerConfigError(f"--bridge-ca {options.edge.district_ca} holds no certificate")
        # A copy next to the config: the edge keeps working when the original is moved.
        write_atomically(out / EDGE_DISTRICT_CA_FILE, district_ca, mode=0o644)

    store = BrokerCredentials(out)
    store.remember_settings(
        pid_file=(out / PID_FILE).resolve(),
        file_group=file_group,
        only_site=options.edge.site if options.edge else None,
    )
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
    config_text = render_mosquitto_conf(options, server, bridge_password)
    check_mosquitto_conf(config_text, bridged=options.edge is not None)
    if options.edge is None:
        write_atomically(result.config_file, config_text, mode=0o644)
    else:
        # It holds the edge's district password; Mosquitto re-reads it as its user on SIGHUP.
        write_atomically(result.config_file, config_text, mode=0o640, group=file_group)
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
# The bridge's options, allowed only after its ``connection`` line.
_BRIDGE_KEYS: Final = frozenset(
    {
        "address", "bridge_cafile", "bridge_tls_version", "bridge_protocol_version",
        "try_private", "remote_clientid", "remote_username", "remote_password",
        "local_clientid", "cleansession", "notifications", "restart_timeout",
        "keepalive_interval", "topic",
    }
)  # fmt: skip


def check_mosquitto_conf(text: str, *, bridged: bool = False) -> None:
    """Read the configuration back as Mosquitto would; refuse anything we did not mean.

    A value with a line break (a folder name, an address) would start a line of its own;
    Mosquitto would obey it — or, worse, refuse to start at the next restart. A bridge must
    be exactly one ``connection`` block, last, whose ``topic`` lines name one school.
    """
    if not text.endswith("\n"):
        raise BrokerConfigError("mosquitto.conf: the last line is cut off")
    seen: set[str] = set()
    bridge: dict[str, list[str]] | None = None
    for number, line in enumerate(text.split("\n")[:-1], start=1):
        if not line or line.startswith("#"):
            continue
        key, _, value = line.partition(" ")
        if not value or not value.isprintable():
            raise BrokerConfigError(f"mosquitto.conf line {number}: unexpected {line[:80]!r}")
        if key == "connection" and bridged and bridge is None and value == BRIDGE_CONNECTION:
            bridge = {}
            continue
        allowed = _BRIDGE_KEYS if bridge is not None else _CONF_KEYS
        if key not in allowed:
            raise BrokerConfigError(f"mosquitto.conf line {number}: unexpected {line[:80]!r}")
        if bridge is not None:
            if key != "topic" and key in bridge:
                raise BrokerConfigError(f"mosquitto.conf line {number}: {key} given twice")
            bridge.setdefault(key, []).append(value)
            continue
        if key in {"allow_anonymous", "password_file", "acl_file", "user"} and key in seen:
            raise BrokerConfigError(f"mosquitto.conf line {number}: {key} given twice")
        seen.add(key)
    if "allow_anonymous false" not in text.split("\n"):
        raise BrokerConfigError("mosquitto.conf: allow_anonymous false is missing")
    if bridged:
        if bridge is None:
            raise BrokerConfigError("mosquitto.conf: the bridge's connection block is missing")
        _check_bridge_block(bridge)


def _check_bridge_block(bridge: dict[str, list[str]]) -> None:
    for key in ("address", "bridge_cafile", "remote_username", "remote_password", "topic"):
        if key not in bridge:
            raise BrokerConfigError(f"mosquitto.conf: the bridge has no {key}")
    for key, meant in (("cleansession", "false"), ("try_private", "true")):
        if bridge.get(key) != [meant]:
            raise BrokerConfigError(f"mosquitto.conf: the bridge needs {key} {meant}")
    if any(len(value.split(" ")) != 1 for value in bridge["remote_password"]):
        raise BrokerConfigError("mosquitto.conf: the bridge password is not one word")
    sites: set[str] = set()
    for value in bridge["topic"]:
        words = value.split(" ")
        levels = words[0].split("/")
        direction = words[1] if len(words) == 3 and words[2] == "1" else None
        kind = levels[4] if len(levels) == 5 and levels[3] == "+" else None
        # Device kinds go up, commands come down: nothing else, at QoS 1, for one school.
        ours = (direction == "out" and kind in DEVICE_KINDS) or (
            direction == "in" and kind == "cmd"
        )
        if not ours or levels[:2] != [PREFIX, VERSION] or not is_identifier(levels[2]):
            raise BrokerConfigError(f"mosquitto.conf: bridge topic {value[:80]!r} is not ours")
        sites.add(levels[2])
    if len(sites) != 1:
        raise BrokerConfigError(f"mosquitto.conf: the bridge carries sites {sorted(sites)}")


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
