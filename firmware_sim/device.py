"""The shared device runtime: what every simulated device says on the wire.

A device model only computes readings (``read``) and occasional happenings (``happenings``);
this base class turns them into the same messages the PC agent sends: retained ``hello``,
``inventory`` with a digest computed by the agent's own function, ``telemetry`` and
``event``. Connection, Last Will and retained ``state`` belong to the transport, which calls
``birth_messages`` on every (re)connect.
"""

from __future__ import annotations

import random
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import ClassVar

from campuswatch.agent.probes.inventory import inventory_digest
from campuswatch.wire.messages import (
    CommandMessage,
    EventMessage,
    HardwareInfo,
    HelloMessage,
    InterfaceInfo,
    InventoryMessage,
    Message,
    TelemetryMessage,
)

SIM_SOFTWARE = "campuswatch-sim"
DEVICE_COMMANDS = ("identify", "reboot", "refresh_inventory", "run_probes")


@dataclass(frozen=True, slots=True)
class Moment:
    """One report's time: ``sim`` drives values, ``wall`` is the device clock stamped as ``ts``.

    They differ under ``--speed``: the wire's ``ts`` must stay near real time or the
    collector rejects the message as coming from the future.
    """

    sim: datetime
    wall: datetime
    elapsed_s: float
    """Simulated seconds since the previous report of this device (0 at the first)."""


@dataclass(frozen=True, slots=True)
class Happening:
    event_type: str
    severity: str = "info"
    message: str = ""
    attributes: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Catalogue:
    """What a model's devices can be: vendors with their MAC prefix, models and firmware."""

    vendors: tuple[tuple[str, str], ...]
    """(vendor name, IEEE OUI "aa:bb:cc") pairs."""
    models: tuple[str, ...]
    firmware_versions: tuple[str, ...]


def stable_fraction(*parts: object) -> float:
    """A number in [0, 1) fixed by its inputs: the same room has the same lesson plan on
    every run, without drawing from (and so shifting) the device's random stream."""
    return zlib.crc32(":".join(map(str, parts)).encode()) / 2**32


class SimDevice:
    """One simulated device. Subclasses set ``device_type``, ``catalogue`` and ``read``."""

    device_type: ClassVar[str] = "other"
    catalogue: ClassVar[Catalogue]
    id_prefix: ClassVar[str] = "dev"
    interface_name: ClassVar[str] = "eth0"

    __slots__ = (
        "_topics",
        "building",
        "device_id",
        "firmware_version",
        "frozen",
        "frozen_metric",
        "index",
        "ip",
        "mac",
        "model_name",
        "pending_happenings",
        "rng",
        "room",
        "school",
        "serial",
        "site",
        "vendor",
    )

    def __init__(
        self, *, index: int, seed: int, site: str, school: int, building: str, room: str
    ) -> None:
        # One stream per device, seeded from (seed, index) so adding a device to a school
        # never changes the readings of the others.
        self.rng = random.Random(f"campuswatch-sim:{seed}:{index}")
        self.index = index
        self.site = site
        self.school = school
        self.building = building
        self.room = room
        vendor, oui = self.rng.choice(self.catalogue.vendors)
        self.vendor = vendor
        self.model_name = self.rng.choice(self.catalogue.models)
        self.firmware_version = self.rng.choice(self.catalogue.firmware_versions)
        self.mac = oui + "".join(f":{self.rng.randrange(256):02x}" for _ in range(3))
        self.serial = f"{vendor[:3].upper()}{self.rng.randrange(10**9):09d}"
        building_number = ord(building[0]) - ord("A") + 1
        self.ip = (
            f"10.{school % 250}.{building_number * 10 + self.rng.randrange(10)}.{2 + index % 250}"
        )
        self.device_id = f"{self.id_prefix}-{self.mac.replace(':', '')[6:]}{index:05x}"
        self.frozen: dict[str, float] | None = None
        """Readings a stuck sensor keeps repeating; {} means "freeze what you read next"."""
        self.frozen_metric: str | None = None
        """With ``frozen == {}``: freeze only this reading (None: all of them)."""
        self.pending_happenings: list[Happening] = []
        self._topics: dict[str, str] = {}

    # --- what a model implements -------------------------------------------------------

    def read(self, moment: Moment) -> tuple[dict[str, float], dict[str, str]]:
        """Numeric readings and enumerated states at ``moment``; none by default (lab PCs
        and scanners report through their own messages, not telemetry)."""
        return {}, {}

    def happenings(self, moment: Moment) -> list[Happening]:
        """Events since the last report (door opened, tamper); most models have none."""
        return []

    # --- messages ----------------------------------------------------------------------

    @property
    def hostname(self) -> str:
        return f"{self.id_prefix}-{self.building.lower()}{self.room}-{self.index % 1000:03d}"

    def capabilities(self) -> list[str]:
        return ["telemetry", *(f"cmd:{name}" for name in DEVICE_COMMANDS)]

    def hello(self, moment: Moment, interval_s: float) -> Message:
        return HelloMessage(
            ts=moment.wall,
            device_id=self.device_id,
            site=self.site,
            device_type=self.device_type,  # type: ignore[arg-type]
            software=f"{self.vendor} firmware",
            software_version=self.firmware_version,
            vendor=self.vendor,
            model=self.model_name,
            serial=self.serial,
            mac=self.mac,
            firmware_version=self.firmware_version,
            capabilities=self.capabilities(),
            intervals_s={"telemetry": interval_s},
        )

    def inventory(self, moment: Moment) -> Message:
        message = InventoryMessage(
            ts=moment.wall,
            device_id=self.device_id,
            site=self.site,
            digest="0" * 64,
            hostname=self.hostname,
            device_type=self.device_type,  # type: ignore[arg-type]
            hardware=HardwareInfo(vendor=self.vendor, model=self.model_name, serial=self.serial),
            firmware_version=self.firmware_version,
            interfaces=[
                InterfaceInfo(name=self.interface_name, mac=self.mac, ipv4=[self.ip], up=True)
            ],
        )
        # The agent's digest function, so "inventory changed" means the same on both sides.
        message.digest = inventory_digest(message)
        return message

    def report(self, moment: Moment) -> list[Message]:
        """What one scheduled report sends: telemetry, then any events.

        Happenings are drawn before readings so a counter in the telemetry (door events
        today) already includes the events sent with it."""
        happenings = self.pending_happenings + self.happenings(moment)
        self.pending_happenings = []
        values, states = self.read(moment)
        if self.frozen is not None:
            if not self.frozen:
                self.frozen.update(
                    (name, value)
                    for name, value in values.items()
                    if self.frozen_metric in (None, name)
                )
            values = {name: self.frozen.get(name, value) for name, value in values.items()}
        messages: list[Message] = [
            TelemetryMessage(
                ts=moment.wall,
                device_id=self.device_id,
                site=self.site,
                device_type=self.device_type,  # type: ignore[arg-type]
                values={name: round(value, 2) for name, value in values.items()},
                states=states,
            )
        ]
        messages.extend(self.event(moment, happening) for happening in happenings)
        return messages

    def event(self, moment: Moment, happening: Happening) -> EventMessage:
        return EventMessage(
            ts=moment.wall,
            device_id=self.device_id,
            site=self.site,
            event_type=happening.event_type,
            severity=happening.severity,  # type: ignore[arg-type]
            message=happening.message,
            attributes=happening.attributes,
        )

    def command_reply(self, moment: Moment, command: CommandMessage) -> EventMessage:
        return self.event(
            moment,
            Happening(
                "command_done",
                message=f"{command.command} done",
                attributes={"command": command.command, "by": command.issued_by or "unknown"},
            ),
        )

    def topic(self, kind: str, build: Callable[[str, str, str], str]) -> str:
        topic = self._topics.get(kind)
        if topic is None:
            topic = self._topics[kind] = build(self.site, self.device_id, kind)
        return topic
