"""Absurd but finite numbers never crash a page (issue 13, item 8a).

A schema-valid ``uptime_s: 1e30`` made its device's page answer 500: the page's number
formatter (Babel, through ``decimal``) cannot format it. The schema now refuses such an
uptime, but other fields stay open-ended (a sensor reading), and what is already stored
stays stored: the formatters and the sparkline must cope with any float.
"""

from __future__ import annotations

import math
import re
from datetime import timedelta
from pathlib import Path

import pytest

from campuswatch.collector.tsdb.points import points_from_message
from campuswatch.collector.tsdb.sqlite_store import SqliteStore
from campuswatch.collector.web.rendering import format_number
from campuswatch.collector.web.sparkline import sparkline
from campuswatch.wire.ids import utc_now
from campuswatch.wire.messages import DeviceType, HealthMessage, TelemetryMessage
from tests.collector.web.conftest import WebApp
from tests.support.device_state import set_latest

HUGE = [1e30, -1e30, 1.7976931348623157e308, -1.7976931348623157e308, 5e-324, 1e25, 1e26]


@pytest.mark.parametrize("language", ["en", "vi"])
@pytest.mark.parametrize("value", [*HUGE, math.inf, -math.inf, math.nan, 0.0, 1234.5])
def test_any_float_formats_as_text(value: float, language: str) -> None:
    text = format_number(value, 2, language)
    assert text and "nan" not in text.lower()
    if math.isfinite(value) and abs(value) >= 1e15:
        assert "E" in text  # scientific, not thirty digits of noise


def test_ordinary_numbers_keep_the_locale_format() -> None:
    assert format_number(1234.5, 1, "en") == "1,234.5"
    assert format_number(1234.5, 1, "vi") == "1.234,5"
    assert format_number(None, 1, "en") == "—"


def test_a_sparkline_of_extreme_values_stays_inside_its_box() -> None:
    line = sparkline([(0, -1.7e308), (1000, 1.7e308), (2000, math.inf), (3000, 0.0)])
    for point in line.points.split():
        x, y = (float(part) for part in point.split(","))
        assert 0 <= x <= line.width and 0 <= y <= line.height
    assert line.maximum == 1.7e308 and line.last == 0.0
    only_bad = sparkline([(0, math.nan), (1000, math.inf)])
    assert only_bad.samples == 0 and only_bad.points == ""


def test_the_device_page_shows_an_absurd_uptime_instead_of_failing(
    web: WebApp, tmp_path: Path
) -> None:
    now = utc_now()
    store = SqliteStore(tmp_path / "series.sqlite")
    web.context.timeseries = store
    try:
        # Written as it was before the schema bound it: straight into the stores.
        health = HealthMessage(device_id="pc-a1", site="q1-a-lab", uptime_s=1e30, cpu_pct=5.0)
        telemetry = TelemetryMessage(
            device_id="pc-a1", site="q1-a-lab", device_type="pc", values={"energy": 1e300}
        )
        store.write(points_from_message(health, now) + points_from_message(telemetry, now))
        with web.sessions() as session:
            set_latest(session, "pc-a1", "health", {"uptime_s": 1e30, "cpu_pct": 5.0}, now)
            session.commit()
        client = web.login("admin")
        response = client.get("/ui/devices/pc-a1")
        assert response.status_code == 200, response.text[-2000:]
        assert re.search(r"uptime_s.*?<strong>1E30</strong>", response.text, re.DOTALL)
        assert "<strong>1E300</strong>" in response.text
        api = web.client().get(
            "/api/v1/devices/pc-a1", headers={"Authorization": f"Bearer {web.admin_token}"}
        )
        assert api.status_code == 200, api.text
        assert api.json()["latest"]["health"]["uptime_s"] == 1e30
    finally:
        store.close()


def test_a_series_whose_average_overflows_is_served_without_it(web: WebApp, tmp_path: Path) -> None:
    # Two samples of 1.7e308 in one bucket average to inf in the store (their sum
    # overflows); JSON has no inf, so the series answered 500.
    now = utc_now()
    store = SqliteStore(tmp_path / "series.sqlite")
    web.context.timeseries = store
    try:
        # Two series of the device (two device types) in one bucket: their sum overflows.
        samples: list[tuple[int, DeviceType, float]] = [
            (30, "pc", 1.7e308),
            (30, "env_sensor", 1.7e308),
            (3600, "pc", 7.0),
        ]
        for offset_s, device_type, value in samples:
            telemetry = TelemetryMessage(
                device_id="pc-a1",
                site="q1-a-lab",
                device_type=device_type,
                values={"energy": value},
            )
            store.write(points_from_message(telemetry, now - timedelta(seconds=offset_s)))
        response = web.client().get(
            "/api/v1/devices/pc-a1/series",
            params={"measurement": "campus_telemetry", "field": "energy", "step_s": 60},
            headers={"Authorization": f"Bearer {web.admin_token}"},
        )
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["values"] == [7.0] and len(body["times_ms"]) == 1
        page = web.login("admin").get("/ui/devices/pc-a1")
        assert page.status_code == 200
    finally:
        store.close()
