"""Smart-classroom device models: each turns the school day into its own readings.

Every model reads the same occupancy curve (``schoolday``) so a room's CO2, its projector,
its access point's clients and its plug's power rise and fall together; per-device noise
comes from the device's own seeded random stream.
"""

from __future__ import annotations

import math
from typing import ClassVar, Final

from campuswatch.firmware_sim.device import Catalogue, Happening, Moment, SimDevice, stable_fraction
from campuswatch.firmware_sim.schoolday import (
    IN_CLASS,
    SCHOOL_TIMEZONE,
    local_hour,
    occupancy,
    recent_occupancy,
)

OUTDOOR_CO2_PPM: Final = 420.0


def _daily_wave(moment: Moment, peak_hour: float) -> float:
    """-1..1 over the local day, highest at ``peak_hour``."""
    return math.cos((local_hour(moment.sim) - peak_hour) / 24 * 2 * math.pi)


def _room_in_use(device: SimDevice, moment: Moment) -> bool:
    """Is there a lesson in this room now? Fixed per room and period, so a projector and the
    sensor in the same room agree, and reruns agree."""
    if occupancy(moment.sim) < 0.3:
        return False
    local = moment.sim.astimezone(SCHOOL_TIMEZONE)
    period = int(local_hour(moment.sim) * 60 // 50)
    usage = 0.55 + 0.4 * stable_fraction(device.site, device.building, device.room)
    return stable_fraction(device.site, device.building, device.room, local.date(), period) < usage


class Projector(SimDevice):
    device_type: ClassVar[str] = "projector"
    id_prefix: ClassVar[str] = "proj"
    catalogue: ClassVar[Catalogue] = Catalogue(
        vendors=(("Epson", "64:eb:8c"), ("Sony", "00:1d:ba"), ("ViewSonic", "00:1e:b8")),
        models=("EB-X51", "EB-E20", "VPL-EX455", "PA503X"),
        firmware_versions=("1.02", "1.04", "2.10"),
    )
    __slots__ = ("lamp_hours",)

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.lamp_hours = float(self.rng.randrange(200, 4500))

    def read(self, moment: Moment) -> tuple[dict[str, float], dict[str, str]]:
        on = _room_in_use(self, moment)
        if on:
            self.lamp_hours += moment.elapsed_s / 3600
        ambient = 29 + 2 * _daily_wave(moment, 14)
        temperature = (ambient + 27 if on else ambient) + self.rng.gauss(0, 0.8)
        source = ("hdmi1", "hdmi2", "vga")[
            int(stable_fraction(self.index, local_hour(moment.sim) // 1) * 3)
        ]
        return (
            {
                "lamp_hours": self.lamp_hours,
                "temperature_c": temperature,
                "power": 1.0 if on else 0.0,
            },
            {"power": "on" if on else "standby", "input_source": source if on else "none"},
        )


class InteractivePanel(SimDevice):
    device_type: ClassVar[str] = "interactive_panel"
    id_prefix: ClassVar[str] = "ifp"
    catalogue: ClassVar[Catalogue] = Catalogue(
        vendors=(("Samsung", "8c:79:f5"), ("LG", "a8:23:fe"), ("ViewSonic", "00:1e:b8")),
        models=("WM75B", "TR3DJ", "IFP7550"),
        firmware_versions=("3.1.0", "3.2.4", "4.0.1"),
    )
    __slots__ = ()

    def read(self, moment: Moment) -> tuple[dict[str, float], dict[str, str]]:
        on = _room_in_use(self, moment)
        brightness = 70 + self.rng.uniform(-5, 5) if on else 0.0
        temperature = 30 + (12 if on else 0) + self.rng.gauss(0, 0.7)
        source = ("ops", "hdmi1", "cast")[
            int(stable_fraction(self.index, local_hour(moment.sim) // 1) * 3)
        ]
        return (
            {
                "brightness_pct": brightness,
                "temperature_c": temperature,
                "power": 1.0 if on else 0.0,
            },
            {"power": "on" if on else "standby", "input_source": source if on else "none"},
        )


class Camera(SimDevice):
    device_type: ClassVar[str] = "camera"
    id_prefix: ClassVar[str] = "cam"
    catalogue: ClassVar[Catalogue] = Catalogue(
        vendors=(("Hikvision", "c0:56:e3"), ("Dahua", "3c:ef:8c"), ("Axis", "00:40:8c")),
        models=("DS-2CD1023G0", "IPC-HFW1230S", "M3106-L"),
        firmware_versions=("5.5.82", "5.7.3", "10.12.1"),
    )
    __slots__ = ("storage_free_pct", "stream_down_reports")

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.storage_free_pct = self.rng.uniform(20, 90)
        self.stream_down_reports = 0

    def read(self, moment: Moment) -> tuple[dict[str, float], dict[str, str]]:
        # Motion recording fills the card in school hours; loop recording frees it at 10 %.
        recording = occupancy(moment.sim) > 0
        if recording:
            self.storage_free_pct -= moment.elapsed_s / 3600 * 0.4
        if self.storage_free_pct < 10:
            self.storage_free_pct = self.rng.uniform(60, 80)
        if self.stream_down_reports:
            self.stream_down_reports -= 1
        elif self.rng.random() < 0.003:
            self.stream_down_reports = self.rng.randrange(1, 4)
        stream_up = self.stream_down_reports == 0
        return (
            {
                "stream_up": 1.0 if stream_up else 0.0,
                "recording": 1.0 if recording and stream_up else 0.0,
                "storage_free_pct": self.storage_free_pct,
                "bitrate_kbps": (2048 + self.rng.gauss(0, 120)) if stream_up else 0.0,
            },
            {"stream": "up" if stream_up else "down"},
        )


class EnvSensor(SimDevice):
    device_type: ClassVar[str] = "env_sensor"
    id_prefix: ClassVar[str] = "env"
    interface_name: ClassVar[str] = "wlan0"
    catalogue: ClassVar[Catalogue] = Catalogue(
        vendors=(("Aranet", "d4:f5:13"), ("Milesight", "24:e1:24"), ("Airthings", "58:93:d8")),
        models=("Aranet4", "AM319", "View Plus"),
        firmware_versions=("1.2.0", "1.3.1", "2.0.0"),
    )
    __slots__ = ("room_factor",)

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        # Small or badly ventilated rooms build up CO2 faster.
        self.room_factor = 0.7 + 0.6 * stable_fraction(self.site, self.building, self.room, "air")

    def read(self, moment: Moment) -> tuple[dict[str, float], dict[str, str]]:
        people = recent_occupancy(moment.sim)
        co2 = OUTDOOR_CO2_PPM + 1300 * self.room_factor * people + self.rng.gauss(0, 25)
        temperature = 27.5 + 3.0 * _daily_wave(moment, 14) + 1.5 * people + self.rng.gauss(0, 0.3)
        humidity = 72 - 10 * _daily_wave(moment, 14) + self.rng.gauss(0, 1.5)
        traffic = max(0.0, _daily_wave(moment, 7.5)) + max(0.0, _daily_wave(moment, 17.5))
        pm25 = 15 + 12 * traffic + self.rng.gauss(0, 3)
        return (
            {
                "co2_ppm": max(OUTDOOR_CO2_PPM - 40, co2),
                "temperature_c": temperature,
                "humidity_pct": min(100.0, max(0.0, humidity)),
                "pm25": max(0.0, pm25),
            },
            {},
        )


class AccessPoint(SimDevice):
    device_type: ClassVar[str] = "access_point"
    id_prefix: ClassVar[str] = "ap"
    catalogue: ClassVar[Catalogue] = Catalogue(
        vendors=(("Ubiquiti", "74:83:c2"), ("Aruba", "20:4c:03"), ("TP-Link", "50:c7:bf")),
        models=("U6-Lite", "AP-505", "EAP245"),
        firmware_versions=("6.5.28", "8.10.0.6", "5.0.4"),
    )
    __slots__ = ("capacity",)

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.capacity = self.rng.randrange(20, 45)

    def read(self, moment: Moment) -> tuple[dict[str, float], dict[str, str]]:
        people = occupancy(moment.sim)
        clients = max(0, round(people * self.capacity + self.rng.gauss(0, 2) + 1))
        utilisation = min(100.0, 6 + clients * 1.7 + self.rng.gauss(0, 3))
        uplink = max(1.0, 90 - 55 * people + self.rng.gauss(0, 5))
        return (
            {
                "clients": float(clients),
                "channel_utilisation_pct": max(0.0, utilisation),
                "uplink_mbps": uplink,
            },
            {},
        )


class SmartPlug(SimDevice):
    device_type: ClassVar[str] = "smart_plug"
    id_prefix: ClassVar[str] = "plug"
    interface_name: ClassVar[str] = "wlan0"
    catalogue: ClassVar[Catalogue] = Catalogue(
        vendors=(("Shelly", "c8:c9:a3"), ("TP-Link", "50:c7:bf"), ("Sonoff", "dc:4f:22")),
        models=("Plus Plug S", "P110", "S31"),
        firmware_versions=("1.0.8", "1.1.3", "3.6.0"),
    )
    LOADS: ClassVar[dict[str, tuple[float, float]]] = {
        # (standby W, in-use W)
        "air_conditioner": (3.0, 1150.0),
        "projector": (4.0, 280.0),
        "lab_bench": (8.0, 450.0),
    }
    __slots__ = ("energy_kwh", "load")

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.load = self.rng.choice(sorted(self.LOADS))
        self.energy_kwh = self.rng.uniform(50, 900)

    def read(self, moment: Moment) -> tuple[dict[str, float], dict[str, str]]:
        standby, in_use = self.LOADS[self.load]
        on = _room_in_use(self, moment)
        power = (in_use * self.rng.uniform(0.85, 1.05) if on else standby) + self.rng.gauss(0, 0.5)
        power = max(0.0, power)
        self.energy_kwh += power * moment.elapsed_s / 3600 / 1000
        return ({"power_w": power, "energy_kwh": self.energy_kwh}, {"load": self.load})


class AccessController(SimDevice):
    device_type: ClassVar[str] = "access_controller"
    id_prefix: ClassVar[str] = "door"
    catalogue: ClassVar[Catalogue] = Catalogue(
        vendors=(("ZKTeco", "00:17:61"), ("HID", "00:06:8e"), ("Suprema", "00:17:fc")),
        models=("inBio260", "VertX V100", "BioEntry W2"),
        firmware_versions=("6.0.1", "2.4.7", "1.7.0"),
    )
    TAMPER_PROBABILITY: ClassVar[float] = 2e-5
    __slots__ = ("day", "door_events_today")

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.door_events_today = 0
        self.day = ""

    def happenings(self, moment: Moment) -> list[Happening]:
        today = moment.sim.astimezone(SCHOOL_TIMEZONE).date().isoformat()
        if today != self.day:
            self.day, self.door_events_today = today, 0
        found: list[Happening] = []
        # Lab doors open at lesson changes (people moving) and now and then in a lesson.
        people = occupancy(moment.sim)
        chance = {0.0: 0.01}.get(people, 0.6 if people < IN_CLASS else 0.15)
        if self.rng.random() < chance:
            self.door_events_today += 1
            badge = f"{self.rng.randrange(10**6):06d}"
            found.append(
                Happening("door_opened", "info", "door opened with badge", {"badge": badge})
            )
        if people == 0.0 and self.rng.random() < 0.002:
            found.append(
                Happening("door_forced", "high", "door opened without a badge out of hours")
            )
        if self.rng.random() < self.TAMPER_PROBABILITY:
            found.append(Happening("tamper", "high", "reader cover opened"))
        return found

    def read(self, moment: Moment) -> tuple[dict[str, float], dict[str, str]]:
        locked = occupancy(moment.sim) < 0.3
        return (
            {"door_events_today": float(self.door_events_today)},
            {"door": "locked" if locked else "unlocked"},
        )


SMART_MODELS: Final[dict[str, type[SimDevice]]] = {
    model.device_type: model
    for model in (
        Projector,
        InteractivePanel,
        Camera,
        EnvSensor,
        AccessPoint,
        SmartPlug,
        AccessController,
    )
}
