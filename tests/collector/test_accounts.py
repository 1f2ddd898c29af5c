"""Accounts by command (``campuswatch user …``): the first admin, scoped staff, disabling,
passwords — every change audited; and tools that never create or crash on a register."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from campuswatch.collector.accounts import (
    AccountError,
    add_account,
    change_password,
    set_disabled,
)
from campuswatch.collector.db.access import create_api_token, verify_password
from campuswatch.collector.db.engine import make_engine, session_factory, upgrade
from campuswatch.collector.db.models import ApiToken, AuditEvent, Site, User
from tests.collector.conftest import RunningCollector
from tests.support import required

PASSWORD = "correct horse battery"


def cli(*args: str, stdin: str = "", cwd: Path) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("CW_COLLECTOR_")}
    return subprocess.run(
        [sys.executable, "-m", "campuswatch", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=cwd,
        env=environment,
    )


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    """A collector data dir with a migrated register and a two-school district."""
    directory = tmp_path / "data"
    directory.mkdir()
    url = f"sqlite:///{directory / 'register.db'}"
    upgrade(url)
    engine = make_engine(url)
    with session_factory(engine)() as session, session.begin():
        session.add(Site(id="hn", level="province", name="Hà Nội"))
        session.add(Site(id="hn-bd", parent_id="hn", level="district", name="Ba Đình"))
    engine.dispose()
    return directory


def rows(data_dir: Path, model: type) -> list:  # type: ignore[type-arg]
    engine = make_engine(f"sqlite:///{data_dir / 'register.db'}")
    try:
        with session_factory(engine)() as session:
            return list(session.scalars(select(model)))
    finally:
        engine.dispose()


def test_first_admin_and_a_scoped_account_by_command(data_dir: Path, tmp_path: Path) -> None:
    added = cli(
        "user", "add", "admin", "--role", "admin", "--password-stdin",
        "--data-dir", str(data_dir), stdin=PASSWORD + "\n", cwd=tmp_path,
    )  # fmt: skip
    assert added.returncode == 0, added.stderr
    scoped = cli(
        "user", "add", "facilities-bd", "--role", "facilities", "--site", "hn-bd",
        "--language", "en", "--password-stdin", "--data-dir", str(data_dir),
        stdin=PASSWORD + "\n", cwd=tmp_path,
    )  # fmt: skip
    assert scoped.returncode == 0, scoped.stderr
    listed = cli("user", "list", "--data-dir", str(data_dir), cwd=tmp_path)
    assert listed.returncode == 0
    assert "facilities-bd" in listed.stdout and "hn-bd" in listed.stdout
    assert PASSWORD not in listed.stdout

    users = {user.username: user for user in rows(data_dir, User)}
    assert users["facilities-bd"].role == "facilities"
    assert users["facilities-bd"].site_scope == "hn-bd"
    assert verify_password(PASSWORD, users["admin"].password_hash)
    audit = rows(data_dir, AuditEvent)
    assert [(event.action, event.target) for event in audit] == [
        ("user.add", "user:admin"),
        ("user.add", "user:facilities-bd"),
    ]
    assert all(event.actor.startswith("cli:") for event in audit)
    assert all(PASSWORD not in str(event.detail) for event in audit)


def test_disable_and_passwd_end_open_sessions(data_dir: Path, tmp_path: Path) -> None:
    cli(
        "user", "add", "analyst", "--role", "soc", "--password-stdin",
        "--data-dir", str(data_dir), stdin=PASSWORD + "\n", cwd=tmp_path,
    )  # fmt: skip
    engine = make_engine(f"sqlite:///{data_dir / 'register.db'}")
    with session_factory(engine)() as session, session.begin():
        create_api_token(session, name="ui-session:analyst", role="soc")
    engine.dispose()

    disabled = cli("user", "disable", "analyst", "--data-dir", str(data_dir), cwd=tmp_path)
    assert disabled.returncode == 0, disabled.stderr
    assert all(token.revoked_at is not None for token in rows(data_dir, ApiToken))
    assert next(u for u in rows(data_dir, User) if u.username == "analyst").disabled

    changed = cli(
        "user", "passwd", "analyst", "--password-stdin", "--data-dir", str(data_dir),
        stdin="another long password\n", cwd=tmp_path,
    )  # fmt: skip
    assert changed.returncode == 0, changed.stderr
    user = next(u for u in rows(data_dir, User) if u.username == "analyst")
    assert verify_password("another long password", user.password_hash)
    actions = [event.action for event in rows(data_dir, AuditEvent)]
    assert actions == ["user.add", "user.disable", "user.password"]


@pytest.mark.parametrize(
    ("args", "stdin", "message"),
    [
        (["--role", "root"], PASSWORD, "role must be one of"),
        (["--role", "soc", "--site", "nowhere"], PASSWORD, "does not exist"),
        (["--role", "soc"], "short", "at least 12 characters"),
        (["--role", "soc", "--language", "fr"], PASSWORD, "language must be one of"),
    ],
)
def test_bad_accounts_are_refused_in_one_line(
    data_dir: Path, tmp_path: Path, args: list[str], stdin: str, message: str
) -> None:
    result = cli(
        "user", "add", "someone", *args, "--password-stdin", "--data-dir", str(data_dir),
        stdin=stdin + "\n", cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.stderr
    assert rows(data_dir, User) == []


@pytest.mark.parametrize("name", ["evil\n", "a b", "-leading", "x" * 65, "ở"])
def test_user_names_are_matched_whole(data_dir: Path, name: str) -> None:
    engine = make_engine(f"sqlite:///{data_dir / 'register.db'}")
    try:
        with session_factory(engine)() as session, pytest.raises(AccountError):
            add_account(
                session, username=name, password=PASSWORD, role="viewer",
                site_scope=None, language="vi", actor="test",
            )  # fmt: skip
    finally:
        engine.dispose()


def test_a_duplicate_and_an_unknown_user_are_refused(data_dir: Path) -> None:
    engine = make_engine(f"sqlite:///{data_dir / 'register.db'}")
    try:
        with session_factory(engine)() as session:
            add_account(
                session, username="a", password=PASSWORD, role="viewer",
                site_scope=None, language="vi", actor="test",
            )  # fmt: skip
            with pytest.raises(AccountError, match="already exists"):
                add_account(
                    session, username="a", password=PASSWORD, role="viewer",
                    site_scope=None, language="vi", actor="test",
                )  # fmt: skip
            with pytest.raises(AccountError, match="no user"):
                set_disabled(session, "ghost", disabled=True, actor="test")
            with pytest.raises(AccountError, match="no user"):
                change_password(session, "ghost", PASSWORD, actor="test")
    finally:
        engine.dispose()


def test_an_account_made_by_command_logs_into_the_ui(collector: RunningCollector) -> None:
    with collector.service.sessions() as session:
        add_account(
            session, username="facilities", password=PASSWORD, role="facilities",
            site_scope=None, language="en", actor="cli:test",
        )  # fmt: skip
        session.commit()
    browser = TestClient(collector.api.app, base_url="http://127.0.0.1")
    login = browser.get("/ui/login")
    assert login.status_code == 200
    response = browser.post(
        "/ui/login",
        data={"username": "facilities", "password": PASSWORD, **_hidden_fields(login.text)},
        headers={"Origin": "http://127.0.0.1"},
        follow_redirects=False,
    )
    assert response.status_code in (302, 303), response.text[:500]
    assert "cw_token" in response.cookies or "cw_token" in browser.cookies


HIDDEN_FIELD = re.compile(r'<input[^>]*type="hidden"[^>]*name="([^"]+)"[^>]*value="([^"]*)"')


def _hidden_fields(html: str) -> dict[str, str]:
    return dict(HIDDEN_FIELD.findall(html))


@pytest.mark.parametrize("command", [["user", "list"], ["report", "--format", "html"]])
def test_tools_refuse_a_missing_register_without_creating_one(
    tmp_path: Path, command: list[str]
) -> None:
    empty = tmp_path / "elsewhere"
    empty.mkdir()
    result = (
        cli(*command, "--data-dir", str(empty), cwd=empty)
        if command[0] == "user"
        else cli(*command, cwd=empty)
    )
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "no register at" in lines[0], result.stderr
    assert list(empty.iterdir()) == []  # nothing created


def test_a_register_the_user_may_not_read_is_one_line(data_dir: Path, tmp_path: Path) -> None:
    required.root("it drops to the nobody user")
    required.program("setpriv", "util-linux")
    (data_dir / "register.db").chmod(0o600)
    data_dir.chmod(0o755)
    tmp_path.chmod(0o755)
    result = subprocess.run(
        ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups",
         sys.executable, "-m", "campuswatch", "user", "list", "--data-dir", str(data_dir)],
        capture_output=True, text=True, timeout=120, cwd="/",
    )  # fmt: skip
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "permission denied" in lines[0], result.stderr


def test_user_commands_read_the_collectors_config_file(data_dir: Path, tmp_path: Path) -> None:
    config = tmp_path / "collector.toml"
    config.write_text(f'data_dir = "{data_dir}"\n', encoding="utf-8")
    added = cli(
        "user", "add", "soc-1", "--role", "soc", "--password-stdin", "--config", str(config),
        stdin=PASSWORD + "\n", cwd=tmp_path,
    )  # fmt: skip
    assert added.returncode == 0, added.stderr
    assert [user.username for user in rows(data_dir, User)] == ["soc-1"]
    config.write_text('data_dir = "x"\nno_such_key = 1\n', encoding="utf-8")
    refused = cli("user", "list", "--config", str(config), cwd=tmp_path)
    assert refused.returncode == 2
    assert "no_such_key" in refused.stderr and "Traceback" not in refused.stderr
