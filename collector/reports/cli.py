"""``campuswatch report``: one report to a file, the schedule, and archiving due reports.

    campuswatch report --period six-month --site dist-1 --lang vi --format pdf --out r.pdf
    campuswatch report schedule
    campuswatch report generate-due [--archive /srv/campuswatch/reports]
    campuswatch report archive [--archive /srv/campuswatch/reports] [--verify]

The register is the collector's (``CW_COLLECTOR_DB`` / ``CW_COLLECTOR_DATA_DIR``, or
``--db``); outages are read from the embedded time-series file when it exists. The archive
defaults to ``data_dir/reports``, the folder the web UI's Reports page lists.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from sqlalchemy.orm import Session

from campuswatch.collector.reports.periods import PERIOD_KINDS

if TYPE_CHECKING:
    from campuswatch.collector.tsdb.sqlite_store import SqliteStore

app = typer.Typer(
    help="Compliance reports: plan KPIs per period and site, as HTML, PDF or XLSX.",
    invoke_without_command=True,
    add_completion=False,
)

DbOption = Annotated[
    str | None,
    typer.Option("--db", help="Register URL (default: the collector's settings)."),
]
TsdbOption = Annotated[
    Path | None,
    typer.Option(
        "--tsdb-file",
        help="Embedded time-series file for outages (default: data_dir/timeseries.db if any).",
    ),
]
ArchiveOption = Annotated[
    Path | None,
    typer.Option(
        "--archive", help="Archive folder (default: data_dir/reports, the one the web UI shows)."
    ),
]


def _archive_dir(archive: Path | None) -> Path:
    from campuswatch.collector.reports.schedule import default_archive_dir
    from campuswatch.collector.settings import CollectorSettings

    return archive or default_archive_dir(CollectorSettings().data_dir)


@contextmanager
def _open(db: str | None, tsdb_file: Path | None) -> Iterator[tuple[Session, SqliteStore | None]]:
    from campuswatch.collector.db.engine import session_factory
    from campuswatch.collector.db.existing import RegisterUnavailable, open_existing_register
    from campuswatch.collector.settings import CollectorSettings
    from campuswatch.collector.tsdb.sqlite_store import SqliteStore
    from campuswatch.collector.tsdb.urls import DEFAULT_SQLITE_NAME

    settings = CollectorSettings()
    url = db or settings.register_url()
    series_path = tsdb_file or settings.data_dir / DEFAULT_SQLITE_NAME
    if tsdb_file is not None and not tsdb_file.exists():
        raise typer.BadParameter(f"{tsdb_file} does not exist", param_hint="--tsdb-file")
    try:
        # Never creates a register: outside a data dir that used to report on an empty one.
        engine = open_existing_register(url)
    except RegisterUnavailable as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    store = SqliteStore(series_path) if series_path.exists() else None
    try:
        with session_factory(engine)() as session:
            yield session, store
    finally:
        if store is not None:
            store.close()
        engine.dispose()


@app.callback()
def report(
    ctx: typer.Context,
    period: Annotated[
        str, typer.Option(help=f"Period kind: {' | '.join(PERIOD_KINDS)}.")
    ] = "month",
    site: Annotated[
        str | None, typer.Option(help="Site id (school, district, province); default: all.")
    ] = None,
    at: Annotated[
        str | None,
        typer.Option(help="A day inside the period, YYYY-MM-DD (default: today)."),
    ] = None,
    lang: Annotated[str, typer.Option(help="vi or en.")] = "vi",
    output_format: Annotated[str, typer.Option("--format", help="html, pdf or xlsx.")] = "pdf",
    out: Annotated[
        Path | None, typer.Option(help="Output file (default: standard output).")
    ] = None,
    archive: Annotated[
        Path | None,
        typer.Option(help="Archive to read the previous period's antivirus/broadband from."),
    ] = None,
    db: DbOption = None,
    tsdb_file: TsdbOption = None,
) -> None:
    """Render one report (subcommands: schedule, generate-due, archive)."""
    if ctx.invoked_subcommand is not None:
        return
    import sys

    from campuswatch.collector.reports.kpis import build_report, previous_live_from_archive
    from campuswatch.collector.reports.periods import report_period
    from campuswatch.collector.reports.render import FORMATS, render
    from campuswatch.collector.reports.schedule import archived_figures

    if period not in PERIOD_KINDS:
        raise typer.BadParameter(f"choose one of {', '.join(PERIOD_KINDS)}", param_hint="--period")
    if lang not in ("vi", "en"):
        raise typer.BadParameter("choose vi or en", param_hint="--lang")
    if output_format not in FORMATS:
        raise typer.BadParameter(f"choose one of {', '.join(FORMATS)}", param_hint="--format")
    try:
        day = date.fromisoformat(at) if at else date.today()
    except ValueError:
        raise typer.BadParameter("expected YYYY-MM-DD", param_hint="--at") from None
    chosen = report_period(period, day)
    previous = archived_figures(archive, chosen.previous, site) if archive else None
    with _open(db, tsdb_file) as (session, store):
        try:
            result = build_report(
                session,
                chosen,
                site,
                series=store,
                previous_live=previous_live_from_archive(previous) if previous else None,
            )
        except LookupError as error:
            raise typer.BadParameter(str(error), param_hint="--site") from None
    content = render(result, lang, output_format)
    if out is None:
        sys.stdout.buffer.write(content)
    else:
        out.write_bytes(content)
        typer.echo(f"{chosen.label(lang)}: wrote {out}", err=True)


def _today(today: str | None) -> date:
    try:
        return date.fromisoformat(today) if today else date.today()
    except ValueError:
        raise typer.BadParameter("expected YYYY-MM-DD", param_hint="--today") from None


@app.command("schedule")
def schedule(
    today: Annotated[
        str | None, typer.Option(help="Pretend today is YYYY-MM-DD (default: today).")
    ] = None,
) -> None:
    """Which reports are due now, and when the next ones come due."""
    from campuswatch.collector.reports.schedule import due_reports, upcoming_reports

    day = _today(today)
    typer.echo("latest periods:")
    for due in due_reports(day):
        typer.echo(
            f"  {due.kind:<12} {due.period.key:<14} {due.period.label_en:<55} "
            f"submit before {due.submit_before}  [{due.state(day)}]"
        )
    typer.echo("next:")
    for due in upcoming_reports(day):
        typer.echo(
            f"  {due.kind:<12} {due.period.key:<14} available {due.available_on}, "
            f"submit before {due.submit_before}"
        )


@app.command("generate-due")
def generate_due_command(
    archive: ArchiveOption = None,
    site: Annotated[
        list[str] | None,
        typer.Option(help="Site id to report on (repeat); default: everything."),
    ] = None,
    today: Annotated[str | None, typer.Option(help="YYYY-MM-DD (default: today).")] = None,
    db: DbOption = None,
    tsdb_file: TsdbOption = None,
) -> None:
    """Archive every due report not archived yet (safe to run from cron every hour)."""
    from campuswatch.collector.reports.schedule import generate_due, local_day
    from campuswatch.collector.reports.snapshots import take_daily_snapshot

    day = _today(today)
    with _open(db, tsdb_file) as (session, store):
        if today is None:
            # Run from cron instead of the collector's scheduler: keep the daily snapshot
            # too, or closed periods would have no antivirus or broadband figures.
            now = datetime.now(UTC)
            take_daily_snapshot(session, local_day(now), now)
            session.commit()
        written = generate_due(
            session,
            _archive_dir(archive),
            day,
            sites=list(site) if site else [None],
            series=store,
        )
    for entry in written:
        typer.echo(entry.path)
    if not written:
        typer.echo("nothing due that is not archived already", err=True)


@app.command("archive")
def archive_command(archive: ArchiveOption = None, verify: bool = False) -> None:
    """List the archived reports (with --verify: check every checksum)."""
    from campuswatch.collector.reports.schedule import list_archive, verify_archive

    folder = _archive_dir(archive)
    for entry in list_archive(folder):
        typer.echo(f"{entry.period_end}  {entry.path}  {entry.sha256[:12]}  {entry.bytes} B")
    if verify:
        problems = verify_archive(folder)
        for problem in problems:
            typer.echo(problem, err=True)
        if problems:
            raise typer.Exit(1)
