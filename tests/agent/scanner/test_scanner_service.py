"""The scanner as a device against a real Mosquitto: hello as ``scanner``, discovery, rescan."""

from __future__ import annotations

from pathlib import Path

from campuswatch.agent.identity import HardwareFacts, resolve_identity
from campuswatch.agent.scanner.probe import DiscoveryProbe
from campuswatch.agent.scanner.scan import ScanOptions, ScanResult
from campuswatch.agent.scanner.service import ScannerRunner
from campuswatch.agent.settings import load_settings
from campuswatch.wire import CommandMessage, decode_message, encode_message
from campuswatch.wire.messages import DiscoveredHost, DiscoveryMessage, HelloMessage
from campuswatch.wire.mqtt import MqttConnection
from campuswatch.wire.topics import build_topic
from tests.support.mosquitto import MosquittoBroker, subscribe
from tests.support.ports import free_port


def test_scanner_runner_publishes_discovery_and_rescans_on_command(
    mosquitto: MosquittoBroker, tmp_path: Path
) -> None:
    sweeps: list[int] = []

    def fake_scan(options: ScanOptions) -> ScanResult:
        sweeps.append(len(sweeps) + 1)
        host = DiscoveredHost(ip="10.213.1.9", mac="00:26:ab:00:00:01", vendor="Epson")
        return ScanResult(options.subnet, [host])

    settings = load_settings(overrides={"mqtt": {"broker": mosquitto.url}}, environ={})
    identity = resolve_identity(tmp_path, HardwareFacts(), configured_device_id="scan-1")
    runner = ScannerRunner(
        settings,
        identity,
        "school-a",
        [DiscoveryProbe(ScanOptions(subnet="10.213.1.0/24"), scan=fake_scan)],
        state_dir=tmp_path,
        interval_s=3600,
    )
    subscriber, capture = subscribe(mosquitto)
    runner.start()
    try:
        capture.wait_for(lambda ms: any(m.topic.endswith("/discovery") for m in ms))
        hello = decode_message(
            build_topic("school-a", "scan-1", "hello"), capture.on("hello")[0].payload
        )
        assert isinstance(hello.message, HelloMessage) and hello.message.device_type == "scanner"
        found = decode_message(capture.on("discovery")[0].topic, capture.on("discovery")[0].payload)
        assert isinstance(found.message, DiscoveryMessage)
        assert [h.vendor for h in found.message.hosts] == ["Epson"]

        commander = MqttConnection(f"test-cmd-{free_port()}", mosquitto.address)
        commander.start()
        assert commander.wait_connected(10)
        command = CommandMessage(device_id="scan-1", site="school-a", command="rescan")
        commander.publish(build_topic("school-a", "scan-1", "cmd"), encode_message(command))
        capture.wait_for(lambda ms: sum(m.topic.endswith("/discovery") for m in ms) >= 2)
        assert len(sweeps) >= 2  # the hour-long interval did not pass: the command did it
        commander.stop()
    finally:
        runner.stop()
        subscriber.stop()
