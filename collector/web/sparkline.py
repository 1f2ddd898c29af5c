"""A small inline SVG line per series: no chart library, no script, CSP-friendly."""

from __future__ import annotations

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
    """Scale (time ms, value) samples into the box; a flat series is drawn mid-height."""
    if not samples:
        raise ValueError("a sparkline needs at least one sample")
    times = [t for t, _ in samples]
    values = [v for _, v in samples]
    low, high = min(values), max(values)
    first, last_time = times[0], times[-1]
    span_t = last_time - first or 1
    span_v = high - low
    coordinates = []
    for t, v in samples:
        x = PAD + (WIDTH - 2 * PAD) * (t - first) / span_t if len(samples) > 1 else WIDTH / 2
        y = HEIGHT / 2 if span_v == 0 else PAD + (HEIGHT - 2 * PAD) * (high - v) / span_v
        coordinates.append(f"{x:.1f},{y:.1f}")
    if len(coordinates) == 1:
        # One sample: a short dash so it is visible rather than an invisible point.
        mid_x, mid_y = coordinates[0].split(",")
        coordinates = [f"{float(mid_x) - 3:.1f},{mid_y}", f"{float(mid_x) + 3:.1f},{mid_y}"]
    return Sparkline(" ".join(coordinates), low, high, values[-1], len(samples))
