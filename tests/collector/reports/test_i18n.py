"""Report numbers and durations: never a signed zero, in either language."""

from __future__ import annotations

from decimal import Decimal

import pytest

from campuswatch.collector.reports.i18n import duration, number


@pytest.mark.parametrize("value", [-0.0, -0.04, Decimal("-0.01")])
def test_a_value_that_rounds_to_zero_shows_no_sign(value: float | Decimal) -> None:
    assert number(value, "en", 1) == "0.0"
    assert number(value, "vi", 1) == "0,0"
    assert number(value, "en") == "0"


def test_a_tiny_negative_duration_is_zero_minutes() -> None:
    assert duration(-1, "en") == "0.0 min"
    assert duration(-1, "vi") == "0,0 phút"
    assert duration(-600, "en") == "-10.0 min"  # a real negative stays visible
