"""The stand-alone scanner as a device of its own: hello, state, Last Will, queued sends.

It is the agent's runner with one probe: the store-and-forward queue, reconnect back-off and
retained birth come for free, and the collector sees it like any device (type ``scanner``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from campuswatch.agent.identity import Identity
from campuswatch.agent.probes import Probe
from campuswatch.agent.runner import AgentRunner
from campuswatch.agent.settings import AgentSettings
from campuswatch.wire.codec import WireRejection, decode_message
from campuswatch.wire.messages import CommandMessage
from campuswatch.wire.mqtt import ReceivedMessage


class ScannerRunner(AgentRunner):
    def __init__(
        self,
        settings: AgentSettings,
        identity: Identity,
        site: str,
        probes: Sequence[Probe],
        *,
        state_dir: Path,
        interval_s: float,
    ) -> None:
        self.sweep_interval_s = interval_s
        super().__init__(
            settings, identity, site, probes, state_dir=state_dir, device_type="scanner"
        )

    def _interval_for(self, probe: Probe) -> float:
        return self.sweep_interval_s

    def _on_command(self, received: ReceivedMessage) -> None:
        """``rescan`` sweeps now; every other command is the agent's business."""
        try:
            decoded = decode_message(received.topic, received.payload)
        except WireRejection:
            super()._on_command(received)  # logs and ignores it the agent's way
            return
        command = decoded.message
        if isinstance(command, CommandMessage) and command.command == "rescan":
            self.stats.commands_total += 1
            self._run_now(None)
            return
        super()._on_command(received)
