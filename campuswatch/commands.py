"""Typer commands for everything but the agent (collector, simulator, rules, reports …)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(
    help="CampusWatch: antivirus, connectivity and inventory monitoring for schools.",
    no_args_is_help=True,
    add_completion=False,
)
schema_app = typer.Typer(help="The wire contract's JSON Schemas.", no_args_is_help=True)
app.add_typer(schema_app, name="schema")


def _register_subcommands() -> None:
    """Each role keeps its commands in its own package; imports there stay lazy."""
    from campuswatch.agent.scanner.cli import scan
    from campuswatch.collector.accounts_cli import app as user_app
    from campuswatch.collector.backup_cli import backup, restore
    from campuswatch.collector.broker.cli import app as broker_app
    from campuswatch.collector.cli import app as collector_app
    from campuswatch.collector.dashboards.cli import app as dashboards_app
    from campuswatch.collector.demo import demo
    from campuswatch.collector.reports.cli import app as report_app
    from campuswatch.collector.rules.cli import app as rules_app
    from campuswatch.firmware_sim.cli import app as sim_app

    app.add_typer(collector_app, name="collector")
    app.add_typer(sim_app, name="sim")
    app.add_typer(rules_app, name="rules")
    app.add_typer(report_app, name="report")
    app.add_typer(dashboards_app, name="dashboards")
    app.add_typer(broker_app, name="broker")
    app.add_typer(user_app, name="user")
    app.command("scan")(scan)
    app.command("demo")(demo)
    app.command("backup")(backup)
    app.command("restore")(restore)


_register_subcommands()


@app.command(
    "agent",
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
    add_help_option=False,
)
def agent(ctx: typer.Context) -> None:
    """The agent for lab PCs (run, once): see `campuswatch agent --help`."""
    from campuswatch.agent.cli import main as agent_main

    raise typer.Exit(agent_main(ctx.args or ["--help"]))


@schema_app.command("export")
def schema_export(
    directory: Annotated[Path, typer.Argument(help="Output folder.")] = Path("docs/schemas"),
) -> None:
    """Write one JSON Schema file per message kind."""
    from campuswatch.wire.schema import write_schemas

    for path in write_schemas(directory):
        typer.echo(str(path))
