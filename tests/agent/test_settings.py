from __future__ import annotations

from pathlib import Path

import pytest

from campuswatch.agent.settings import ConfigError, load_settings

SAMPLE = Path(__file__).resolve().parents[2] / "agent" / "agent.sample.toml"


def test_the_shipped_sample_config_loads() -> None:
    settings = load_settings(SAMPLE, environ={})
    assert settings.mqtt.broker.startswith("mqtt")


def test_environment_overrides_file_and_converts_types(tmp_path: Path) -> None:
    config = tmp_path / "agent.toml"
    config.write_text('site = "school-a"\n[intervals]\nav = 600\n', encoding="utf-8")
    settings = load_settings(
        config, environ={"CW_AGENT_INTERVALS__AV": "30", "CW_AGENT_COLLECT_SOFTWARE": "false"}
    )
    assert settings.site == "school-a"
    assert settings.intervals.av == 30.0
    assert settings.collect_software is False


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("site = ", "not valid TOML"),
        ("[intervals]\nav = -5\n", "intervals.av"),
        ("sitee = 'typo'\n", "sitee"),
        ("site = 'bad/site'\n", "site"),
        ("[mqtt]\nkeepalive_s = 'often'\n", "keepalive_s"),
    ],
)
def test_bad_config_is_a_clear_error(tmp_path: Path, text: str, expected: str) -> None:
    config = tmp_path / "agent.toml"
    config.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_settings(config, environ={})
    assert expected in str(info.value)
    assert str(config) in str(info.value)


def test_missing_config_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_settings(tmp_path / "absent.toml", environ={})
