"""``campuswatch backup`` and ``campuswatch restore``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

DbOption = Annotated[
    str | None,
    typer.Option(help="Register URL (default: SQLite in --data-dir, as the collector uses)."),
]
DataDirOption = Annotated[Path, typer.Option(help="The collector's data dir.")]


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split()) or type(error).__name__


def _db_url(db: str | None, data_dir: Path) -> str:
    from campuswatch.collector.db.engine import default_url

    return db or default_url(data_dir)


def backup(
    to: Annotated[
        Path | None, typer.Option("--to", help="Archive file to write (.tar.gz).")
    ] = None,
    to_dir: Annotated[
        Path | None, typer.Option(help="Write a time-stamped archive into this folder.")
    ] = None,
    keep: Annotated[int, typer.Option(help="With --to-dir: keep this many archives.")] = 14,
    db: DbOption = None,
    data_dir: DataDirOption = Path("./campuswatch-data"),
    rules_dir: Annotated[Path | None, typer.Option(help="Rule pack to include.")] = None,
    config: Annotated[list[Path] | None, typer.Option(help="Config files to include.")] = None,
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
    try:
        result = create_backup(
            _db_url(db, data_dir), destination, rules_dir=rules_dir, config_files=config or []
        )
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
    data_dir: DataDirOption = Path("./campuswatch-data"),
    rules_dir: Annotated[Path | None, typer.Option(help="Where to put the saved rules.")] = None,
    force: Annotated[bool, typer.Option(help="Overwrite a database that holds data.")] = False,
) -> None:
    """Restore a backup: checked in a temporary copy (integrity, every table's row count)
    before it replaces the register; a failed restore changes nothing. Stop the collector
    first."""
    from campuswatch.collector.backup import BackupError, restore_backup

    try:
        counts = restore_backup(source, _db_url(db, data_dir), rules_dir=rules_dir, force=force)
    except BackupError as exc:
        typer.echo(f"error: {_one_line(exc)}", err=True)
        raise typer.Exit(1) from None
    except Exception as exc:  # an operator at a failed restore needs the cause, not a trace
        typer.echo(f"error: restore failed ({type(exc).__name__}: {_one_line(exc)})", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"restored {sum(counts.values())} rows in {len(counts)} tables; counts verified")
