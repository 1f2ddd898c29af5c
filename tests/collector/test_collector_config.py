"""An operator can switch rules and forwarding on: documented flags, and a log line saying so."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from typer.testing import CliRunner

from campuswatch.collector import cli
from campuswatch.collector.forward.settings import ForwardingSettings
from campuswatch.collector.service import log_forwarding_destinations
from campuswatch.collector.settings import CollectorSettings
from campuswatch.commands import app
from tests.collector.conftest import CollectorFactory

FORWARDING = """\
forwarding:
  destinations:
    - name: provincial-soc
      type: syslog
      options: {host: siem.soc.example.vn, transport: tls}
    - name: soc-webhook
      type: webhook
      options:
        url: https://relay:s3cret-pass@soc.example.vn/in?token=abc
        hmac_secret: a-long-random-secret-value-0123
    - name: ioc-wall
      type: mqtt
      enabled: false
      options: {broker_url: "mqtts://ioc.example.vn:8883"}
"""


def captured_settings(monkeypatch: pytest.MonkeyPatch, args: list[str]) -> CollectorSettings:
    seen: list[object] = []
    monkeypatch.setattr(cli, "serve", seen.append)
    result = CliRunner().invoke(app, ["collector", "run", *args])
    assert result.exit_code == 0, result.output
    [settings] = seen
    assert isinstance(settings, CollectorSettings)
    return settings


def test_run_takes_rules_dir_and_forwarding_config_flags(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    config = tmp_path / "forwarding.yaml"
    settings = captured_settings(
        monkeypatch, ["--rules-dir", str(tmp_path), "--forwarding-config", str(config)]
    )
    assert settings.rules_dir == tmp_path
    assert settings.forwarding_config == config


def test_environment_variables_still_work(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("CW_COLLECTOR_RULES_DIR", str(tmp_path))
    monkeypatch.setenv("CW_COLLECTOR_FORWARDING_CONFIG", str(tmp_path / "f.toml"))
    settings = captured_settings(monkeypatch, [])
    assert settings.rules_dir == tmp_path
    assert settings.forwarding_config == tmp_path / "f.toml"


def test_run_help_names_the_flags() -> None:
    result = CliRunner().invoke(app, ["collector", "run", "--help"], terminal_width=200)
    assert "--rules-dir" in result.output and "--forwarding-config" in result.output


def test_each_active_destination_is_logged_without_secrets(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = tmp_path / "forwarding.yaml"
    config.write_text(FORWARDING, encoding="utf-8")
    with caplog.at_level(logging.INFO, logger="campuswatch.collector.service"):
        log_forwarding_destinations(ForwardingSettings.from_file(config))
    lines = [record.getMessage() for record in caplog.records]
    assert lines == [
        "forwarding: destination provincial-soc (syslog) to tls://siem.soc.example.vn:6514",
        "forwarding: destination soc-webhook (webhook) to https://soc.example.vn/in",
    ]
    assert all(record.levelno == logging.INFO for record in caplog.records)


@pytest.mark.parametrize("text", [None, "forwarding: {destinations: []}\n"])
def test_no_destination_is_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, text: str | None
) -> None:
    settings = None
    if text is not None:
        config = tmp_path / "forwarding.yaml"
        config.write_text(text, encoding="utf-8")
        settings = ForwardingSettings.from_file(config)
    with caplog.at_level(logging.INFO, logger="campuswatch.collector.service"):
        log_forwarding_destinations(settings)
    [record] = caplog.records
    assert record.levelno == logging.WARNING
    assert record.getMessage() == "forwarding: no destinations configured; alerts stay local"


def test_collector_logs_its_destinations_at_start(
    collector_factory: CollectorFactory, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = tmp_path / "forwarding.yaml"
    config.write_text(FORWARDING, encoding="utf-8")
    with caplog.at_level(logging.INFO, logger="campuswatch.collector.service"):
        collector_factory(forwarding_config=config)
    lines = [record.getMessage() for record in caplog.records]
    assert (
        "forwarding: destination provincial-soc (syslog) to tls://siem.soc.example.vn:6514" in lines
    )


def test_inline_destinations_of_the_config_file_are_logged_too(
    collector_factory: CollectorFactory, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = tmp_path / "forwarding.yaml"
    config.write_text(FORWARDING, encoding="utf-8")
    inline = ForwardingSettings.from_file(config)
    with caplog.at_level(logging.INFO, logger="campuswatch.collector.service"):
        collector_factory(forwarding=inline)
    lines = [record.getMessage() for record in caplog.records]
    assert "forwarding: destination soc-webhook (webhook) to https://soc.example.vn/in" in lines
    assert not any("no destinations" in line for line in lines)
