"""``campuswatch user …``: web UI accounts, from the collector's server.

Run where the collector's data is (or with ``--data-dir``/``--db``, or the collector's
``CW_COLLECTOR_*`` variables): the first admin is made this way. Every change is audited
as ``cli:<unix user>``.
"""

from __future__ import annotations

import getpass
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer
from sqlalchemy.orm import Session

app = typer.Typer(
    help="Web UI accounts: add, list, disable, enable, passwd (every change audited).",
    no_args_is_help=True,
    add_completion=False,
)

DbOption = Annotated[
    str | None, typer.Option("--db", help="Register URL (default: the collector's settings).")
]
DataDirOption = Annotated[
    Path | None,
    typer.Option(help="The collector's data dir (default: the collector's settings)."),
]
ConfigOption = Annotated[
    Path | None,
    typer.Option("--config", help="The collector's config file (collector.toml)."),
]
PasswordStdin = Annotated[
    bool,
    typer.Option(
        "--password-stdin", help="Read the password from the first line of standard input."
    ),
]


def _fail(message: str, code: int = 1) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code)


@contextmanager
def _register(db: str | None, data_dir: Path | None, config: Path | None) -> Iterator[Session]:
    """A session on the existing register, migrated to this version's schema."""
    from campuswatch.collector.config_file import ConfigFileError, load_collector_settings
    from campuswatch.collector.db.engine import session_factory, upgrade
    from campuswatch.collector.db.existing import RegisterUnavailable, open_existing_register

    try:
        settings = load_collector_settings(config, {"data_dir": data_dir})
    except ConfigFileError as exc:
        for problem in exc.problems[1:]:
            typer.echo(f"error: {problem}", err=True)
        raise _fail(exc.problems[0] if exc.problems else "invalid settings", 2) from None
    try:
        engine = open_existing_register(db or settings.register_url(), writable=True)
    except RegisterUnavailable as exc:
        raise _fail(str(exc)) from None
    try:
        upgrade(engine)
        with session_factory(engine)() as session:
            yield session
    finally:
        engine.dispose()


def _read_password(from_stdin: bool) -> str:
    if from_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    if not sys.stdin.isatty():
        raise _fail("no terminal to ask for the password: use --password-stdin", 2)
    return str(typer.prompt("Password", hide_input=True, confirmation_prompt=True))


def _actor() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):  # a uid with no passwd entry (containers)
        return "cli:unknown"


@app.command("add")
def add(
    username: Annotated[str, typer.Argument(help="Login name.")],
    role: Annotated[str, typer.Option(help="admin, soc, facilities or viewer.")],
    site: Annotated[
        str | None,
        typer.Option(help="Limit the account to this site's subtree (a district or school)."),
    ] = None,
    language: Annotated[str, typer.Option(help="vi or en.")] = "vi",
    password_stdin: PasswordStdin = False,
    db: DbOption = None,
    data_dir: DataDirOption = None,
    config: ConfigOption = None,
) -> None:
    """Create an account (the first admin: `campuswatch user add admin --role admin`)."""
    from campuswatch.collector.accounts import AccountError, add_account

    password = _read_password(password_stdin)
    with _register(db, data_dir, config) as session:
        try:
            add_account(
                session,
                username=username,
                password=password,
                role=role,
                site_scope=site,
                language=language,
                actor=_actor(),
            )
        except AccountError as exc:
            raise _fail(str(exc), 2) from None
        session.commit()
    scope = f" in {site}" if site else " (all sites)"
    typer.echo(f"added {username}: {role}{scope}")


@app.command("list")
def list_(db: DbOption = None, data_dir: DataDirOption = None, config: ConfigOption = None) -> None:
    """Every account with its role, scope and state."""
    from campuswatch.collector.accounts import list_accounts

    with _register(db, data_dir, config) as session:
        accounts = list_accounts(session)
    typer.echo(f"{'user':<24} {'role':<11} {'scope':<20} {'lang':<4} {'state':<8} created")
    for account in accounts:
        state = "disabled" if account.disabled else "active"
        typer.echo(
            f"{account.username:<24} {account.role:<11} {account.site_scope or '(all)':<20} "
            f"{account.language:<4} {state:<8} {account.created_at}"
        )


def _set_disabled(
    username: str, disabled: bool, db: str | None, data_dir: Path | None, config: Path | None
) -> None:
    from campuswatch.collector.accounts import AccountError, set_disabled

    with _register(db, data_dir, config) as session:
        try:
            set_disabled(session, username, disabled=disabled, actor=_actor())
        except AccountError as exc:
            raise _fail(str(exc)) from None
        session.commit()
    typer.echo(f"{'disabled' if disabled else 'enabled'} {username}")


@app.command("disable")
def disable(
    username: Annotated[str, typer.Argument()],
    db: DbOption = None,
    data_dir: DataDirOption = None,
    config: ConfigOption = None,
) -> None:
    """Refuse the account's logins and end its open sessions."""
    _set_disabled(username, True, db, data_dir, config)


@app.command("enable")
def enable(
    username: Annotated[str, typer.Argument()],
    db: DbOption = None,
    data_dir: DataDirOption = None,
    config: ConfigOption = None,
) -> None:
    """Allow a disabled account to log in again."""
    _set_disabled(username, False, db, data_dir, config)


@app.command("passwd")
def passwd(
    username: Annotated[str, typer.Argument()],
    password_stdin: PasswordStdin = False,
    db: DbOption = None,
    data_dir: DataDirOption = None,
    config: ConfigOption = None,
) -> None:
    """Set a new password; the account's open sessions end."""
    from campuswatch.collector.accounts import AccountError, change_password

    password = _read_password(password_stdin)
    with _register(db, data_dir, config) as session:
        try:
            change_password(session, username, password, actor=_actor())
        except AccountError as exc:
            raise _fail(str(exc), 2) from None
        session.commit()
    typer.echo(f"password of {username} changed")
