"""A school's network scanner: it reports every host it sees on the LAN, rogue ones included."""

from __future__ import annotations

from typing import ClassVar, Final

from campuswatch.firmware_sim.device import Catalogue, Moment, SimDevice
from campuswatch.wire.messages import DiscoveredHost, DiscoveryMessage, Message

SWEEP_EVERY: Final = 5
"""Reports between two full sweeps; a rogue device triggers one at once."""


class Scanner(SimDevice):
    device_type: ClassVar[str] = "scanner"
    id_prefix: ClassVar[str] = "scan"
    catalogue: ClassVar[Catalogue] = Catalogue(
        vendors=(("Raspberry Pi", "dc:a6:32"),),
        models=("Raspberry Pi 4 Model B",),
        firmware_versions=("campuswatch-scanner 0.1",),
    )
    __slots__ = ("known", "reports", "rogues")

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.known: list[DiscoveredHost] = []
        self.rogues: list[DiscoveredHost] = []
        self.reports = 0

    def capabilities(self) -> list[str]:
        return ["discovery", "cmd:rescan", "cmd:identify", "cmd:reboot", "cmd:refresh_inventory"]

    def see(self, devices: list[SimDevice]) -> None:
        self.known = [
            DiscoveredHost(
                ip=device.ip,
                mac=device.mac,
                vendor=device.vendor,
                hostname=device.hostname,
                guessed_type=device.device_type,  # type: ignore[arg-type]
            )
            for device in devices
        ]

    def add_rogue(self, host: DiscoveredHost) -> None:
        self.rogues.append(host)
        self.reports = 0  # sweep again at the next report

    def report(self, moment: Moment) -> list[Message]:
        due = self.reports % SWEEP_EVERY == 0
        self.reports += 1
        if not due:
            return []
        return [
            DiscoveryMessage(
                ts=moment.wall,
                device_id=self.device_id,
                site=self.site,
                subnet=f"10.{self.school % 250}.0.0/16",
                hosts=[*self.known, *self.rogues],
            )
        ]
