"""Who is in the simulated district: schools, buildings, rooms and their devices.

The fleet is a pure function of (seed, schools, devices, site prefix), so device ids and
every device's random stream are the same on every run with the same arguments.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Final

from campuswatch.firmware_sim.device import SimDevice
from campuswatch.firmware_sim.labpc import LabPc
from campuswatch.firmware_sim.models import SMART_MODELS
from campuswatch.firmware_sim.scanner import Scanner

# Share of each kind in a school (per 100 devices): labs are PC-heavy, then the
# smart-classroom kit the plans name.
DEVICE_MIX: Final[dict[str, int]] = {
    "pc": 40,
    "projector": 12,
    "env_sensor": 12,
    "camera": 10,
    "access_point": 8,
    "smart_plug": 8,
    "interactive_panel": 6,
    "access_controller": 4,
}
BUILDINGS: Final = ("A", "B", "C")
DEVICES_PER_ROOM: Final = 8
DEVICE_CLASSES: Final[dict[str, type[SimDevice]]] = {"pc": LabPc, **SMART_MODELS}


@dataclass(frozen=True, slots=True)
class School:
    number: int
    site: str


@dataclass(slots=True)
class Fleet:
    district: str
    schools: list[School]
    devices: list[SimDevice]
    scanners: dict[str, Scanner]
    """One network scanner per school (site), which reports what it sees on the LAN."""

    def in_school(self, site: str) -> list[SimDevice]:
        return [device for device in self.devices if device.site == site]


def school_site(site_prefix: str, number: int) -> str:
    return f"{site_prefix}-s{number:02d}"


def build_fleet(*, seed: int, schools: int, devices: int, site_prefix: str = "sim-d1") -> Fleet:
    if schools < 1:
        raise ValueError("there must be at least one school")
    if devices < schools:
        raise ValueError(f"{devices} devices cannot fill {schools} schools")
    pattern = [kind for kind, share in DEVICE_MIX.items() for _ in range(share)]
    random.Random(f"campuswatch-sim-mix:{seed}").shuffle(pattern)
    school_list = [
        School(number, school_site(site_prefix, number)) for number in range(1, schools + 1)
    ]
    fleet_devices: list[SimDevice] = []
    scanners: dict[str, Scanner] = {}
    base, extra = divmod(devices, schools)
    for school in school_list:
        count = base + (1 if school.number <= extra else 0)
        for local in range(count):
            room_number = local // DEVICES_PER_ROOM
            building = BUILDINGS[room_number % len(BUILDINGS)]
            floor = 1 + (room_number // len(BUILDINGS)) % 4
            room = f"{floor}{room_number // (len(BUILDINGS) * 4) + 1:02d}"
            kind = pattern[local % len(pattern)]
            fleet_devices.append(
                DEVICE_CLASSES[kind](
                    index=len(fleet_devices),
                    seed=seed,
                    site=school.site,
                    school=school.number,
                    building=building,
                    room=room,
                )
            )
        # Scanners are numbered after every device so they never shift a device's stream.
        scanners[school.site] = Scanner(
            index=devices + school.number,
            seed=seed,
            site=school.site,
            school=school.number,
            building="A",
            room="001",
        )
    return Fleet(site_prefix, school_list, fleet_devices, scanners)
