from __future__ import annotations

import re
import secrets
from pathlib import Path

import pytest
from pydantic import ValidationError

from campuswatch.collector.forward.settings import (
    ForwardingSettings,
    SyslogTargetSettings,
    WebhookTargetSettings,
    build_targets,
)
from campuswatch.collector.forward.syslog import SyslogDestination
from campuswatch.collector.forward.webhook import WebhookDestination
from tests.collector.forward.receivers import Pki

DOCS = Path(__file__).resolve().parents[3] / "docs" / "forwarding.md"
SECRET_PLACEHOLDER = "REPLACE_WITH_A_LONG_RANDOM_SECRET"


def docs_sample(language: str) -> str:
    match = re.search(rf"```{language}\n(.*?)```", DOCS.read_text(encoding="utf-8"), re.DOTALL)
    assert match is not None, f"docs/forwarding.md has no {language} sample"
    return match.group(1)


@pytest.mark.parametrize(("language", "suffix"), [("yaml", ".yaml"), ("toml", ".toml")])
def test_the_documented_samples_load_once_the_secret_is_set(
    language: str, suffix: str, tmp_path: Path
) -> None:
    text = docs_sample(language)
    path = tmp_path / f"forwarding{suffix}"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ValidationError, match="placeholder"):
        ForwardingSettings.from_file(path)
    path.write_text(text.replace(SECRET_PLACEHOLDER, secrets.token_hex(24)), encoding="utf-8")
    settings = ForwardingSettings.from_file(path)
    assert settings.destinations
    kinds = {d.type for d in settings.destinations}
    assert "syslog" in kinds


def test_yaml_with_every_type(tmp_path: Path, pki: Pki) -> None:
    path = tmp_path / "collector.yaml"
    path.write_text(
        """
forwarding:
  destinations:
    - name: soc-syslog
      type: syslog
      options: {host: siem.example.vn, transport: tls, ca_file: "CA_FILE"}
      delivery: {rate_per_s: 200, max_attempts: 5000}
    - name: soc-webhook
      type: webhook
      options:
        url: https://siem.example.vn/ingest
        document_format: ocsf
        hmac_secret: 8d1f0c5e7b2a4c6e9f3d1a7b5c2e8f40
    - name: ioc
      type: mqtt
      enabled: false
      options: {broker_url: "mqtt://ioc.example.vn:1883"}
""",
        encoding="utf-8",
    )
    path.write_text(path.read_text().replace("CA_FILE", str(pki.ca_file)), encoding="utf-8")
    settings = ForwardingSettings.from_file(path)
    syslog, webhook, _mqtt = settings.destinations
    assert isinstance(syslog, SyslogTargetSettings) and syslog.options.port is None
    assert syslog.delivery.to_policy().rate_per_s == 200
    assert isinstance(webhook, WebhookTargetSettings)
    assert "8d1f" not in repr(webhook)  # secrets stay out of logs
    assert settings.enabled_names == ["soc-syslog", "soc-webhook"]
    targets = build_targets(settings)
    assert [t.name for t in targets] == ["soc-syslog", "soc-webhook"]
    assert isinstance(targets[0].destination, SyslogDestination)
    assert targets[0].destination.port == 6514
    assert isinstance(targets[1].destination, WebhookDestination)
    for target in targets:
        target.destination.close()


URL = "https://siem.example.vn/x"


@pytest.mark.parametrize(
    ("kind", "options", "message"),
    [
        ("webhook", {"url": URL, "hmac_secret": "changeme"}, "placeholder"),
        ("webhook", {"url": URL, "hmac_secret": "Change-Me-Now-Please"}, "placeholder"),
        ("webhook", {"url": URL, "hmac_secret": "short1X"}, "16"),
        ("webhook", {"url": URL, "headers": {"Authorization": "Bearer CHANGEME"}}, "placeholder"),
        ("webhook", {"url": "http://siem.example.vn/x"}, "plain http"),
        ("mqtt", {"broker_url": "mqtt://cw:changeme@b:1883"}, "placeholder"),
        ("mqtt", {"broker_url": "mqtt://b", "topic_template": "a/#"}, "wildcards"),
        ("syslog", {"host": "s", "transprot": "tcp"}, "transprot"),
        ("carrier-pigeon", {}, "type"),
    ],
)
def test_bad_settings_are_refused(kind: str, options: dict[str, object], message: str) -> None:
    entry = {"name": "x", "type": kind, "options": options}
    with pytest.raises(ValidationError, match=message):
        ForwardingSettings.model_validate({"destinations": [entry]})


def test_giving_up_within_a_day_is_refused() -> None:
    entry = {"name": "x", "type": "syslog", "options": {"host": "s"}, "delivery": {"max_age_s": 60}}
    with pytest.raises(ValidationError, match="max_age_s"):
        ForwardingSettings.model_validate({"destinations": [entry]})


def test_loopback_http_is_allowed_and_names_must_be_unique() -> None:
    entry = {"name": "a", "type": "webhook", "options": {"url": "http://127.0.0.1:9000/x"}}
    ForwardingSettings.model_validate({"destinations": [entry]})
    with pytest.raises(ValidationError, match="unique"):
        ForwardingSettings.model_validate({"destinations": [entry, entry]})
