"""``campuswatch backup`` and ``campuswatch restore``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

DbOption = Annotated[
    str | None,
    typer.Option(help="Register URL (default: SQLite in --data-dir, as the collector uses)."),
]
DataDirOption = Annotated[
    Path | None, typer.Option(help="The collector's data dir (default: ./campuswatch-data).")
]
CollectorConfigOption = Annotated[
    Path | None,
    typer.Option(
        help="The collector's config file (collector.toml): register, data dir and rules dir "
        "come from it (and its environment variables) unless given here.",
    ),
]
DEFAULT_DATA_DIR = Path("./campuswatch-data")


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split()) or type(error).__name__


def _db_url(db: str | None, data_dir: Path | None) -> str:
    from campuswatch.collector.db.engine import default_url

    return db or default_url(data_dir or DEFAULT_DATA_DIR)


def _from_collector_config(
    collector_config: Path, db: str | None, data_dir: Path | None, rules_dir: Path | None
) -> tuple[str, Path | None]:
    """The register URL and rules dir the collector running from ``collector_config`` uses;
    flags given here win. A bad file is one line per problem and exit 2."""
    from campuswatch.collector.config_file import ConfigFileError, load_collector_settings

    overrides: dict[str, object] = {"data_dir": data_dir}
    try:
        settings = load_collector_settings(collector_config, overrides)
    except ConfigFileError as exc:
        for problem in exc.problems:
            typer.echo(f"error: {problem}", err=True)
        raise typer.Exit(2) from None
    return db or settings.register_url(), rules_dir or settings.rules_dir


def backup(
    to: Annotated[
        Path | None, typer.Option("--to", help="Archive file to write (.tar.gz).")
    ] = None,
    to_dir: Annotated[
        Path | None, typer.Option(help="Write a time-stamped archive into this folder.")
    ] = None,
    keep: Annotated[
        int, typer.Option(min=1, help="With --to-dir: keep this many archives (at least 1).")
    ] = 14,
    db: DbOption = None,
    data_dir: DataDirOption = None,
    rules_dir: Annotated[Path | None, typer.Option(help="Rule pack to include.")] = None,
    config: Annotated[list[Path] | None, typer.Option(help="Config files to include.")] = None,
    collector_config: CollectorConfigOption = None,
) -> None:
    """Back up the register, alerts, rules and config (schedule it with cron/systemd timer)."""
    from campuswatch.collector.backup import (
        BackupError,
        backup_file_name,
        create_backup,
        rotate_backups,
    )

    if (to is None) == (to_dir is None):
        typer.echo("error: give exactly one of --to FILE or --to-dir DIR", err=True)
        raise typer.Exit(2)
    destination = to if to is not None else to_dir / backup_file_name()  # type: ignore[operator]
    db_url = _db_url(db, data_dir)
    config_files = list(config or [])
    if collector_config is not None:
        db_url, rules_dir = _from_collector_config(collector_config, db, data_dir, rules_dir)
        if collector_config not in config_files:
            config_files.append(collector_config)  # the file itself is worth restoring
    try:
        result = create_backup(db_url, destination, rules_dir=rules_dir, config_files=config_files)
    except BackupError as exc:
        typer.echo(f"error: {_one_line(exc)}", err=True)
        raise typer.Exit(1) from None
    except OSError as exc:  # destination not writable, disk full
        typer.echo(f"error: backup failed: {_one_line(exc)}", err=True)
        raise typer.Exit(1) from None
    rows = sum(result.tables.values())
    typer.echo(
        f"wrote {result.path} ({rows} rows in {len(result.tables)} tables, sha256 {result.sha256})"
    )
    if to_dir is not None:
        for path in rotate_backups(to_dir, keep):
            typer.echo(f"removed old backup {path}")


def restore(
    source: Annotated[Path, typer.Option("--from", help="Archive written by backup.")],
    db: DbOption = None,
    data_dir: DataDirOption = None,
    rules_dir: Annotated[Path | None, typer.Option(help="Where to put the saved rules.")] = None,
    force: Annotated[bool, typer.Option(help="Overwrite a database that holds data.")] = False,
    collector_config: CollectorConfigOption = None,
) -> None:
    """Restore a backup: checked in a temporary copy (integrity, every table's row count)
    before it replaces the register; a failed restore changes nothing. Stop the collector
    first."""
    from campuswatch.collector.backup import BackupError, restore_backup

    db_url = _db_url(db, data_dir)
    if collector_config is not None:
        db_url, _ = _from_collector_config(collector_config, db, data_dir, None)
    try:
        counts = restore_backup(source, db_url, rules_dir=rules_dir, force=force)
    except BackupError as exc:
        typer.echo(f"error: {_one_line(exc)}", err=True)
        raise typer.Exit(1) from None
    except Exception as exc:  # an operator at a failed restore needs the cause, not a trace
        typer.echo(f"error: restore failed ({type(exc).__name__}: {_one_line(exc)})", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"restored {sum(counts.values())} rows in {len(counts)} tables; counts verified")
