"""``campuswatch sim …``: run simulated schools against a broker."""

from __future__ import annotations

import os
import ssl
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(
    help="Simulated smart-classroom devices and lab PCs, thousands per process.",
    no_args_is_help=True,
)


class ModeChoice(StrEnum):
    per_device = "per-device"
    gateway = "gateway"


@app.command()
def run(
    broker: Annotated[str, typer.Option(help="mqtt://host:port of the broker")] = (
        "mqtt://127.0.0.1:1883"
    ),
    schools: Annotated[int, typer.Option(min=1, help="schools in the district")] = 3,
    devices: Annotated[
        int, typer.Option(min=1, help="devices in all, spread over the schools")
    ] = 300,
    seed: Annotated[int, typer.Option(help="same seed, same devices and readings")] = 1,
    speed: Annotated[
        float, typer.Option(min=0.001, help="simulated seconds per real second")
    ] = 1.0,
    interval: Annotated[
        float, typer.Option(min=0.1, help="simulated seconds between two reports of a device")
    ] = 60.0,
    scenario: Annotated[
        Path | None, typer.Option(help="scenario YAML (see firmware_sim/scenarios/)")
    ] = None,
    mode: Annotated[
        ModeChoice, typer.Option(help="one MQTT connection per device, or one per school")
    ] = ModeChoice.per_device,
    duration: Annotated[
        float | None, typer.Option(min=0, help="stop after this many real seconds")
    ] = None,
    site_prefix: Annotated[str, typer.Option(help="district id; schools are PREFIX-s01…")] = (
        "sim-d1"
    ),
    start: Annotated[
        str | None,
        typer.Option(help="simulated start, ISO 8601 with zone (default: scenario's, or now)"),
    ] = None,
    summary_json: Annotated[
        Path | None, typer.Option(help="write the final figures here as JSON")
    ] = None,
    progress_every: Annotated[
        float, typer.Option(min=0.5, help="seconds between progress lines")
    ] = 5.0,
    ca_file: Annotated[
        Path | None,
        typer.Option(
            exists=True,
            dir_okay=False,
            readable=True,
            help="CA certificate of an mqtts:// broker (default: the system's CAs)",
        ),
    ] = None,
) -> None:
    """Run the simulation until Ctrl-C (or --duration); a progress line goes to stderr."""
    import logging

    from campuswatch.firmware_sim.runner import RunSettings, run_simulation, write_summary
    from campuswatch.firmware_sim.scenario import ScenarioError, load_scenario
    from campuswatch.wire.mqtt import BrokerUrlError, parse_broker_url

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    # The broker's state (unreachable and why, connected again) is said once per change.
    logging.getLogger("campuswatch.wire").setLevel(logging.INFO)
    try:
        parse_broker_url(broker)
    except BrokerUrlError as exc:
        raise typer.BadParameter(str(exc), param_hint="--broker") from None
    if devices < schools:
        raise typer.BadParameter(
            f"{devices} devices cannot fill {schools} schools", param_hint="--devices"
        )
    start_time: datetime | None = None
    if start is not None:
        try:
            start_time = datetime.fromisoformat(start)
        except ValueError:
            raise typer.BadParameter(
                "use ISO 8601, e.g. 2025-03-04T09:55+07:00", param_hint="--start"
            ) from None
        if start_time.tzinfo is None:
            raise typer.BadParameter("needs a zone offset, e.g. +07:00", param_hint="--start")
    if summary_json is not None and not _writable_folder(summary_json.parent):
        raise typer.BadParameter(
            f"cannot write into {summary_json.parent}; choose another path",
            param_hint="--summary-json",
        )
    loaded = None
    if scenario is not None:
        try:
            loaded = load_scenario(scenario)
        except ScenarioError as exc:
            typer.echo(str(exc), err=True)
            raise typer.Exit(2) from None
    settings = RunSettings(
        broker=broker,
        schools=schools,
        devices=devices,
        seed=seed,
        speed=speed,
        interval_s=interval,
        mode=mode.value,  # type: ignore[arg-type]
        duration_s=duration,
        site_prefix=site_prefix,
        start=start_time,
        progress_every_s=progress_every,
        ca_file=str(ca_file) if ca_file is not None else None,
    )
    try:
        summary = run_simulation(settings, loaded)
    except ssl.SSLError as exc:  # the CA file is read before anything connects
        typer.echo(f"error: --ca-file {ca_file}: not a usable CA certificate ({exc})", err=True)
        raise typer.Exit(2) from None
    if summary_json is not None:
        write_summary(summary, summary_json)


def _writable_folder(folder: Path) -> bool:
    return folder.is_dir() and os.access(folder, os.W_OK | os.X_OK)


@app.command()
def check(files: Annotated[list[Path], typer.Argument(help="scenario YAML files")]) -> None:
    """Validate scenario files; every problem is printed as file:line: message."""
    from campuswatch.firmware_sim.scenario import ScenarioError, load_scenario

    failed = False
    for path in files:
        try:
            scenario = load_scenario(path)
        except ScenarioError as exc:
            typer.echo(str(exc), err=True)
            failed = True
        else:
            typer.echo(f"{path}: ok ({len(scenario.steps)} steps)")
    if failed:
        raise typer.Exit(1)
