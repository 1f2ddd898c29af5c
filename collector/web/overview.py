"""The plan-target figures per school, rolled up per district and for the whole scope.

Definitions (the same the API exposes piece by piece, so the UI and the API agree):
- AV coverage: computers (device type pc/server) whose latest ``av`` status is
  ``protected``, over all computers; the parts count computers with an AV product
  installed, with real-time protection on, and with signatures up to date.
- Broadband: a school whose ``uplink_type`` is fibre, 4g or 5g; online: at least one of
  its devices online per the liveness tracker.
- Digital records: ``digital_record_coverage`` (registered / non-retired assets).
- Devices: liveness status of every device in the school's subtree.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from campuswatch.collector.alerts.models import Alert
from campuswatch.collector.alerts.queries import OPEN_STATES
from campuswatch.collector.api.deps import Principal
from campuswatch.collector.db.models import Asset, Device, Site
from campuswatch.collector.liveness import LivenessTracker
from campuswatch.collector.register.device_state import latest_of_kind
from campuswatch.collector.reports.i18n import percent_points
from campuswatch.collector.reports.kpis import has_fresh_active_product, signatures_up_to_date
from campuswatch.collector.signals import LEVELS

COMPUTER_TYPES: Final = ("pc", "server")
BROADBAND_UPLINKS: Final = frozenset({"fibre", "4g", "5g"})
LIVENESS_STATES: Final = ("online", "offline", "flapping", "unknown")
UNPLACED: Final = ""
"""District key of schools that no one has placed under a district yet."""


@dataclass(slots=True)
class Figures:
    """Counters for one school, one district or everything; rates are derived."""

    computers: int = 0
    av_protected: int = 0
    av_installed: int = 0
    av_realtime: int = 0
    av_signatures_fresh: int = 0
    schools: int = 0
    schools_broadband: int = 0
    schools_online: int = 0
    assets: int = 0
    assets_registered: int = 0
    devices: Counter[str] = field(default_factory=Counter)
    open_alerts: Counter[str] = field(default_factory=Counter)

    def add(self, other: Figures) -> None:
        for name in (
            "computers",
            "av_protected",
            "av_installed",
            "av_realtime",
            "av_signatures_fresh",
            "schools",
            "schools_broadband",
            "schools_online",
            "assets",
            "assets_registered",
        ):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.devices.update(other.devices)
        self.open_alerts.update(other.open_alerts)

    @staticmethod
    def percent(part: int, whole: int) -> float | None:
        # The reports' rule (half-up from the exact fraction), not float round().
        points = percent_points(part, whole)
        return None if points is None else float(points)

    @property
    def av_coverage(self) -> float | None:
        return self.percent(self.av_protected, self.computers)

    @property
    def broadband_share(self) -> float | None:
        return self.percent(self.schools_broadband, self.schools)

    @property
    def online_share(self) -> float | None:
        return self.percent(self.schools_online, self.schools)

    @property
    def digital_records(self) -> float | None:
        return self.percent(self.assets_registered, self.assets)

    @property
    def open_alert_total(self) -> int:
        return sum(self.open_alerts.values())


@dataclass(slots=True)
class SchoolRow:
    site: Site
    uplink_type: str | None
    broadband: bool
    online: bool
    figures: Figures


@dataclass(slots=True)
class DistrictRow:
    site_id: str
    name: str
    schools: list[SchoolRow]
    figures: Figures


@dataclass(slots=True)
class Overview:
    districts: list[DistrictRow]
    total: Figures


def _ancestors(sites: Mapping[str, Site], site_id: str) -> Iterable[Site]:
    seen: set[str] = set()
    current = sites.get(site_id)
    while current is not None and current.id not in seen:
        seen.add(current.id)
        yield current
        current = sites.get(current.parent_id) if current.parent_id else None


def _school_of(sites: Mapping[str, Site], site_id: str) -> str | None:
    """The school a site belongs to (itself, or the nearest school above a room/building)."""
    for site in _ancestors(sites, site_id):
        if site.level == "school":
            return site.id
    return None


def _district_of(sites: Mapping[str, Site], school_id: str) -> str:
    for site in _ancestors(sites, school_id):
        if site.level == "district":
            return site.id
    return UNPLACED


def av_parts(latest_av: Mapping[str, Any] | None) -> tuple[bool, bool, bool, bool]:
    """(protected, installed, real-time on, signatures fresh) from a device's latest av."""
    if not latest_av:
        return False, False, False, False
    products = [p for p in latest_av.get("products") or [] if isinstance(p, dict)]
    status = latest_av.get("status")
    installed = bool(products) and status != "no_av"
    realtime = any(p.get("realtime_protection") is True for p in products)
    # The same rule as the coverage KPI: the product's flag and an age within the limit.
    fresh = any(signatures_up_to_date(p) for p in products)
    protected = status == "protected" and has_fresh_active_product(latest_av)
    return protected, installed, realtime, fresh


def build_overview(
    session: Session, liveness: LivenessTracker, principal: Principal, now: datetime
) -> Overview:
    sites = {site.id: site for site in session.scalars(select(Site))}
    schools: dict[str, SchoolRow] = {}
    for site in sites.values():
        if site.level == "school" and principal.can_see(site.id):
            broadband = (site.uplink_type or "") in BROADBAND_UPLINKS
            figures = Figures(schools=1, schools_broadband=int(broadband))
            schools[site.id] = SchoolRow(site, site.uplink_type, broadband, False, figures)

    def row_for(site_id: str | None) -> SchoolRow | None:
        if site_id is None or not principal.can_see(site_id):
            return None
        school = _school_of(sites, site_id)
        return schools.get(school) if school is not None else None

    av, of_device = latest_of_kind("av")
    devices = session.execute(
        select(Device.device_id, Device.site_id, Device.device_type, av.body).outerjoin(
            av, of_device
        )
    ).all()
    for device_id, site_id, device_type, latest_av in devices:
        row = row_for(site_id)
        if row is None:
            continue
        state = liveness.status(device_id, now)
        row.figures.devices[state] += 1
        if state == "online":
            row.online = True
        if device_type in COMPUTER_TYPES:
            protected, installed, realtime, fresh = av_parts(latest_av)
            row.figures.computers += 1
            row.figures.av_protected += protected
            row.figures.av_installed += installed
            row.figures.av_realtime += realtime
            row.figures.av_signatures_fresh += fresh

    asset_counts = session.execute(
        select(Asset.site_id, Asset.registered, func.count(Asset.id))
        .where(Asset.status != "retired", Asset.ignored.is_(False))
        .group_by(Asset.site_id, Asset.registered)
    ).all()
    for site_id, registered, count in asset_counts:
        row = row_for(site_id)
        if row is not None:
            row.figures.assets += count
            row.figures.assets_registered += count if registered else 0

    alert_counts = session.execute(
        select(Alert.site_id, Alert.level, func.count(Alert.id))
        .where(Alert.state.in_(OPEN_STATES))
        .group_by(Alert.site_id, Alert.level)
    ).all()
    # Alerts about a district or province site belong to no school but still count in the
    # scope's total, so the total matches the alert queue.
    outside_schools: Counter[str] = Counter()
    for site_id, level, count in alert_counts:
        row = row_for(site_id)
        if row is not None:
            row.figures.open_alerts[level] += count
        elif principal.can_see(site_id):
            outside_schools[level] += count

    districts: dict[str, DistrictRow] = {}
    total = Figures()
    for row in sorted(schools.values(), key=lambda r: (r.site.name, r.site.id)):
        row.figures.schools_online = int(row.online)
        district_id = _district_of(sites, row.site.id)
        district = districts.get(district_id)
        if district is None:
            name = sites[district_id].name if district_id in sites else UNPLACED
            district = DistrictRow(district_id, name, [], Figures())
            districts[district_id] = district
        district.schools.append(row)
        district.figures.add(row.figures)
        total.add(row.figures)
    total.open_alerts.update(outside_schools)
    ordered = sorted(districts.values(), key=lambda d: (d.site_id == UNPLACED, d.name, d.site_id))
    return Overview(ordered, total)


ALERT_LEVELS_HIGH_FIRST: Final = tuple(reversed(LEVELS))
