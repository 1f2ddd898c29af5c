"""``campuswatch collector …`` commands."""

from __future__ import annotations

import logging
import signal
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    import uvicorn
    from fastapi import FastAPI

    from campuswatch.collector.settings import CollectorSettings

app = typer.Typer(help="The collector: ingest, storage, rules, alerts, API.", no_args_is_help=True)

ConfigOption = Annotated[
    Path | None,
    typer.Option(
        help="The collector's TOML config file (sample: collector/collector.sample.toml); "
        "environment variables and flags override it.",
    ),
]


def _settings_or_exit(
    config: Path | None, overrides: dict[str, object], exit_code: int = 2
) -> object:
    """Settings from flags > environment > ``config`` > defaults, or every problem (one line
    each, naming the file and key) and exit with ``exit_code``."""
    from campuswatch.collector.config_file import ConfigFileError, load_collector_settings

    try:
        return load_collector_settings(config, overrides)
    except ConfigFileError as exc:
        for problem in exc.problems:
            typer.echo(f"error: {problem}", err=True)
        raise typer.Exit(exit_code) from None


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
    config: ConfigOption = None,
) -> None:
    """Run the collector until interrupted (Ctrl-C / SIGTERM)."""
    logging.basicConfig(
        level=getattr(logging, log_level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    overrides: dict[str, object] = {
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
    serve(_settings_or_exit(config, overrides))


def http_server_config(
    app: FastAPI, settings: CollectorSettings, host: str, port: int
) -> uvicorn.Config:
    """The HTTP server's settings: X-Forwarded-For is believed only from the proxies the
    settings list (uvicorn would otherwise believe any local process), because the login
    limits key on the client address it yields."""
    import uvicorn

    return uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level="warning",
        proxy_headers=bool(settings.trusted_proxies),
        forwarded_allow_ips=list(settings.trusted_proxies) or None,
    )


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
    from campuswatch.collector.rules.model import RulePackError

    try:
        service = CollectorService(settings)
    except RulePackError as exc:
        listening.close()
        for problem in exc.problems:  # every problem, one line each, as `rules check` says them
            typer.echo(f"error: rule pack: {problem}", err=True)
        raise typer.Exit(2) from None
    except ValueError as exc:
        listening.close()
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    host, port = split_listen(settings.listen)
    app = create_app(service.api_context)
    server = uvicorn.Server(http_server_config(app, settings, host, port))
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


@app.command("check")
def check(
    config: ConfigOption = None,
    timeout_s: Annotated[
        float, typer.Option("--timeout", help="Seconds to wait for each connection.", min=0.1)
    ] = 5.0,
) -> None:
    """Validate the settings and try every connection: broker, database, time-series store and
    each forwarding destination. One line per problem; exit 0 when all is well, 1 otherwise."""
    from campuswatch.collector.checks import run_checks

    # The connections' own log lines (broker unreachable, retrying …) are for a running
    # collector's log; here each problem is said once, by its check's line.
    settings = _settings_or_exit(config, {}, exit_code=1)
    problems = 0
    quiet = logging.getLogger("campuswatch")
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        results = list(run_checks(settings, timeout_s=timeout_s))  # type: ignore[arg-type]
    finally:
        quiet.setLevel(level)  # tests run this in-process
    for result in results:
        if result.ok:
            typer.echo(f"ok: {result.name}: {result.detail}")
        else:
            problems += 1
            typer.echo(f"problem: {result.name}: {result.detail}", err=True)
    if problems:
        typer.echo(f"{problems} problem(s) found", err=True)
        raise typer.Exit(1)
    typer.echo("all checks passed")
