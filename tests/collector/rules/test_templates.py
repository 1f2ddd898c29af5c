"""Alert templates print numbers, durations and plurals the way each language says them."""

from __future__ import annotations

import pytest

from campuswatch.collector.rules.templates import human_duration, human_number, render


@pytest.mark.parametrize(
    ("seconds", "english", "vietnamese"),
    [
        (1, "1 second", "1 giây"),
        (45, "45 seconds", "45 giây"),
        (3600, "60 minutes", "60 phút"),
        (2 * 3600, "2 hours", "2 giờ"),
        (5.5 * 3600, "5.5 hours", "5,5 giờ"),
        (86400, "24 hours", "24 giờ"),
        (2 * 86400, "2 days", "2 ngày"),
        (3.5 * 86400, "3.5 days", "3,5 ngày"),
        (28 * 86400, "28 days", "28 ngày"),
        (75 * 60, "75 minutes", "75 phút"),
        (-0.2, "0 seconds", "0 giây"),
    ],
)
def test_durations_are_plural_correct_in_english_and_vietnamese(
    seconds: float, english: str, vietnamese: str
) -> None:
    assert human_duration(seconds) == human_duration(seconds, "en") == english
    assert human_duration(seconds, "vi") == vietnamese


def test_durations_through_a_summary_in_each_language() -> None:
    template = "Signatures are {value:hours} old"
    assert render(template, {"value": 1 / 3600}) == "Signatures are 1 second old"
    assert render(template, {"value": 2}) == "Signatures are 2 hours old"
    assert render(template, {"value": 48}) == "Signatures are 2 days old"
    assert render("đã {value:hours}", {"value": 1 / 3600}, "vi") == "đã 1 giây"
    assert render("đã {value:hours}", {"value": 2}, "vi") == "đã 2 giờ"
    assert render("đã {value:hours}", {"value": 80}, "vi") == "đã 3,3 ngày"


@pytest.mark.parametrize("value", [-0.0, -0.001, -0.004999])
def test_a_number_that_rounds_to_zero_never_shows_a_sign(value: float) -> None:
    assert human_number(value) == "0"
    assert human_number(value, "vi") == "0"
    assert render("{value} s", {"value": value}) == "0 s"


def test_vietnamese_numbers_use_a_decimal_comma() -> None:
    assert human_number(677.6662, "vi") == "677,67"
    assert render("{value} %", {"value": 87.5}, "vi") == "87,5 %"
    assert render("{value} %", {"value": 87.5}) == "87.5 %"
