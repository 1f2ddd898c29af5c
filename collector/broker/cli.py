"""``campuswatch broker …``: write the Mosquitto configuration and manage device logins."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(
    help="Mosquitto with TLS, per-device passwords and an ACL that pins each device to its "
    "own topics.",
    no_args_is_help=True,
    add_completion=False,
)


def _broker_folder(directory: Path) -> Path:
    """Refuse a folder that `broker config` did not write (and holds no credential store):
    a login written there would be printed as if it worked, and never read by the broker."""
    from campuswatch.collector.broker.config import CONFIG_FILE
    from campuswatch.collector.broker.credentials import STORE_FILE

    if not (directory / CONFIG_FILE).is_file() and not (directory / STORE_FILE).is_file():
        raise typer.BadParameter(
            f"{directory} holds no {CONFIG_FILE} from `campuswatch broker config` (nor a "
            f"{STORE_FILE}): give the folder that command wrote"
        )
    return directory


DirOption = Annotated[
    Path,
    typer.Option(
        "--dir",
        "-d",
        help="The folder `broker config` wrote.",
        exists=True,  # a mistyped folder must not get a login the broker never reads
        file_okay=False,
        callback=_broker_folder,
    ),
]
PidOption = Annotated[
    int | None, typer.Option("--pid", help="Broker pid to reload (default: from its pid file).")
]


@app.command("config")
def config(
    out: Annotated[
        Path, typer.Option("--out", "-o", help="Folder for every file.", file_okay=False)
    ],
    hostname: Annotated[
        list[str] | None,
        typer.Option(
            "--hostname",
            help="Name or IP devices use to reach the broker (repeat). Default: this host's "
            "name, localhost and 127.0.0.1.",
        ),
    ] = None,
    ca_cert: Annotated[
        Path | None, typer.Option(help="Your own CA certificate (PEM) to sign the server's.")
    ] = None,
    ca_key: Annotated[Path | None, typer.Option(help="Its private key (PEM).")] = None,
    create_ca: Annotated[
        bool,
        typer.Option(
            "--create-ca", help="Make a CA in --out (the default; an existing one is reused)."
        ),
    ] = False,
    listen_port: Annotated[int, typer.Option(help="TLS listener for devices.")] = 8883,
    listen_address: Annotated[
        str | None, typer.Option(help="Address the TLS listener binds (default: all).")
    ] = None,
    plain_port: Annotated[
        int | None, typer.Option(help="Also a plain listener for a collector on this host.")
    ] = None,
    plain_bind: Annotated[str, typer.Option(help="Loopback address of the plain listener.")] = (
        "127.0.0.1"
    ),
    devices: Annotated[
        Path | None,
        typer.Option(help="CSV site,device_id[,role] of devices to create logins for."),
    ] = None,
    collector_user: Annotated[str, typer.Option(help="The collector's broker login.")] = (
        "collector"
    ),
    run_as: Annotated[
        str | None, typer.Option(help="Mosquitto's `user` setting (it drops root to this user).")
    ] = None,
    queue_messages: Annotated[
        int | None,
        typer.Option(
            help="Messages Mosquitto holds per client (default 1,000,000 on a district broker, "
            "an hour of the school on an edge)."
        ),
    ] = None,
    bridge_to: Annotated[
        str | None,
        typer.Option(
            help="School edge: bridge this school's topics to the district broker "
            "mqtts://HOST:PORT (needs --site, --bridge-ca, --bridge-password-file)."
        ),
    ] = None,
    site: Annotated[str | None, typer.Option(help="School edge: the school's site id.")] = None,
    bridge_ca: Annotated[
        Path | None, typer.Option(help="School edge: the district broker's ca.pem.")
    ] = None,
    bridge_password_file: Annotated[
        Path | None,
        typer.Option(help="School edge: its district password (`broker add-edge` output)."),
    ] = None,
    bridge_user: Annotated[
        str | None, typer.Option(help="School edge: its district login (default edge-SITE).")
    ] = None,
    school_devices: Annotated[
        int, typer.Option(help="School edge: devices at the school; sizes the 1-hour queue.")
    ] = 500,
    bridge_retry_s: Annotated[
        tuple[int, int],
        typer.Option(help="School edge: first and longest wait (s) between uplink retries."),
    ] = (5, 60),
) -> None:
    """Write mosquitto.conf, certificates, password file and ACL into --out.

    With --bridge-to it is a school's edge broker: the school's devices log in here, and its
    messages go up to the district broker (queued here while the uplink is down)."""
    from campuswatch.collector.broker.config import (
        BrokerConfigError,
        BrokerConfigOptions,
        EdgeOptions,
        write_broker_config,
    )
    from campuswatch.collector.broker.credentials import CredentialsError
    from campuswatch.collector.broker.pki import CertificateError

    if create_ca and (ca_cert or ca_key):
        raise typer.BadParameter("--create-ca cannot be combined with --ca-cert/--ca-key")
    names = tuple(hostname or (socket.gethostname(), "localhost", "127.0.0.1"))
    edge = None
    if bridge_to is not None:
        if site is None or bridge_ca is None or bridge_password_file is None:
            raise typer.BadParameter(
                "--bridge-to needs --site, --bridge-ca and --bridge-password-file"
            )
        edge = EdgeOptions(
            bridge_to=bridge_to,
            site=site,
            district_ca=bridge_ca,
            password_file=bridge_password_file,
            username=bridge_user,
            school_devices=school_devices,
            restart_timeout_s=bridge_retry_s,
        )
    elif site or bridge_ca or bridge_password_file or bridge_user:
        raise typer.BadParameter("--site and the --bridge-* options go with --bridge-to")
    options = BrokerConfigOptions(
        out_dir=out,
        hostnames=names,
        listen_port=listen_port,
        listen_address=listen_address,
        plain_port=plain_port,
        plain_bind=plain_bind,
        ca_cert=ca_cert,
        ca_key=ca_key,
        run_as_user=run_as,
        collector_username=collector_user,
        devices_file=devices,
        edge=edge,
        queue_messages=queue_messages,
    )
    try:
        result = write_broker_config(options)
    except (BrokerConfigError, CertificateError, CredentialsError, OSError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    typer.echo(f"config:    {result.config_file}   (start: mosquitto -c {result.config_file})")
    typer.echo(f"CA:        {result.ca_file}{'  (new)' if result.created_ca else ''}")
    typer.echo(f"server:    {result.server_cert.cert} for {', '.join(names)}")
    typer.echo(f"collector: user {collector_user}, password in {result.collector_password_file}")
    if result.issued_file is not None:
        typer.echo(f"devices:   {len(result.issued)} new login(s) in {result.issued_file}")
    if edge is not None:
        typer.echo(
            f"bridge:    {edge.bridge_to} as {edge.login}, site {edge.site}; queue "
            f"{edge.queue_messages} messages (1 h of {edge.school_devices} devices)"
        )


@app.command("add-edge")
def add_edge(
    directory: DirOption,
    site: Annotated[str, typer.Option(help="The school whose edge broker bridges here.")],
    password_file: Annotated[
        Path | None,
        typer.Option(help="Also write the password to this file (mode 0600) for the edge."),
    ] = None,
    pid: PidOption = None,
) -> None:
    """On the district broker: a login for a school's edge bridge (edge-SITE), allowed to
    publish that school's topics only and to receive its devices' commands."""
    from campuswatch.collector.broker.credentials import (
        BrokerCredentials,
        CredentialsError,
        write_atomically,
    )

    try:
        username, password = BrokerCredentials(directory, pid=pid).add_edge(site)
        if password_file is not None:
            write_atomically(password_file, f"{username} {password}\n", mode=0o600)
    except (CredentialsError, OSError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    typer.echo(f"{username} {password}")


@app.command("add-device")
def add_device(
    directory: DirOption,
    site: Annotated[str, typer.Option(help="Site (school) id.")],
    device_id: Annotated[str, typer.Option(help="Device id; also its broker user name.")],
    scanner: Annotated[bool, typer.Option(help="A network scanner: discovery only.")] = False,
    pid: PidOption = None,
) -> None:
    """Create (or re-issue) a device login and print its password once."""
    from campuswatch.collector.broker.credentials import BrokerCredentials, CredentialsError

    try:
        store = BrokerCredentials(directory, pid=pid)
        password = store.add_device(site, device_id, role="scanner" if scanner else "device")
    except (CredentialsError, OSError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    typer.echo(f"{device_id} {password}")


@app.command("revoke-device")
def revoke_device(
    directory: DirOption,
    device_id: Annotated[str, typer.Option(help="Device id to lock out.")],
    pid: PidOption = None,
) -> None:
    """Remove a device's login; a running broker drops it at once."""
    from campuswatch.collector.broker.credentials import BrokerCredentials, CredentialsError

    try:
        removed = BrokerCredentials(directory, pid=pid).revoke_device(device_id)
    except (CredentialsError, OSError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    if not removed:
        typer.echo(f"error: no device login {device_id!r}", err=True)
        raise typer.Exit(1)
    typer.echo(f"revoked {device_id}")


@app.command("reinstate-device")
def reinstate_device(
    directory: DirOption,
    device_id: Annotated[str, typer.Option(help="Revoked device id to allow back.")],
) -> None:
    """Lift a revocation made here; the device has no login until it is added or enrols.

    A device revoked through the collector's API is reinstated there
    (POST /api/v1/devices/ID/reinstate), which also clears the register's record."""
    import getpass

    from campuswatch.collector.broker.credentials import BrokerCredentials, CredentialsError

    try:
        lifted = BrokerCredentials(directory).reinstate_device(
            device_id, by=f"cli:{getpass.getuser()}"
        )
    except (CredentialsError, OSError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    if lifted is None:
        typer.echo(f"error: {device_id!r} is not revoked", err=True)
        raise typer.Exit(1)
    typer.echo(f"reinstated {device_id} (site {lifted.site or '-'})")


@app.command("list")
def list_accounts(directory: DirOption) -> None:
    """Every broker login: role, site, user name, created."""
    from campuswatch.collector.broker.credentials import BrokerCredentials, CredentialsError

    try:
        accounts = BrokerCredentials(directory).list()
    except (CredentialsError, OSError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    for account in accounts:
        typer.echo(
            f"{account.role:<9} {account.site or '-':<20} {account.username:<40} "
            f"{account.created_at}"
        )
