"""The school day and week that drive every simulated value, and the simulated clock.

Vietnamese schools teach a morning session (07:00–11:30) and an afternoon session
(13:00–17:00), Monday to Friday, in 45-minute periods with 5-minute changes and one longer
break mid-session. Occupancy (0 empty … 1 full classroom) is the one input every device
model derives its readings from, so CO2, projectors, Wi-Fi clients and power all move
together the way they do in a real building.
"""

from __future__ import annotations

import time
from datetime import datetime, timedelta
from datetime import time as clock_time
from typing import Final
from zoneinfo import ZoneInfo

SCHOOL_TIMEZONE: Final = ZoneInfo("Asia/Ho_Chi_Minh")
SESSIONS: Final = ((clock_time(7, 0), clock_time(11, 30)), (clock_time(13, 0), clock_time(17, 0)))
PERIOD_MIN: Final = 45
CHANGE_MIN: Final = 5
# Minutes after the session start during which the long break (ra chơi) runs.
LONG_BREAK: Final = (150, 170)
IN_CLASS: Final = 1.0
IN_BREAK: Final = 0.35
SCHOOL_DAYS: Final = frozenset({0, 1, 2, 3, 4})  # Monday..Friday


def _minutes(moment: clock_time) -> int:
    return moment.hour * 60 + moment.minute


def occupancy(moment: datetime) -> float:
    """How full a classroom is at ``moment`` (any zone; read in the school's local time)."""
    local = moment.astimezone(SCHOOL_TIMEZONE)
    if local.weekday() not in SCHOOL_DAYS:
        return 0.0
    minute = local.hour * 60 + local.minute + local.second / 60
    for start, end in SESSIONS:
        begin, finish = _minutes(start), _minutes(end)
        if not begin <= minute < finish:
            continue
        into = minute - begin
        if LONG_BREAK[0] <= into < LONG_BREAK[1]:
            return IN_BREAK
        if into % (PERIOD_MIN + CHANGE_MIN) >= PERIOD_MIN:
            return IN_BREAK
        return IN_CLASS
    # Teachers arrive before and stay after; nobody is in at night.
    first, last = _minutes(SESSIONS[0][0]), _minutes(SESSIONS[-1][1])
    if first - 30 <= minute < first or last <= minute < last + 60:
        return 0.1
    if _minutes(SESSIONS[0][1]) <= minute < _minutes(SESSIONS[1][0]):
        return 0.05  # lunch: rooms mostly empty, a few pupils stay in
    return 0.0


def recent_occupancy(moment: datetime, window_min: int = 30, step_min: int = 5) -> float:
    """Mean occupancy over the last ``window_min`` minutes: air and heat lag people."""
    samples = [
        occupancy(moment - timedelta(minutes=back)) for back in range(0, window_min, step_min)
    ]
    return sum(samples) / len(samples)


def local_hour(moment: datetime) -> float:
    local = moment.astimezone(SCHOOL_TIMEZONE)
    return local.hour + local.minute / 60 + local.second / 3600


class SimClock:
    """Simulated time: ``start`` plus real elapsed time times ``speed``.

    Tests drive a clock by hand with ``advance`` and never sleep; the runner uses real time.
    """

    def __init__(self, start: datetime, speed: float = 1.0, *, manual: bool = False) -> None:
        if start.tzinfo is None:
            raise ValueError("the simulation start must carry a time zone")
        if speed <= 0:
            raise ValueError("speed must be positive")
        self.start = start
        self.speed = speed
        self._manual = manual
        self._manual_offset_s = 0.0
        self._real_start = time.monotonic()

    def now(self) -> datetime:
        return self.start + timedelta(seconds=self.elapsed_s())

    def elapsed_s(self) -> float:
        if self._manual:
            return self._manual_offset_s
        return (time.monotonic() - self._real_start) * self.speed

    def advance(self, seconds: float) -> None:
        if not self._manual:
            raise RuntimeError("only a manual clock can be advanced by hand")
        self._manual_offset_s += seconds

    def real_seconds_until(self, sim_elapsed_s: float) -> float:
        """Real seconds until the clock reaches ``sim_elapsed_s`` after start."""
        return max(0.0, (sim_elapsed_s - self.elapsed_s()) / self.speed)
