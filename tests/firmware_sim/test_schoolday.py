from __future__ import annotations

from datetime import datetime

from campuswatch.firmware_sim.device import Moment, SimDevice
from campuswatch.firmware_sim.models import AccessPoint, EnvSensor, Projector
from campuswatch.firmware_sim.schoolday import occupancy

TUESDAY_10 = datetime.fromisoformat("2025-03-04T10:00:00+07:00")
SUNDAY_03 = datetime.fromisoformat("2025-03-02T03:00:00+07:00")


def _moment(at: datetime) -> Moment:
    return Moment(sim=at, wall=at, elapsed_s=60)


def _mean(model: type[SimDevice], metric: str, at: datetime, devices: int = 20) -> float:
    values = []
    for index in range(devices):
        device = model(index=index, seed=3, site="s", school=1, building="A", room=f"1{index:02d}")
        values.append(device.read(_moment(at))[0][metric])
    return sum(values) / len(values)


def test_co2_is_higher_in_class_than_on_a_sunday_night() -> None:
    assert _mean(EnvSensor, "co2_ppm", TUESDAY_10) > _mean(EnvSensor, "co2_ppm", SUNDAY_03) + 400


def test_projectors_are_on_in_class_and_off_at_night() -> None:
    assert _mean(Projector, "power", TUESDAY_10) > 0.4
    assert _mean(Projector, "power", SUNDAY_03) == 0.0


def test_wifi_clients_follow_the_timetable() -> None:
    assert _mean(AccessPoint, "clients", TUESDAY_10) > _mean(AccessPoint, "clients", SUNDAY_03) + 10


def test_occupancy_knows_sessions_breaks_and_weekends() -> None:
    assert occupancy(datetime.fromisoformat("2025-03-04T07:20:00+07:00")) == 1.0
    assert occupancy(datetime.fromisoformat("2025-03-04T07:47:00+07:00")) < 1.0  # change
    assert occupancy(datetime.fromisoformat("2025-03-04T12:00:00+07:00")) < 0.1  # lunch
    assert occupancy(datetime.fromisoformat("2025-03-08T09:00:00+07:00")) == 0.0  # Saturday
    # The same instant written in UTC is read in Vietnamese local time.
    assert occupancy(datetime.fromisoformat("2025-03-04T00:20:00+00:00")) == 1.0
