"""From an MQTT publish to a CEF line at a real syslog receiver, through the shipped rules."""

from __future__ import annotations

from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from campuswatch.wire import AvMessage, encode_message
from tests.collector.conftest import CollectorFactory
from tests.collector.forward.cef_parser import parse_cef
from tests.collector.forward.receivers import SyslogReceiver
from tests.collector.test_ingest_e2e import SITE, lab_pc_messages, publish
from tests.support.mosquitto import MosquittoBroker
from tests.support.ports import free_port
from tests.support.waiting import wait_until


def cef_lines(frames: list[bytes]) -> list[str]:
    lines = []
    for frame in frames:
        text = frame.decode("utf-8")
        lines.append(text[text.index("CEF:") :])
    return lines


def forwarding_config(tmp_path: Path, port: int) -> Path:
    config = tmp_path / "forwarding.yaml"
    config.write_text(
        f"""
forwarding:
  destinations:
    - name: provincial-soc
      type: syslog
      options:
        host: 127.0.0.1
        port: {port}
        transport: tcp
        message_format: cef
      delivery:
        backoff_initial_s: 0.2
        backoff_max_s: 1
        poll_interval_s: 0.2
""",
        encoding="utf-8",
    )
    return config


def test_av_disabled_pc_reaches_the_siem_as_cef_and_survives_a_receiver_outage(
    mosquitto: MosquittoBroker, collector_factory: CollectorFactory, tmp_path: Path
) -> None:
    receiver = SyslogReceiver("tcp")
    receiver.start()
    collector = collector_factory(
        forwarding_config=forwarding_config(tmp_path, receiver.port), alert_group_wait_s=0
    )
    for topic, payload in lab_pc_messages():  # its Defender has real-time protection off
        publish(mosquitto, topic, payload)
    frames = receiver.inbox.wait_for(lambda items: len(items) >= 1, timeout_s=60)
    event = parse_cef(cef_lines(frames)[0])
    assert event.header["name"]
    assert event.extension["deviceExternalId"] == "pc-lab1-07"
    assert event.extension["act"] == "opened"
    assert event.custom_strings()["siteId"] == SITE
    assert 0 <= int(event.header["severity"]) <= 10

    # The SIEM goes away; an alert raised meanwhile is delivered when it is back.
    receiver.stop()
    no_av = AvMessage(device_id="pc-lab1-08", site=SITE, status="no_av")
    publish(mosquitto, f"cw/v1/{SITE}/pc-lab1-08/av", encode_message(no_av))
    wait_until(lambda: collector.get("/api/v1/alerts", device_id="pc-lab1-08")["total"] >= 1)
    receiver.start()
    frames = receiver.inbox.wait_for(
        lambda items: any(b"pc-lab1-08" in item for item in items), timeout_s=60
    )
    late = [parse_cef(line) for line in cef_lines(frames) if "pc-lab1-08" in line]
    assert late[0].extension["deviceExternalId"] == "pc-lab1-08"


def test_forwarding_metrics_are_one_family_per_statistic_across_destinations(
    collector_factory: CollectorFactory, tmp_path: Path
) -> None:
    config = tmp_path / "forwarding.yaml"
    destinations = "".join(
        f"""
    - name: {name}
      type: syslog
      options: {{host: 127.0.0.1, port: {free_port()}, transport: tcp}}
"""
        for name in ("district-soc", "provincial-soc")
    )
    config.write_text(f"forwarding:\n  destinations:{destinations}", encoding="utf-8")
    collector = collector_factory(forwarding_config=config)
    text = collector.api.get("/metrics").text
    families = [
        f for f in text_string_to_metric_families(text) if f.name.startswith("campuswatch_forward_")
    ]
    names = [family.name for family in families]
    assert names and len(names) == len(set(names)), names  # no family repeated
    for family in families:
        assert {s.labels["destination"] for s in family.samples} == {
            "district-soc",
            "provincial-soc",
        }


def test_an_alert_opened_before_a_collector_restart_resolves_after_it(
    mosquitto: MosquittoBroker, collector_factory: CollectorFactory, tmp_path: Path
) -> None:
    """The rules engine's state is in memory; the restarted collector warms it from the
    register, so the open alert still resolves when the PC gets its antivirus."""
    data_dir = tmp_path / "restarted"
    topic = f"cw/v1/{SITE}/pc-lab1-09/av"
    first = collector_factory(data_dir=data_dir, alert_group_wait_s=0)
    publish(
        mosquitto,
        topic,
        encode_message(AvMessage(device_id="pc-lab1-09", site=SITE, status="no_av")),
    )
    alert = wait_until(
        lambda: (items := first.get("/api/v1/alerts", device_id="pc-lab1-09")["items"]) and items[0]
    )
    assert alert["state"] == "firing"
    first.service.stop()

    second = collector_factory(data_dir=data_dir, alert_group_wait_s=0)
    protected = AvMessage(device_id="pc-lab1-09", site=SITE, status="protected")
    publish(mosquitto, topic, encode_message(protected))
    wait_until(lambda: second.get(f"/api/v1/alerts/{alert['id']}")["state"] == "resolved")
    # And it was not opened a second time.
    assert second.get("/api/v1/alerts", device_id="pc-lab1-09")["total"] == 1
