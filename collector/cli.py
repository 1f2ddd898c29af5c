"""``campuswatch collector …`` commands."""

from __future__ import annotations

import logging
import signal
import threading
from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(help="The collector: ingest, storage, rules, alerts, API.", no_args_is_help=True)


@app.command("run")
def run(
    broker: Annotated[str | None, typer.Option(help="mqtt://host:port or mqtts://…")] = None,
    data_dir: Annotated[Path | None, typer.Option(help="Where embedded stores live.")] = None,
    listen: Annotated[str | None, typer.Option(help="HOST:PORT for the API and web UI.")] = None,
    tsdb: Annotated[
        str | None,
        typer.Option(help="victoriametrics://…, influx2://…, influx1://… (default: SQLite)."),
    ] = None,
    db: Annotated[
        str | None, typer.Option(help="postgresql+psycopg://… (default: SQLite in data dir).")
    ] = None,
    share: Annotated[
        str | None, typer.Option(help="Shared-subscription group to split load.")
    ] = None,
    rules_dir: Annotated[
        Path | None,
        typer.Option(
            help="Rule pack folder (default: the shipped rules/); env CW_COLLECTOR_RULES_DIR.",
        ),
    ] = None,
    forwarding_config: Annotated[
        Path | None,
        typer.Option(
            help="SOC destinations, YAML or TOML (docs/forwarding.md); without it alerts stay "
            "local. Env CW_COLLECTOR_FORWARDING_CONFIG.",
        ),
    ] = None,
    log_level: Annotated[str, typer.Option(help="DEBUG, INFO, WARNING, ERROR.")] = "INFO",
) -> None:
    """Run the collector until interrupted (Ctrl-C / SIGTERM)."""
    from pydantic import ValidationError

    from campuswatch.collector.settings import CollectorSettings

    logging.basicConfig(
        level=getattr(logging, log_level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    overrides = {
        key: value
        for key, value in {
            "broker": broker,
            "data_dir": data_dir,
            "listen": listen,
            "tsdb": tsdb,
            "db": db,
            "share_group": share,
            "rules_dir": rules_dir,
            "forwarding_config": forwarding_config,
        }.items()
        if value is not None
    }
    try:
        settings = CollectorSettings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        typer.echo(f"error: invalid settings:\n{exc}", err=True)
        raise typer.Exit(2) from None
    serve(settings)


def serve(settings: object) -> None:
    """Start the collector and its HTTP server; block until a signal arrives."""
    import uvicorn

    from campuswatch.collector.api.app import create_app
    from campuswatch.collector.listen import ListenError, bind_listen_socket, split_listen
    from campuswatch.collector.service import CollectorService
    from campuswatch.collector.settings import CollectorSettings

    assert isinstance(settings, CollectorSettings)
    try:
        # Bound first: a taken port is one line and exit 1, before anything else starts.
        listening = bind_listen_socket(settings.listen)
    except ListenError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    try:
        service = CollectorService(settings)
    except ValueError as exc:
        listening.close()
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    host, port = split_listen(settings.listen)
    app = create_app(service.api_context)
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            host=host,
            port=port,
            log_level="warning",
            # X-Forwarded-For is believed only from the proxies the settings list (uvicorn
            # would otherwise believe any local process): the login limits key on it.
            proxy_headers=bool(settings.trusted_proxies),
            forwarded_allow_ips=list(settings.trusted_proxies) or None,
        )
    )
    stop = threading.Event()

    def _on_signal(signum: int, frame: object) -> None:
        stop.set()
        server.should_exit = True

    service.start()
    http = threading.Thread(
        target=server.run, kwargs={"sockets": [listening]}, name="http", daemon=True
    )
    http.start()
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    typer.echo(f"collector API on http://{settings.listen}", err=True)
    while not stop.wait(1.0):
        if not http.is_alive():  # a collector without its API must not look healthy
            typer.echo("error: the HTTP server stopped; see the log above", err=True)
            service.stop()
            raise typer.Exit(1)
    server.should_exit = True
    http.join(10)
    service.stop()
