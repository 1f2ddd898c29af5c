"""A small inline SVG line per series: no chart library, no script, CSP-friendly."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

WIDTH = 160
HEIGHT = 36
PAD = 2


@dataclass(frozen=True, slots=True)
class Sparkline:
    points: str
    """The ``points`` attribute of an SVG polyline, in a WIDTH x HEIGHT box."""
    minimum: float
    maximum: float
    last: float
    samples: int
    width: int = WIDTH
    height: int = HEIGHT


def sparkline(samples: Sequence[tuple[int, float]]) -> Sparkline:
    """Scale (time ms, value) samples into the box; a flat series is drawn mid-height.

    Values that are not finite (an average that overflowed) are left out; the scaling
    works on halves so that even ``-1.7e308 … 1.7e308`` spans without overflowing."""
    if not samples:
        raise ValueError("a sparkline needs at least one sample")
    finite = [(t, v) for t, v in samples if math.isfinite(v)]
    if not finite:
        return Sparkline("", math.nan, math.nan, math.nan, 0)
    times = [t for t, _ in finite]
    values = [v for _, v in finite]
    low, high = min(values), max(values)
    first, last_time = times[0], times[-1]
    span_t = last_time - first or 1
    half_span_v = high / 2 - low / 2
    coordinates = []
    for t, v in finite:
        x = PAD + (WIDTH - 2 * PAD) * (t - first) / span_t if len(finite) > 1 else WIDTH / 2
        y = (
            HEIGHT / 2
            if half_span_v == 0
            else PAD + (HEIGHT - 2 * PAD) * ((high / 2 - v / 2) / half_span_v)
        )
        coordinates.append(f"{x:.1f},{y:.1f}")
    if len(coordinates) == 1:
        # One sample: a short dash so it is visible rather than an invisible point.
        mid_x, mid_y = coordinates[0].split(",")
        coordinates = [f"{float(mid_x) - 3:.1f},{mid_y}", f"{float(mid_x) + 3:.1f},{mid_y}"]
    return Sparkline(" ".join(coordinates), low, high, values[-1], len(finite))
