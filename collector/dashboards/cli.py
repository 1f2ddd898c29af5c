"""``campuswatch dashboards``: regenerate the checked-in JSON, or push it to a Grafana."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from campuswatch.collector.dashboards.model import FOLDERS, Flavour

app = typer.Typer(
    help="Grafana dashboards: regenerate the JSON files or upload them to Grafana.",
    no_args_is_help=True,
    add_completion=False,
)


@app.command("build")
def build(
    output: Annotated[
        Path | None,
        typer.Option(help="Folder to write to (default: the repository's dashboards/)."),
    ] = None,
) -> None:
    """Regenerate dashboards/<flavour>/*.json and the provisioning files."""
    from campuswatch.collector.dashboards.files import DEFAULT_OUTPUT_DIR, write_files

    changed = write_files(output or DEFAULT_OUTPUT_DIR)
    for path in changed:
        typer.echo(f"wrote {path}")
    if not changed:
        typer.echo("dashboards are up to date")


@app.command("push")
def push(
    grafana: Annotated[str, typer.Option(help="Grafana root URL, e.g. http://grafana:3000.")],
    token: Annotated[
        str, typer.Option(help="Service-account token (Editor; Admin for --datasource-url).")
    ],
    folder: Annotated[
        str | None, typer.Option(help="Grafana folder (default: per flavour).")
    ] = None,
    flavour: Annotated[
        str,
        typer.Option(help="Which query language: victoriametrics (PromQL) or influxdb (InfluxQL)."),
    ] = "victoriametrics",
    datasource_url: Annotated[
        str | None,
        typer.Option(help="Also create/update the datasource, pointing Grafana at this store URL."),
    ] = None,
    influx_database: Annotated[
        str | None, typer.Option(help="InfluxDB database for --datasource-url.")
    ] = None,
    timeout: Annotated[float, typer.Option(help="Seconds per HTTP request.")] = 30.0,
    insecure: Annotated[bool, typer.Option(help="Skip TLS certificate checks.")] = False,
) -> None:
    """Upload every dashboard with overwrite (and the datasource when asked)."""
    import httpx

    from campuswatch.collector.dashboards.push import GrafanaPushError, push_dashboards

    chosen = _flavour(flavour)
    headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
    with httpx.Client(headers=headers, timeout=timeout, verify=not insecure) as client:
        try:
            result = push_dashboards(
                client,
                grafana,
                flavour=chosen,
                folder=folder or FOLDERS[chosen],
                datasource_url=datasource_url,
                influx_database=influx_database,
            )
        except GrafanaPushError as error:
            typer.echo(f"error: {error}", err=True)
            raise typer.Exit(1) from None
    if result.datasource_action:
        typer.echo(f"datasource {result.datasource_action}")
    for url in result.dashboard_urls:
        typer.echo(f"pushed {url}")


def _flavour(text: str) -> Flavour:
    if text == "victoriametrics":
        return "victoriametrics"
    if text == "influxdb":
        return "influxdb"
    raise typer.BadParameter("use victoriametrics or influxdb", param_hint="--flavour")
