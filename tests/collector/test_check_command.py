"""``campuswatch collector check``: every connection tried for real, one line per problem."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text
from typer.testing import CliRunner

from campuswatch.collector.broker.passwords import hash_password
from campuswatch.collector.db.engine import head_revision, make_engine, upgrade
from campuswatch.commands import app
from tests.collector.forward.receivers import SyslogReceiver, WebhookReceiver, make_test_pki
from tests.support import required
from tests.support.mosquitto import MosquittoBroker
from tests.support.ports import free_port
from tests.support.victoriametrics import VictoriaMetricsServer

COLLECTOR_PASSWORD = secrets.token_urlsafe(24)


@pytest.fixture
def broker_with_login(tmp_path: Path) -> Iterator[MosquittoBroker]:
    """Mosquitto with a password file holding the collector's login."""
    required.program("mosquitto", "mosquitto")
    passwd = tmp_path / "passwd"
    passwd.write_text(f"collector:{hash_password(COLLECTOR_PASSWORD)}\n", encoding="utf-8")
    broker = MosquittoBroker(tmp_path, free_port(), extra_config=f"password_file {passwd}")
    broker.start()
    yield broker
    broker.stop()


@pytest.fixture
def syslog_tcp() -> Iterator[SyslogReceiver]:
    receiver = SyslogReceiver("tcp")
    receiver.start()
    yield receiver
    receiver.stop()


@pytest.fixture
def webhook() -> Iterator[WebhookReceiver]:
    receiver = WebhookReceiver()
    receiver.start()
    yield receiver
    receiver.stop()


def check(config: Path) -> tuple[int, list[str], list[str]]:
    """Exit code, the ok lines, the problem lines."""
    result = CliRunner().invoke(
        app, ["collector", "check", "--config", str(config), "--timeout", "3"]
    )
    lines = result.output.splitlines()
    return (
        result.exit_code,
        [line for line in lines if line.startswith("ok: ")],
        [line for line in lines if line.startswith("problem: ")],
    )


def test_everything_reachable_is_ok_and_exits_0(
    tmp_path: Path,
    broker_with_login: MosquittoBroker,
    db_url: str,
    victoriametrics: VictoriaMetricsServer,
    syslog_tcp: SyslogReceiver,
    webhook: WebhookReceiver,
) -> None:
    upgrade(db_url)
    pki = make_test_pki(tmp_path)
    syslog_tls = SyslogReceiver("tls", pki.server_context())
    syslog_tls.start()
    try:
        config = tmp_path / "collector.toml"
        config.write_text(
            f'broker = "{broker_with_login.url}"\n'
            'broker_username = "collector"\n'
            f'broker_password = "{COLLECTOR_PASSWORD}"\n'
            f'data_dir = "{tmp_path / "data"}"\n'
            f'db = "{db_url}"\n'
            f'tsdb = "victoriametrics://127.0.0.1:{victoriametrics.port}"\n'
            '[[forwarding.destinations]]\nname = "siem-tcp"\ntype = "syslog"\n'
            "[forwarding.destinations.options]\n"
            f'host = "127.0.0.1"\nport = {syslog_tcp.port}\ntransport = "tcp"\n'
            '[[forwarding.destinations]]\nname = "siem-tls"\ntype = "syslog"\n'
            "[forwarding.destinations.options]\n"
            f'host = "127.0.0.1"\nport = {syslog_tls.port}\ntransport = "tls"\n'
            f'ca_file = "{pki.ca_file}"\n'
            '[[forwarding.destinations]]\nname = "soc-webhook"\ntype = "webhook"\n'
            f'[forwarding.destinations.options]\nurl = "{webhook.url}"\n'
            '[[forwarding.destinations]]\nname = "ioc"\ntype = "mqtt"\n'
            f'[forwarding.destinations.options]\nbroker_url = "{broker_with_login.url}"\n',
            encoding="utf-8",
        )
        code, ok, problems = check(config)
    finally:
        syslog_tls.stop()
    assert problems == []
    assert code == 0
    names = [line.split(": ", 2)[1] for line in ok]
    assert names == [
        "data dir",
        "broker",
        "register",
        "time series",
        "rules",
        "forwarding siem-tcp",
        "forwarding siem-tls",
        "forwarding soc-webhook",
        "forwarding ioc",
    ]
    assert f"{broker_with_login.url}: logged in as collector" in ok[1]
    assert f"schema {head_revision()} (current)" in ok[2]
    assert "/health: answered HTTP 200" in ok[3]
    assert "TLSv1" in ok[6]
    assert webhook.inbox.items == []  # a check delivers nothing


def test_each_unreachable_service_is_one_line_and_exit_1(tmp_path: Path) -> None:
    closed = [free_port() for _ in range(6)]
    config = tmp_path / "collector.toml"
    config.write_text(
        f'broker = "mqtt://127.0.0.1:{closed[0]}"\n'
        f'data_dir = "{tmp_path / "data"}"\n'
        f'db = "postgresql+psycopg://campuswatch@127.0.0.1:{closed[1]}/campuswatch"\n'
        f'tsdb = "victoriametrics://127.0.0.1:{closed[2]}"\n'
        '[[forwarding.destinations]]\nname = "siem"\ntype = "syslog"\n'
        "[forwarding.destinations.options]\n"
        f'host = "127.0.0.1"\nport = {closed[3]}\ntransport = "tcp"\n'
        '[[forwarding.destinations]]\nname = "soc-webhook"\ntype = "webhook"\n'
        "[forwarding.destinations.options]\n"
        f'url = "http://127.0.0.1:{closed[4]}/in"\n'
        '[[forwarding.destinations]]\nname = "ioc"\ntype = "mqtt"\n'
        f'[forwarding.destinations.options]\nbroker_url = "mqtt://127.0.0.1:{closed[5]}"\n',
        encoding="utf-8",
    )
    code, ok, problems = check(config)
    assert code == 1
    assert [line.split(": ", 2)[1] for line in problems] == [
        "broker",
        "register",
        "time series",
        "forwarding siem",
        "forwarding soc-webhook",
        "forwarding ioc",
    ]
    assert f"127.0.0.1:{closed[0]}: unreachable (connection refused)" in problems[0]
    assert "cannot connect to postgresql+psycopg://campuswatch@127.0.0.1" in problems[1]
    assert all("refused" in line for line in problems[2:]), problems
    assert [line.split(": ", 2)[1] for line in ok] == ["data dir", "rules"]


def test_a_wrong_broker_password_is_a_problem(
    tmp_path: Path, broker_with_login: MosquittoBroker
) -> None:
    config = tmp_path / "collector.toml"
    config.write_text(
        f'broker = "{broker_with_login.url}"\nbroker_username = "collector"\n'
        f'broker_password = "{secrets.token_urlsafe(24)}"\ndata_dir = "{tmp_path}"\n',
        encoding="utf-8",
    )
    code, _, problems = check(config)
    assert code == 1
    [problem] = problems
    assert problem.startswith(f"problem: broker: {broker_with_login.url}: refused the connection")


def test_a_register_from_a_newer_version_is_a_problem(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'register.db'}"
    upgrade(url)
    engine = make_engine(url)
    with engine.begin() as connection:
        connection.execute(text("UPDATE alembic_version SET version_num = 'ffff0000ffff'"))
    engine.dispose()
    config = tmp_path / "collector.toml"
    config.write_text(
        f'broker = "mqtt://127.0.0.1:{free_port()}"\ndata_dir = "{tmp_path}"\n',
        encoding="utf-8",
    )
    _, _, problems = check(config)
    assert f"problem: register: {tmp_path / 'register.db'}: schema ffff0000ffff is unknown" in (
        "\n".join(problems)
    )


def test_invalid_settings_are_one_line_each_and_exit_1(tmp_path: Path) -> None:
    config = tmp_path / "collector.toml"
    config.write_text('brokr = "mqtt://x"\ndisplay_token = "changeme"\n', encoding="utf-8")
    result = CliRunner().invoke(app, ["collector", "check", "--config", str(config)])
    assert result.exit_code == 1
    assert sorted(result.output.splitlines()) == [
        f"error: {config}: brokr: Extra inputs are not permitted",
        f"error: {config}: display_token: refusing a placeholder or short token: use at least "
        "16 random characters (e.g. `python -c 'import secrets; "
        "print(secrets.token_urlsafe(24))'`)",
    ]
