"""``campuswatch scan``: sweep a subnet and report what is on it.

Without a broker it prints (a table, or JSON with ``--json``); with ``--broker`` or a broker
in the agent config file it runs as a ``scanner`` device: hello, state and one ``discovery``
message per sweep, queued on disk while the broker is away.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from campuswatch.agent.scanner.scan import ScanOptions, ScanResult
    from campuswatch.agent.settings import AgentSettings


def scan(
    subnet: Annotated[str, typer.Option(help="IPv4 subnet to sweep, e.g. 10.1.20.0/24.")],
    site: Annotated[str, typer.Option(help="Site (school) id the findings belong to.")],
    broker: Annotated[
        str | None, typer.Option(help="mqtt://host:port or mqtts://host:port; publish there.")
    ] = None,
    rate: Annotated[float, typer.Option(help="Packets (and port probes) per second.")] = 50.0,
    ports: Annotated[
        bool, typer.Option("--ports", help="TCP-connect a few well-known ports to guess types.")
    ] = False,
    passive: Annotated[
        float, typer.Option(help="Also listen this many seconds for ARP and DHCP.", min=0)
    ] = 0.0,
    interface: Annotated[
        str | None, typer.Option(help="Network interface (default: the route to the subnet).")
    ] = None,
    once: Annotated[bool, typer.Option("--once", help="One sweep, then exit.")] = False,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print discovery messages as JSON; send nothing.")
    ] = False,
    force: Annotated[
        bool, typer.Option("--force", help="Allow subnets larger than /20 or not private.")
    ] = False,
    interval: Annotated[
        float, typer.Option(help="Seconds between sweeps when running continuously.", min=60)
    ] = 900.0,
    config: Annotated[
        Path | None, typer.Option(help="Agent TOML config (broker, credentials, TLS).")
    ] = None,
    device_id: Annotated[
        str | None, typer.Option(help="This scanner's id (default: derived from hardware).")
    ] = None,
    oui_file: Annotated[
        Path | None, typer.Option(help="An IEEE oui.txt to add to the vendor table.")
    ] = None,
    hostnames: Annotated[
        str,
        typer.Option(
            help="DHCP host names: hash (default; they often name a person), keep "
            "(printers and projectors announce useful names) or drop."
        ),
    ] = "hash",
    retries: Annotated[int, typer.Option(help="Extra ARP passes for silent addresses.")] = 1,
) -> None:
    """Find the devices on a school subnet: ARP sweep, vendor, optional ports and DHCP names."""
    from campuswatch.agent.scanner.scan import ScanOptions
    from campuswatch.agent.scanner.targets import TargetError, plan_sweep

    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    if hostnames not in ("keep", "hash", "drop"):
        raise typer.BadParameter("--hostnames must be keep, hash or drop")
    if not 0 <= retries <= 5:
        raise typer.BadParameter("--retries must be between 0 and 5")
    options = ScanOptions(
        subnet=subnet,
        rate_pps=rate,
        force=force,
        interface=interface,
        port_checks=ports,
        passive_s=passive,
        retries=retries,
        oui_file=oui_file,
        hostnames=hostnames,  # type: ignore[arg-type]
    )
    try:
        plan_sweep(subnet, rate, force=force)
    except TargetError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    settings = _settings(config, site, broker, device_id)
    if as_json or (broker is None and (config is None or settings is None)):
        raise typer.Exit(
            _print_sweeps(options, site, device_id or "scanner", as_json, once, interval)
        )
    assert settings is not None
    raise typer.Exit(_publish(options, settings, site, once, interval))


def _settings(
    config: Path | None, site: str, broker: str | None, device_id: str | None
) -> AgentSettings | None:
    from campuswatch.agent.settings import ConfigError, load_settings

    overrides: dict[str, object] = {"site": site, "device_id": device_id}
    if broker:
        overrides["mqtt"] = {"broker": broker}
    try:
        return load_settings(config, overrides)
    except ConfigError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None


def _sweep(options: ScanOptions) -> ScanResult | None:
    from campuswatch.agent.scanner.scan import ScanError, run_scan

    try:
        return run_scan(options)
    except ScanError as exc:
        typer.echo(f"error: {exc}", err=True)
        return None


def _print_sweeps(
    options: ScanOptions, site: str, device_id: str, as_json: bool, once: bool, interval: float
) -> int:
    from campuswatch.agent.scanner.scan import to_messages
    from campuswatch.wire.codec import encode_message

    stop = _stop_on_signals()
    while True:
        result = _sweep(options)
        if result is None:
            return 1
        for problem in result.problems:
            typer.echo(f"warning: {problem}", err=True)
        if as_json:
            for message in to_messages(result, site=site, device_id=device_id):
                typer.echo(encode_message(message).decode())
        else:
            typer.echo(f"{len(result.hosts)} host(s) on {result.subnet}")
            for host in result.hosts:
                ports = ",".join(str(p) for p in host.open_ports) or "-"
                typer.echo(
                    f"{host.ip:<15} {host.mac or '-':<17} {(host.vendor or '?')[:24]:<24} "
                    f"{host.guessed_type or '-':<12} {ports:<16} {host.hostname or ''}"
                )
        sys.stdout.flush()
        if once or stop.wait(interval):
            return 0


def _stop_on_signals() -> threading.Event:
    stop = threading.Event()

    def _on_signal(signum: int, frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    return stop


def _publish(
    options: ScanOptions, settings: AgentSettings, site: str, once: bool, interval: float
) -> int:
    from campuswatch.agent.identity import derive_device_id, read_hardware_facts, resolve_identity
    from campuswatch.agent.scanner.probe import DiscoveryProbe
    from campuswatch.agent.scanner.scan import to_messages
    from campuswatch.agent.scanner.service import ScannerRunner
    from campuswatch.wire.mqtt import BrokerUrlError

    # Its own state folder and id: an agent on the same PC must not share its MQTT client id.
    state_dir = settings.resolved_state_dir() / "scanner"
    facts = read_hardware_facts()
    identity = resolve_identity(
        state_dir,
        facts,
        configured_device_id=settings.device_id or derive_device_id(facts, prefix="scan"),
    )
    probes = [] if once else [DiscoveryProbe(options)]
    try:
        runner = ScannerRunner(
            settings, identity, site, probes, state_dir=state_dir, interval_s=interval
        )
    except (BrokerUrlError, OSError, ValueError) as exc:
        typer.echo(f"error: {exc}", err=True)
        return 2
    stop = _stop_on_signals()
    runner.start()
    try:
        if once:
            result = _sweep(options)
            if result is None:
                return 1
            for message in to_messages(result, site=site, device_id=identity.device_id):
                runner.enqueue(message)
            typer.echo(f"{len(result.hosts)} host(s) on {result.subnet}; sending", err=True)
            if not runner.connection.wait_connected(30):
                typer.echo(f"broker not reachable: {runner.connection.last_error}", err=True)
        else:
            stop.wait()
    finally:
        runner.stop(timeout_s=30 if once else 5)
    if runner.queue.depth:
        typer.echo(f"{runner.queue.depth} message(s) not yet sent; kept for next run", err=True)
        return 1
    return 0
