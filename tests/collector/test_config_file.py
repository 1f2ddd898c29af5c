"""The collector's one config file: TOML < environment < flags, every key checked."""

from __future__ import annotations

import secrets
from pathlib import Path

import pytest
from typer.testing import CliRunner

from campuswatch.collector import cli
from campuswatch.collector.config_file import (
    SAMPLE_CONFIG,
    ConfigFileError,
    load_collector_settings,
)
from campuswatch.collector.forward.settings import SyslogTargetSettings
from campuswatch.collector.settings import CollectorSettings
from campuswatch.commands import app

FULL = """\
broker = "mqtt://10.0.0.5:1883"
broker_username = "collector"
data_dir = "/var/lib/campuswatch"
listen = "127.0.0.1:8181"
db = "postgresql+psycopg:///campuswatch"
tsdb = "victoriametrics://127.0.0.1:8428"
rules_dir = "/etc/campuswatch/rules"
display_token = "{token}"
report_schedule_interval_s = 86400.0
dead_letter_keep = 500

[liveness]
flap_threshold = 5

[liveness.heartbeat_timeout_s]
pc = 120.0
default = 900.0

[[forwarding.destinations]]
name = "soc-syslog"
type = "syslog"
[forwarding.destinations.options]
host = "siem.district.vn"
transport = "tcp"
"""


@pytest.fixture(autouse=True)
def _no_collector_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    # A developer's own CW_* variables must not decide these tests (the suite's conftest
    # sets the report interval; it is part of what is under test here).
    import os

    for name in list(os.environ):
        if name.startswith(("CW_COLLECTOR_", "CW_LIVENESS_")) or name == "CW_ADMIN_TOKEN":
            monkeypatch.delenv(name)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "collector.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_every_table_of_the_file_is_loaded(tmp_path: Path) -> None:
    token = secrets.token_urlsafe(24)
    settings = load_collector_settings(write(tmp_path, FULL.format(token=token)))
    assert settings.broker == "mqtt://10.0.0.5:1883"
    assert settings.broker_username == "collector"
    assert settings.data_dir == Path("/var/lib/campuswatch")
    assert settings.listen == "127.0.0.1:8181"
    assert settings.register_url() == "postgresql+psycopg:///campuswatch"
    assert settings.tsdb == "victoriametrics://127.0.0.1:8428"
    assert settings.rules_dir == Path("/etc/campuswatch/rules")
    assert settings.display_token is not None
    assert settings.display_token.get_secret_value() == token
    assert settings.report_schedule_interval_s == 86400.0
    assert settings.dead_letter_keep == 500
    assert settings.liveness.flap_threshold == 5
    assert settings.liveness.heartbeat_timeout_s == {"pc": 120.0, "default": 900.0}
    assert settings.liveness.flap_window_s == 60.0  # not in the file: default
    forwarding = settings.forwarding_settings()
    assert forwarding is not None
    [destination] = forwarding.destinations
    assert isinstance(destination, SyslogTargetSettings)
    assert (destination.name, destination.options.host) == ("soc-syslog", "siem.district.vn")
    assert destination.options.transport == "tcp"


def test_environment_beats_the_file_and_flags_beat_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = write(tmp_path, FULL.format(token=secrets.token_urlsafe(24)))
    monkeypatch.setenv("CW_COLLECTOR_LISTEN", "127.0.0.1:9001")
    monkeypatch.setenv("CW_COLLECTOR_DEAD_LETTER_KEEP", "700")
    monkeypatch.setenv("CW_LIVENESS_FLAP_THRESHOLD", "9")
    settings = load_collector_settings(config)
    assert settings.listen == "127.0.0.1:9001"
    assert settings.dead_letter_keep == 700
    # The [liveness] table is overridden key by key, not replaced.
    assert settings.liveness.flap_threshold == 9
    assert settings.liveness.heartbeat_timeout_s == {"pc": 120.0, "default": 900.0}
    assert settings.broker == "mqtt://10.0.0.5:1883"  # only in the file

    flagged = load_collector_settings(config, {"listen": "0.0.0.0:9002", "broker": None})
    assert flagged.listen == "0.0.0.0:9002"
    assert flagged.broker == "mqtt://10.0.0.5:1883"  # a flag not given is not an override


def test_run_takes_config_and_its_flags_win(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = write(tmp_path, FULL.format(token=secrets.token_urlsafe(24)))
    monkeypatch.setenv("CW_COLLECTOR_LISTEN", "127.0.0.1:9001")
    seen: list[object] = []
    monkeypatch.setattr(cli, "serve", seen.append)
    result = CliRunner().invoke(
        app, ["collector", "run", "--config", str(config), "--listen", "127.0.0.1:9003"]
    )
    assert result.exit_code == 0, result.output
    [settings] = seen
    assert isinstance(settings, CollectorSettings)
    assert settings.listen == "127.0.0.1:9003"
    assert settings.tsdb == "victoriametrics://127.0.0.1:8428"


def test_unknown_keys_are_refused_one_line_each_naming_file_and_key(tmp_path: Path) -> None:
    config = write(
        tmp_path,
        'listn = "127.0.0.1:8080"\n'
        "[liveness]\nflap_treshold = 3\n"
        '[[forwarding.destinations]]\nname = "soc"\ntype = "syslog"\n'
        '[forwarding.destinations.options]\nhost = "siem"\nhots = "x"\n',
    )
    with pytest.raises(ConfigFileError) as caught:
        load_collector_settings(config)
    assert sorted(caught.value.problems) == sorted(
        [
            f"{config}: listn: Extra inputs are not permitted",
            f"{config}: liveness.flap_treshold: Extra inputs are not permitted",
            f"{config}: forwarding.destinations[0].options.hots: Extra inputs are not permitted",
        ]
    )


def test_run_prints_the_problems_and_exits_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = write(tmp_path, 'listn = "127.0.0.1:8080"\n')
    monkeypatch.setattr(cli, "serve", lambda settings: pytest.fail("must not start"))
    result = CliRunner().invoke(app, ["collector", "run", "--config", str(config)])
    assert result.exit_code == 2
    assert f"error: {config}: listn: Extra inputs are not permitted" in result.output


@pytest.mark.parametrize("secret", ["changeme", "short-token"])
def test_a_placeholder_secret_is_refused(tmp_path: Path, secret: str) -> None:
    config = write(tmp_path, f'display_token = "{secret}"\n')
    with pytest.raises(ConfigFileError) as caught:
        load_collector_settings(config)
    [problem] = caught.value.problems
    assert problem.startswith(f"{config}: display_token: refusing a placeholder or short token")


def test_a_placeholder_broker_password_is_refused(tmp_path: Path) -> None:
    config = write(tmp_path, 'broker_username = "collector"\nbroker_password = "changeme"\n')
    with pytest.raises(ConfigFileError) as caught:
        load_collector_settings(config)
    [problem] = caught.value.problems
    assert problem.startswith(f"{config}: broker_password: refusing a placeholder password")


def test_a_placeholder_in_a_forwarding_destination_is_refused(tmp_path: Path) -> None:
    config = write(
        tmp_path,
        '[[forwarding.destinations]]\nname = "soc"\ntype = "webhook"\n'
        "[forwarding.destinations.options]\n"
        'url = "https://soc.example.vn/in"\nhmac_secret = "changeme"\n',
    )
    with pytest.raises(ConfigFileError) as caught:
        load_collector_settings(config)
    [problem] = caught.value.problems
    assert problem.startswith(f"{config}: forwarding.destinations[0]")
    assert "hmac_secret is a placeholder" in problem


def test_a_bad_value_from_the_environment_names_the_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CW_COLLECTOR_BATCH_SIZE", "0")
    with pytest.raises(ConfigFileError) as caught:
        load_collector_settings(write(tmp_path, "batch_size = 100\n"))
    [problem] = caught.value.problems
    assert problem.startswith("environment (CW_COLLECTOR_BATCH_SIZE): batch_size: ")


def test_inline_forwarding_and_a_forwarding_file_together_are_refused(tmp_path: Path) -> None:
    config = write(
        tmp_path,
        'forwarding_config = "/etc/campuswatch/forwarding.yaml"\n'
        '[[forwarding.destinations]]\nname = "soc"\ntype = "syslog"\n'
        '[forwarding.destinations.options]\nhost = "siem"\n',
    )
    with pytest.raises(ConfigFileError) as caught:
        load_collector_settings(config)
    [problem] = caught.value.problems
    assert problem.startswith(f"{config}: forwarding destinations come from [forwarding]")


def test_a_missing_or_broken_file_is_one_line(tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"
    with pytest.raises(ConfigFileError) as caught:
        load_collector_settings(missing)
    assert caught.value.problems == [f"{missing}: no such file"]
    broken = write(tmp_path, 'broker = "mqtt://x\n')
    with pytest.raises(ConfigFileError) as caught:
        load_collector_settings(broken)
    [problem] = caught.value.problems
    assert problem.startswith(f"{broken}: not valid TOML: ")


def test_the_sample_loads_and_documents_every_setting() -> None:
    settings = load_collector_settings(SAMPLE_CONFIG)
    # The values it shows are the defaults.
    assert settings.model_dump() == CollectorSettings().model_dump()
    text = SAMPLE_CONFIG.read_text(encoding="utf-8")
    documented = {
        line.lstrip("# ").split(" =", 1)[0]
        for line in text.splitlines()
        if " = " in line and not line.startswith("#   ")
    }
    tables = {"liveness", "forwarding", "ownership"}  # [liveness], [[forwarding.…]], [ownership]
    assert set(CollectorSettings.model_fields) - documented == tables
    from campuswatch.collector.settings import LivenessSettings

    assert set(LivenessSettings.model_fields) <= documented | {"heartbeat_timeout_s"}
    assert "[liveness.heartbeat_timeout_s]" in text
    assert "# [[forwarding.destinations]]" in text
    assert "# [ownership]" in text


def test_the_sample_ownership_example_validates_when_uncommented(tmp_path: Path) -> None:
    text = SAMPLE_CONFIG.read_text(encoding="utf-8")
    example = text[text.index("\n# [ownership]\n") + 1 : text.index("# --- Forwarding")]
    lines = [line.removeprefix("# ").removeprefix("#") for line in example.splitlines()]
    config = 'db = "postgresql+psycopg:///campuswatch"\n' + "\n".join(lines)
    ownership = load_collector_settings(write(tmp_path, config)).ownership
    assert ownership is not None
    assert [partition.name for partition in ownership.partitions] == ["north", "south"]


def test_the_sample_forwarding_example_validates_when_uncommented(tmp_path: Path) -> None:
    text = SAMPLE_CONFIG.read_text(encoding="utf-8")
    example = text[text.index("# [[forwarding.destinations]]") :]
    lines = [line.removeprefix("# ").removeprefix("#") for line in example.splitlines()]
    uncommented = "\n".join(lines).replace(
        "<at least 16 random characters>", secrets.token_urlsafe(24)
    )
    settings = load_collector_settings(write(tmp_path, uncommented))
    forwarding = settings.forwarding_settings()
    assert forwarding is not None
    assert [d.name for d in forwarding.destinations] == ["soc-syslog", "soc-webhook"]
