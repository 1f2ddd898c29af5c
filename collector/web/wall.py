"""What the wall display shows, as plain texts: the page renders it once and its script
fetches it again (``/ui/wall/data``) to update the screen without reloading it.

Every text is made here, in the page's language and by the one rounding rule
(``format_percent``), so the first render and each update cannot disagree.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Final

from campuswatch.collector.web import labels
from campuswatch.collector.web.i18n import Gettext
from campuswatch.collector.web.overview import ALERT_LEVELS_HIGH_FIRST, Overview
from campuswatch.collector.web.rendering import DISPLAY_ZONE, format_percent

WALL_POLL_S: Final = 30
"""How often the screen asks for new figures (``?poll=`` overrides it, e.g. in tests)."""
WALL_ROTATE_S: Final = 10
"""How long one page of the schools list stays before the next (``?rotate=``)."""
POLL_RANGE_S: Final = (1, 300)
ROTATE_RANGE_S: Final = (2, 120)


def _tile(key: str, state: str, big: str, label: str, small: str = "") -> dict[str, Any]:
    return {"key": key, "state": state, "big": big, "label": label, "small": small, "badges": []}


def wall_data(overview: Overview, gettext: Gettext, language: str, now: datetime) -> dict[str, Any]:
    """The tiles, the schools needing attention and the time the figures were read."""
    f = overview.total
    tiles = [
        _tile(
            "av",
            "good" if f.av_coverage == 100 else "bad",
            format_percent(f.av_coverage, language),
            gettext("Antivirus coverage"),
            f"{f.av_protected} / {f.computers}",
        ),
        _tile(
            "broadband",
            "good" if f.broadband_share == 100 else "warn",
            format_percent(f.broadband_share, language),
            gettext("Schools on broadband"),
            f"{f.schools_broadband} / {f.schools}",
        ),
        _tile(
            "online",
            "good" if f.online_share == 100 else "bad",
            f"{f.schools_online} / {f.schools}",
            gettext("Schools online"),
        ),
        _tile(
            "records",
            "good" if (f.digital_records or 0) >= 80 else "warn",
            format_percent(f.digital_records, language),
            gettext("Equipment in digital records"),
            f"{f.assets_registered} / {f.assets}",
        ),
        _tile(
            "alerts",
            "bad" if f.open_alerts["critical"] or f.open_alerts["high"] else "good",
            str(f.open_alert_total),
            gettext("Open alerts"),
        ),
        _tile(
            "devices",
            "good" if not f.devices["offline"] else "warn",
            f"{f.devices['online']} / {f.devices['offline']}",
            gettext("Devices online / offline"),
        ),
    ]
    tiles[4]["badges"] = [
        {
            "level": level,
            "label": gettext(labels.ALERT_LEVEL[level]),
            "count": f.open_alerts[level],
        }
        for level in ALERT_LEVELS_HIGH_FIRST
        if f.open_alerts[level]
    ]
    schools = []
    for district in overview.districts:
        for school in district.schools:
            s = school.figures
            problems = []
            if not school.online:
                problems.append({"state": "bad", "text": gettext("unreachable")})
            if s.computers and s.av_coverage != 100:
                text = gettext("antivirus %(share)s") % {
                    "share": format_percent(s.av_coverage, language)
                }
                problems.append({"state": "warn", "text": text})
            if s.open_alert_total == 1:
                problems.append({"state": "bad", "text": gettext("1 open alert")})
            elif s.open_alert_total:
                text = gettext("%(count)s open alerts") % {"count": s.open_alert_total}
                problems.append({"state": "bad", "text": text})
            if problems:
                schools.append({"name": school.site.name, "problems": problems})
    local = now.astimezone(DISPLAY_ZONE)
    return {
        "as_of": now.isoformat(),
        "as_of_text": local.strftime("%H:%M"),
        "clock": local.strftime("%Y-%m-%d %H:%M"),
        "tiles": tiles,
        "schools": schools,
        "open_alerts": f.open_alert_total,
    }


def bounded(value: float | None, default: int, limits: tuple[int, int]) -> float:
    """A poll or rotation period from the URL, kept within sane limits."""
    if value is None:
        return float(default)
    low, high = limits
    return float(min(max(value, low), high))
