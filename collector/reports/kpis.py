"""The plan KPIs of one site subtree for one period, with the previous period's values.

Sources (docs/reports.md has the long form):

* **Register KPIs** — equipment in digital records (registered / all non-retired assets,
  target ≥ 80 %) and information systems classified (security level AND approved
  protection plan, target 100 %) — are measured at the end of the period, or now for a
  period still running, from the register rebuilt as of that instant
  (``register_history``); the previous period is rebuilt the same way.
* **Live KPIs** — antivirus coverage and broadband — come from each device's latest
  report (``device_latest``), which exists only for "now". They are measured when the
  report is made (``live_measured_at``); the previous period's figures are the ones its
  archived report recorded (``previous_live``), since history cannot be rebuilt for them.
* **Period counts** — alerts, outages, assets added / lost / retired — count events inside
  ``[start, end)`` of each period, so both periods come from the database and the store.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Final, Literal

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from campuswatch.collector.db.models import AssetHistory, Device, Site
from campuswatch.collector.register.device_state import latest_of_kind
from campuswatch.collector.reports.alert_figures import AlertFigures, alert_figures
from campuswatch.collector.reports.outages import SeriesReader, site_outages
from campuswatch.collector.reports.periods import Period
from campuswatch.collector.reports.register_history import AssetAt, assets_as_of
from campuswatch.collector.reports.snapshot_model import KpiSnapshot

# Kinds that run an antivirus product: the commune plan's "school computers".
COMPUTER_KINDS: Final = frozenset({"pc", "laptop", "server"})
BROADBAND_UPLINKS: Final = frozenset({"fibre", "4g", "5g"})
# An AV report older than this no longer proves anything about the PC.
AV_REPORT_MAX_AGE: Final = timedelta(days=7)
# Schools close at weekends and holidays; a week keeps a Monday report from calling every
# school unreachable because the PCs were off since Friday.
REACHABILITY_MAX_AGE: Final = timedelta(days=7)
AV_PARTS: Final = ("protected", "at_risk", "stale_signatures", "no_av", "error", "no_report")
# The agent's default ``av.max_signature_age_hours`` and the "signatures older than 3 days"
# rule: signatures older than this are not up to date, whatever the product itself says.
MAX_SIGNATURE_AGE_HOURS: Final = 72.0

# "neutral": the count is worth knowing but neither direction is good or bad in itself.
Better = Literal["higher", "lower", "neutral"]
Trend = Literal["up", "down", "flat"]

KPI_CODES: Final = (
    "av_coverage",
    "broadband",
    "digital_records",
    "information_systems",
    "alerts",
    "outages",
    "outage_minutes",
    "assets_added",
    "assets_lost",
    "assets_retired",
)
LIVE_KPIS: Final = frozenset({"av_coverage", "broadband"})
TARGETS: Final[dict[str, float]] = {
    "av_coverage": 1.0,
    "broadband": 1.0,
    "digital_records": 0.8,
    "information_systems": 1.0,
}


@dataclass(frozen=True, slots=True)
class Measure:
    """A share (``denominator`` set) or a count (``denominator`` None)."""

    numerator: float
    denominator: int | None = None

    @property
    def value(self) -> float | None:
        if self.denominator is None:
            return self.numerator
        return None if self.denominator == 0 else self.numerator / self.denominator


@dataclass(frozen=True, slots=True)
class Kpi:
    code: str
    current: Measure
    previous: Measure | None
    better: Better = "higher"
    target: float | None = None
    parts: dict[str, int] = field(default_factory=dict)

    @property
    def is_share(self) -> bool:
        return self.current.denominator is not None

    @property
    def passed(self) -> bool | None:
        """None when there is no target, or nothing to measure (0 of 0)."""
        value = self.current.value
        if self.target is None or value is None:
            return None
        # Compare counts, not floats: 4 of 5 must pass an 80 % target exactly.
        assert self.current.denominator is not None
        return self.current.numerator >= self.target * self.current.denominator - 1e-9

    @property
    def trend(self) -> Trend | None:
        if self.previous is None:
            return None
        now, before = self.current.value, self.previous.value
        if now is None or before is None:
            return None
        if abs(now - before) < 1e-9:
            return "flat"
        return "up" if now > before else "down"

    @property
    def improved(self) -> bool | None:
        trend = self.trend
        if trend is None or trend == "flat" or self.better == "neutral":
            return None
        return (trend == "up") == (self.better == "higher")


@dataclass(frozen=True, slots=True)
class SchoolFigures:
    site_id: str
    name: str
    uplink_type: str | None
    reachable: bool
    computers: int
    computers_protected: int
    assets: int
    assets_registered: int
    information_systems: int
    information_systems_classified: int
    alerts: int
    outages: int | None
    outage_minutes: float | None

    @property
    def broadband(self) -> bool:
        return self.uplink_type in BROADBAND_UPLINKS and self.reachable


@dataclass(frozen=True, slots=True)
class ComplianceReport:
    period: Period
    site_id: str | None
    site_name: str
    generated_at: datetime
    measured_at: datetime
    live_measured_at: datetime | None
    """When the antivirus and broadband figures were measured: now for a running period,
    the snapshot's time for a closed one; None when no snapshot of the period exists."""
    kpis: list[Kpi]
    alerts: AlertFigures
    previous_alerts: AlertFigures
    schools: list[SchoolFigures]
    outages_available: bool
    data_from: datetime | None = None
    """The install time when the period began before CampusWatch was installed (partial)."""
    installed_at: datetime | None = None
    """``install_time``: the register's first site (None: an empty register)."""

    @property
    def no_data(self) -> bool:
        """The period ended before anything was recorded: every figure is empty."""
        return self.installed_at is None or self.period.end_at <= self.installed_at

    def kpi(self, code: str) -> Kpi:
        for kpi in self.kpis:
            if kpi.code == code:
                return kpi
        raise KeyError(code)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able figures: what the API serves and the archive stores."""

        def measure(item: Measure | None) -> dict[str, Any] | None:
            if item is None:
                return None
            return {
                "numerator": item.numerator,
                "denominator": item.denominator,
                "value": item.value,
            }

        return {
            "period": {
                "kind": self.period.kind,
                "key": self.period.key,
                "start": self.period.start.isoformat(),
                "end": self.period.end.isoformat(),
                "label_vi": self.period.label_vi,
                "label_en": self.period.label_en,
            },
            "site_id": self.site_id,
            "site_name": self.site_name,
            "generated_at": self.generated_at.isoformat(),
            "measured_at": self.measured_at.isoformat(),
            "live_measured_at": (
                None if self.live_measured_at is None else self.live_measured_at.isoformat()
            ),
            "data_from": None if self.data_from is None else self.data_from.isoformat(),
            "no_data": self.no_data,
            "kpis": [
                {
                    "code": kpi.code,
                    "current": measure(kpi.current),
                    "previous": measure(kpi.previous),
                    "target": kpi.target,
                    "passed": kpi.passed,
                    "trend": kpi.trend,
                    "improved": kpi.improved,
                    "better": kpi.better,
                    "parts": dict(kpi.parts),
                }
                for kpi in self.kpis
            ],
            "alerts": asdict(self.alerts),
            "previous_alerts": asdict(self.previous_alerts),
            "schools": [
                {**asdict(school), "broadband": school.broadband} for school in self.schools
            ],
            "outages_available": self.outages_available,
        }


# --- the site tree ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Tree:
    sites: dict[str, Site]
    subtree: set[str] | None  # None: everything
    school_of: dict[str, str]  # any site id → its school's id (schools map to themselves)

    def schools(self) -> list[Site]:
        chosen = [
            site
            for site in self.sites.values()
            if site.level == "school" and (self.subtree is None or site.id in self.subtree)
        ]
        return sorted(chosen, key=lambda site: (site.name.casefold(), site.id))


def _tree(session: Session, site_id: str | None) -> _Tree:
    sites = {site.id: site for site in session.scalars(select(Site))}
    if site_id is not None and site_id not in sites:
        raise LookupError(f"no site {site_id!r}")
    children: dict[str | None, list[str]] = defaultdict(list)
    for site in sites.values():
        children[site.parent_id].append(site.id)
    subtree: set[str] | None = None
    if site_id is not None:
        subtree, stack = set(), [site_id]
        while stack:
            current = stack.pop()
            if current not in subtree:
                subtree.add(current)
                stack.extend(children.get(current, []))
    school_of: dict[str, str] = {}
    for site in sites.values():
        walker: Site | None = site
        seen: set[str] = set()
        while walker is not None and walker.level != "school" and walker.id not in seen:
            seen.add(walker.id)
            walker = sites.get(walker.parent_id) if walker.parent_id else None
        if walker is not None and walker.level == "school":
            school_of[site.id] = walker.id
    return _Tree(sites, subtree, school_of)


# --- figures ---------------------------------------------------------------------------


def _parse_time(value: object) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def signatures_up_to_date(
    product: Mapping[str, Any], max_age_hours: float = MAX_SIGNATURE_AGE_HOURS
) -> bool:
    """The product's own flag says up to date AND its signatures are at most the maximum age.

    Defender's own "out of date" flag stays false on a PC that never downloaded signatures
    and on one whose signatures are 400 days old, so the flag alone proves nothing. Missing
    age means no signatures, except for a third-party product seen only through Windows
    Security Center, which reports no signature date for them: there the flag is all there is.
    """
    if product.get("signatures_up_to_date") is not True:
        return False
    age = product.get("signature_age_hours")
    if isinstance(age, int | float) and not isinstance(age, bool):
        return 0 <= age <= max_age_hours
    return product.get("source") == "security_center"


def _is_active(product: Mapping[str, Any]) -> bool:
    """Not switched off and not passive (a passive Defender beside another AV is not the
    protection, however fresh its signatures)."""
    return product.get("enabled") is not False and product.get("mode") not in (
        "passive",
        "disabled",
    )


def _products(latest: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    return [product for product in latest.get("products") or [] if isinstance(product, Mapping)]


def has_fresh_active_product(
    latest_av: Mapping[str, Any], max_age_hours: float = MAX_SIGNATURE_AGE_HOURS
) -> bool:
    """Does an active product of this AV report have signatures up to date?"""
    return any(
        _is_active(product) and signatures_up_to_date(product, max_age_hours)
        for product in _products(latest_av)
    )


def av_category(
    latest: Mapping[str, Any] | None,
    at: datetime,
    *,
    max_signature_age_hours: float = MAX_SIGNATURE_AGE_HOURS,
) -> str:
    """One of ``AV_PARTS`` minus ``stale_signatures`` for a PC's newest AV report.

    The agent's ``protected`` is checked again here: it counts only when an active product
    has signatures up to date by ``signatures_up_to_date`` (so a report from an agent that
    trusted Defender's own flag does not count a PC without fresh signatures as protected).
    """
    if not latest:
        return "no_report"
    reported = _parse_time(latest.get("ts"))
    if reported is None or at - reported > AV_REPORT_MAX_AGE:
        return "no_report"
    status = latest.get("status")
    if status == "protected" and not has_fresh_active_product(latest, max_signature_age_hours):
        return "at_risk"
    return status if status in ("protected", "at_risk", "no_av", "error") else "no_report"


def _signatures_stale(latest: Mapping[str, Any], max_age_hours: float) -> bool:
    return bool(_products(latest)) and not has_fresh_active_product(latest, max_age_hours)


def _reachable_sites(devices: list[tuple[str, dict[str, Any]]], at: datetime) -> set[str]:
    """Sites with a device whose latest ``net`` report (given per device) saw the internet."""
    reachable: set[str] = set()
    for site_id, net in devices:
        reported = _parse_time(net.get("ts"))
        if net.get("internet_ok") is True and reported and at - reported <= REACHABILITY_MAX_AGE:
            reachable.add(site_id)
    return reachable


def _status_changes(
    session: Session, start: datetime, end: datetime, new_status: str, ids: set[int]
) -> set[int]:
    rows = session.scalars(
        select(AssetHistory.asset_id).where(
            AssetHistory.field == "status",
            AssetHistory.new_value == new_status,
            AssetHistory.at >= start,
            AssetHistory.at < end,
        )
    )
    return {asset_id for asset_id in rows if asset_id in ids}


@dataclass(frozen=True, slots=True)
class _PeriodCounts:
    alerts: AlertFigures
    added: int
    lost: int
    retired: int
    outages: dict[str, tuple[int, float]] | None  # school id → (count, minutes)


def _period_counts(
    session: Session,
    tree: _Tree,
    period: Period,
    now: datetime,
    series: SeriesReader | None,
) -> tuple[_PeriodCounts, list[AssetAt]]:
    start, end = period.start_at, min(period.end_at, now)
    end = max(end, start)
    assets = assets_as_of(session, end, tree.subtree)
    ids = {asset.id for asset in assets}
    # Lost or retired during the period: such an asset is in the register at the end.
    added = sum(1 for asset in assets if asset.created_at >= start)
    outages: dict[str, tuple[int, float]] | None = None
    if series is not None:
        outages = {}
        for school in tree.schools():
            found = site_outages(series, school.id, start, end)
            outages[school.id] = (len(found), round(sum(item.minutes for item in found), 1))
    return (
        _PeriodCounts(
            alerts=alert_figures(session, start, end, tree.subtree),
            added=added,
            lost=len(_status_changes(session, start, end, "lost", ids)),
            retired=len(_status_changes(session, start, end, "retired", ids)),
            outages=outages,
        ),
        assets,
    )


def _share(assets: list[AssetAt]) -> tuple[Measure, Measure]:
    in_register = [asset for asset in assets if asset.status != "retired"]
    records = Measure(sum(1 for a in in_register if a.registered), len(in_register))
    systems = [a for a in in_register if a.kind == "information_system"]
    classified = sum(
        1
        for a in systems
        if a.security_level is not None and a.protection_plan_approved_on is not None
    )
    return records, Measure(classified, len(systems))


def build_report(
    session: Session,
    period: Period,
    site_id: str | None = None,
    *,
    series: SeriesReader | None = None,
    previous_live: Mapping[str, Measure] | None = None,
    now: datetime | None = None,
    max_signature_age_hours: float = MAX_SIGNATURE_AGE_HOURS,
) -> ComplianceReport:
    """Every KPI of ``site_id``'s subtree (None: everything) for ``period``.

    ``series``: the time-series store for outages (None: outages not reported).
    ``previous_live``: AV coverage and broadband of the previous period as archived.
    ``max_signature_age_hours``: older signatures are not up to date, for every product.
    """
    now = now or datetime.now(UTC)
    tree = _tree(session, site_id)
    measured_at = min(period.end_at, now)
    counts, assets = _period_counts(session, tree, period, now, series)
    previous_counts, previous_assets = _period_counts(session, tree, period.previous, now, series)

    # Live KPIs: the devices' state now for a running period; for a closed one, the daily
    # snapshot of its last recorded day (today's state would be another period's figures).
    closed = period.end_at <= now
    state = (
        snapshot_state(session, period)
        if closed
        else measure_live(session, now, max_signature_age_hours)
    )
    live = _live_totals(state, tree)
    previous_state = snapshot_state(session, period.previous)
    previous_live = dict(previous_live or {})
    if previous_state is not None:
        previous_totals = _live_totals(previous_state, tree)
        previous_live = {"av_coverage": previous_totals.av, "broadband": previous_totals.broadband}
    parts = live.parts
    schools = tree.schools()
    computers_by_school, protected_by_school = live.computers_by_school, live.protected_by_school
    reachable_schools = live.reachable_schools
    broadband_parts, broadband = live.broadband_parts, live.broadband

    records, systems = _share(assets)
    previous_records, previous_systems = _share(previous_assets)
    registered_by_school: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0, 0])
    for asset in assets:
        school = tree.school_of.get(asset.site_id or "")
        if school is None or asset.status == "retired":
            continue
        tally = registered_by_school[school]
        tally[0] += 1
        tally[1] += asset.registered
        if asset.kind == "information_system":
            tally[2] += 1
            tally[3] += (
                asset.security_level is not None and asset.protection_plan_approved_on is not None
            )

    def outage_totals(source: _PeriodCounts) -> tuple[Measure, Measure] | None:
        if source.outages is None:
            return None
        return (
            Measure(sum(count for count, _ in source.outages.values())),
            Measure(round(sum(minutes for _, minutes in source.outages.values()), 1)),
        )

    outages_now, outages_before = outage_totals(counts), outage_totals(previous_counts)
    kpis = [
        Kpi(
            "av_coverage",
            live.av,
            previous_live.get("av_coverage"),
            target=TARGETS["av_coverage"],
            parts={key: value for key, value in parts.items() if key != "protected"},
        ),
        Kpi(
            "broadband",
            broadband,
            previous_live.get("broadband"),
            target=TARGETS["broadband"],
            parts=broadband_parts,
        ),
        Kpi("digital_records", records, previous_records, target=TARGETS["digital_records"]),
        Kpi(
            "information_systems",
            systems,
            previous_systems,
            target=TARGETS["information_systems"],
        ),
        Kpi(
            "alerts",
            Measure(counts.alerts.total),
            Measure(previous_counts.alerts.total),
            better="lower",
            parts={k: v for k, v in counts.alerts.by_level.items() if v},
        ),
    ]
    if outages_now is not None and outages_before is not None:
        kpis += [
            Kpi("outages", outages_now[0], outages_before[0], better="lower"),
            Kpi("outage_minutes", outages_now[1], outages_before[1], better="lower"),
        ]
    kpis += [
        Kpi(
            "assets_added",
            Measure(counts.added),
            Measure(previous_counts.added),
            better="neutral",
        ),
        Kpi("assets_lost", Measure(counts.lost), Measure(previous_counts.lost), better="lower"),
        Kpi(
            "assets_retired",
            Measure(counts.retired),
            Measure(previous_counts.retired),
            better="lower",
        ),
    ]
    alerts_by_school: dict[str, int] = defaultdict(int)
    for alert_site, count in counts.alerts.by_site.items():
        school = tree.school_of.get(alert_site)
        if school is not None:
            alerts_by_school[school] += count
    school_rows = []
    for school_site in schools:
        tally = registered_by_school[school_site.id]
        outage = None if counts.outages is None else counts.outages.get(school_site.id, (0, 0.0))
        school_rows.append(
            SchoolFigures(
                site_id=school_site.id,
                name=school_site.name,
                uplink_type=school_site.uplink_type,
                reachable=school_site.id in reachable_schools,
                computers=computers_by_school[school_site.id],
                computers_protected=protected_by_school[school_site.id],
                assets=tally[0],
                assets_registered=tally[1],
                information_systems=tally[2],
                information_systems_classified=tally[3],
                alerts=alerts_by_school[school_site.id],
                outages=None if outage is None else outage[0],
                outage_minutes=None if outage is None else outage[1],
            )
        )
    site_name = "" if site_id is None else tree.sites[site_id].name
    installed = install_time(session)
    return ComplianceReport(
        period=period,
        site_id=site_id,
        site_name=site_name,
        generated_at=now,
        measured_at=measured_at,
        live_measured_at=None if state is None else state.measured_at,
        kpis=kpis,
        alerts=counts.alerts,
        previous_alerts=previous_counts.alerts,
        schools=school_rows,
        outages_available=series is not None,
        data_from=installed if installed and period.start_at < installed < period.end_at else None,
        installed_at=installed,
    )


# --- live KPIs: measured now, or read back from the daily snapshots ---------------------


@dataclass(slots=True)
class SiteLive:
    """Computers standing at one site and how their antivirus fared."""

    computers: int = 0
    protected: int = 0
    parts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(AV_PARTS[1:], 0))


@dataclass(frozen=True, slots=True)
class LiveState:
    """The live KPIs' raw figures for every site, measured at one instant.

    ``sites``: site id ("" for computers placed nowhere) → its computers; ``schools``:
    school id → (declared uplink, reachable). What ``kpi_snapshots`` stores, one row a site.
    """

    measured_at: datetime
    sites: dict[str, SiteLive]
    schools: dict[str, tuple[str | None, bool]]


def measure_live(
    session: Session, now: datetime, max_signature_age_hours: float = MAX_SIGNATURE_AGE_HOURS
) -> LiveState:
    """Antivirus per computer and reachability per school from each device's latest report."""
    tree = _tree(session, None)
    current_assets = assets_as_of(session, now + timedelta(microseconds=1), None)
    computers = [a for a in current_assets if a.kind in COMPUTER_KINDS and a.status == "in_service"]
    av_latest, av_of_device = latest_of_kind("av")
    net_latest, net_of_device = latest_of_kind("net")
    device_rows = session.execute(
        select(Device.asset_id, Device.site_id, av_latest.body, net_latest.body)
        .outerjoin(av_latest, av_of_device)
        .outerjoin(net_latest, net_of_device)
    ).all()
    av_by_asset: dict[int, dict[str, Any]] = {}
    for asset_id, _site, av, _net in device_rows:
        if asset_id is None or not av:
            continue
        known = av_by_asset.get(asset_id)
        if known is None or str(av.get("ts", "")) > str(known.get("ts", "")):
            av_by_asset[asset_id] = av
    sites: dict[str, SiteLive] = defaultdict(SiteLive)
    for computer in computers:
        latest_av = av_by_asset.get(computer.id)
        category = av_category(latest_av, now, max_signature_age_hours=max_signature_age_hours)
        site = sites[computer.site_id or ""]
        site.computers += 1
        if category == "protected":
            site.protected += 1
        else:
            site.parts[category] += 1
        if (
            category == "at_risk"
            and latest_av is not None
            and _signatures_stale(latest_av, max_signature_age_hours)
        ):
            site.parts["stale_signatures"] += 1
    reachable_sites = _reachable_sites(
        [(site_id, net or {}) for _asset, site_id, _av, net in device_rows], now
    )
    reachable_schools = {tree.school_of[s] for s in reachable_sites if s in tree.school_of}
    schools = {
        site.id: (site.uplink_type, site.id in reachable_schools)
        for site in tree.sites.values()
        if site.level == "school"
    }
    return LiveState(now, dict(sites), schools)


def snapshot_state(session: Session, period: Period) -> LiveState | None:
    """The snapshot of ``period``'s last recorded local day (None: nothing recorded in it)."""
    day = session.scalar(
        select(func.max(KpiSnapshot.day)).where(
            KpiSnapshot.day >= period.start, KpiSnapshot.day <= period.end
        )
    )
    if day is None:
        return None
    rows = session.scalars(select(KpiSnapshot).where(KpiSnapshot.day == day)).all()
    sites: dict[str, SiteLive] = {}
    schools: dict[str, tuple[str | None, bool]] = {}
    for row in rows:
        parts = dict.fromkeys(AV_PARTS[1:], 0)
        parts.update({k: int(v) for k, v in (row.av_parts or {}).items() if k in parts})
        if row.computers:
            sites[row.site_id] = SiteLive(row.computers, row.av_protected, parts)
        if row.is_school:
            schools[row.site_id] = (row.uplink_type, row.reachable)
    return LiveState(max(row.taken_at for row in rows), sites, schools)


@dataclass(frozen=True, slots=True)
class _LiveTotals:
    av: Measure
    parts: dict[str, int]
    broadband: Measure
    broadband_parts: dict[str, int]
    computers_by_school: dict[str, int]
    protected_by_school: dict[str, int]
    reachable_schools: set[str]


def _live_totals(state: LiveState | None, tree: _Tree) -> _LiveTotals:
    """``state`` summed over ``tree``'s subtree; 0 of 0 (shown "—") without a state."""
    parts = dict.fromkeys(AV_PARTS[1:], 0)
    computers_by_school: dict[str, int] = defaultdict(int)
    protected_by_school: dict[str, int] = defaultdict(int)
    if state is None:
        empty = Measure(0, 0)
        return _LiveTotals(empty, parts, empty, {}, computers_by_school, protected_by_school, set())
    computers = protected = 0
    for site_id, site in state.sites.items():
        if tree.subtree is not None and site_id not in tree.subtree:
            continue
        computers += site.computers
        protected += site.protected
        for key, value in site.parts.items():
            parts[key] += value
        school = tree.school_of.get(site_id)
        if school is not None:
            computers_by_school[school] += site.computers
            protected_by_school[school] += site.protected
    schools = {
        school_id: known
        for school_id, known in state.schools.items()
        if tree.subtree is None or school_id in tree.subtree
    }
    declared = {s for s, (uplink, _) in schools.items() if uplink in BROADBAND_UPLINKS}
    reachable = {s for s, (_, is_reachable) in schools.items() if is_reachable}
    return _LiveTotals(
        Measure(protected, computers),
        parts,
        Measure(len(declared & reachable), len(schools)),
        {
            "declared": len(declared),
            "reachable": len(reachable),
            "not_declared": len(schools) - len(declared),
        },
        computers_by_school,
        protected_by_school,
        reachable,
    )


def install_time(session: Session) -> datetime | None:
    """When CampusWatch began recording: the register's first site (nothing is measured
    before a site exists; a later import of old assets does not move it back)."""
    first: datetime | None = session.scalar(select(func.min(Site.created_at)))
    return first


def previous_live_from_archive(figures: Mapping[str, Any]) -> dict[str, Measure]:
    """AV coverage and broadband as an archived report (``to_dict``) recorded them."""
    found: dict[str, Measure] = {}
    for kpi in figures.get("kpis", []):
        if kpi.get("code") in LIVE_KPIS and kpi.get("current"):
            current = kpi["current"]
            found[kpi["code"]] = Measure(current["numerator"], current["denominator"])
    return found
