"""The shipped dashboards: every panel, with its PromQL and InfluxQL side by side.

Each dashboard is a function that adds rows to a ``Board`` (model.py), whose panels are
grafana-foundation-sdk builders; panels that recur are made by the small functions below.

Names come from ``campuswatch.collector.tsdb.points`` (docs/timeseries.md):
VictoriaMetrics names a series ``<measurement>_<field>``, InfluxDB keeps them apart.

"Current" tiles look back ``FRESH`` (15 minutes: three AV reports, fifteen net/health
reports at the agent's default intervals), so a school that went silent stops counting
as online instead of showing its last good value forever.

Site filter: sites are ids such as ``hcm-q1-thcs-a``; the district is the part before the
second dash (``hcm-q1``). ``${district}(-.*)?`` matches the district's own sites and not
``hcm-q10-…``; both variables' "All" is ``.*``, so an unselected variable matches everything.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

from grafana_foundation_sdk.builders import bargauge, histogram, stat, table, timeseries
from grafana_foundation_sdk.builders.common import StackingConfig
from grafana_foundation_sdk.builders.dashboard import ThresholdsConfig
from grafana_foundation_sdk.models.common import GraphDrawStyle, StackingMode

from campuswatch.collector.dashboards.model import (
    GREEN,
    Board,
    Dashboard,
    P,
    Query,
    Size,
    Variable,
    thresholds,
    value_texts,
)
from campuswatch.collector.tsdb.points import (
    MEASUREMENT_AV,
    MEASUREMENT_AV_STATUS,
    MEASUREMENT_DISK,
    MEASUREMENT_EVENT,
    MEASUREMENT_HEALTH,
    MEASUREMENT_NET,
    MEASUREMENT_STATE,
    MEASUREMENT_TELEMETRY,
)

FRESH: Final = "15m"
# The variable queries read the PC health series: every agent sends it every minute.
SITE_SOURCE_METRIC: Final = f"{MEASUREMENT_HEALTH}_cpu_pct"
DISTRICT_REGEX: Final = "/^([^-]+-[^-]+)-/"

PROM_SITE: Final = 'site=~"${district}(-.*)?",site=~"${school}"'
INFLUX_SITE: Final = '"site" =~ /^${district}(-.*)?$/ AND "site" =~ /^${school}$/'
INFLUX_FRESH: Final = f"time > now() - {FRESH}"

VARIABLES: Final = (
    Variable(
        name="district",
        label="District",
        promql=f"label_values({SITE_SOURCE_METRIC}, site)",
        influxql=f'SHOW TAG VALUES FROM "{MEASUREMENT_HEALTH}" WITH KEY = "site"',
        regex=DISTRICT_REGEX,
    ),
    Variable(
        name="school",
        label="School",
        promql=f'label_values({SITE_SOURCE_METRIC}{{site=~"${{district}}(-.*)?"}}, site)',
        influxql=(
            f'SHOW TAG VALUES FROM "{MEASUREMENT_HEALTH}" WITH KEY = "site" '
            'WHERE "site" =~ /^${district}(-.*)?$/'
        ),
    ),
)


def series(measurement: str, field: str, extra_labels: str = "") -> str:
    """A VictoriaMetrics selector with the site filter: ``campus_net_latency_ms{site=~…}``."""
    labels = PROM_SITE + (f",{extra_labels}" if extra_labels else "")
    return f"{measurement}_{field}{{{labels}}}"


def influx_where(time_filter: str = "$timeFilter", extra: str = "") -> str:
    return f"WHERE {time_filter} AND {INFLUX_SITE}" + (f" AND {extra}" if extra else "")


def influx_last_per_device(
    measurement: str,
    field: str,
    alias: str,
    time_filter: str = INFLUX_FRESH,
    extra_group: str = "",
    extra_where: str = "",
) -> str:
    """Subquery: each device's latest value (per product/mount if ``extra_group``)."""
    group = '"site", "device"' + (f", {extra_group}" if extra_group else "")
    return (
        f'SELECT last("{field}") AS "{alias}" FROM "{measurement}" '
        f"{influx_where(time_filter, extra_where)} GROUP BY {group}"
    )


class DeviceType:
    """A ``device_type`` tag filter for telemetry: several device kinds share field names
    (projectors and room sensors both send ``temperature_c``)."""

    def __init__(self, name: str) -> None:
        self.promql = f'device_type="{name}"'
        self.influxql = f"\"device_type\" = '{name}'"


ANY_DEVICE: Final = None


def fresh_device_sum(measurement: str, field: str, kind: DeviceType | None = ANY_DEVICE) -> Query:
    """How many devices' latest report has the 0/1 flag set."""
    inner = influx_last_per_device(
        measurement, field, "v", extra_where=kind.influxql if kind else ""
    )
    return Query(
        promql=(
            f"sum(last_over_time({series(measurement, field, kind.promql if kind else '')}"
            f"[{FRESH}]))"
        ),
        influxql=f'SELECT sum("v") FROM ({inner})',
        instant=True,
    )


def mean_by(
    by: str, measurement: str, field: str, kind: DeviceType | None = ANY_DEVICE, scale: str = ""
) -> Query:
    """Average per time bucket, one line per ``by`` ("site": over the school's devices)."""
    prefix = f"{scale} * " if scale else ""
    tags = [tag.strip() for tag in by.split(",")]
    selector = series(measurement, field, kind.promql if kind else "")
    return Query(
        promql=f"{prefix}avg by ({by}) (avg_over_time({selector}[$__interval]))",
        influxql=(
            f'SELECT {prefix}mean("{field}") FROM "{measurement}" '
            f"{influx_where(extra=kind.influxql if kind else '')} GROUP BY time($__interval), "
            + ", ".join(f'"{tag}"' for tag in tags)
            + " fill(none)"
        ),
        legend=" ".join(f"{{{tag}}}" for tag in tags),
    )


def latest_by_device(measurement: str, field: str, kind: DeviceType) -> Query:
    selector = series(measurement, field, kind.promql)
    return Query(
        promql=f"max by (site, device) (last_over_time({selector}[{FRESH}]))",
        influxql=(
            f'SELECT last("{field}") FROM "{measurement}" '
            f"{influx_where(INFLUX_FRESH, kind.influxql)} "
            'GROUP BY "site", "device"'
        ),
        legend="{site} {device}",
        instant=True,
    )


def coverage_percent() -> Query:
    return Query(
        promql=f"100 * avg(last_over_time({series(MEASUREMENT_AV_STATUS, 'protected')}[{FRESH}]))",
        influxql=(
            'SELECT 100 * mean("p") FROM '
            f"({influx_last_per_device(MEASUREMENT_AV_STATUS, 'protected', 'p')})"
        ),
        instant=True,
    )


def coverage_by_school_now() -> Query:
    selector = series(MEASUREMENT_AV_STATUS, "protected")
    return Query(
        promql=f"100 * avg by (site) (last_over_time({selector}[{FRESH}]))",
        influxql=(
            'SELECT 100 * mean("p") FROM '
            f"({influx_last_per_device(MEASUREMENT_AV_STATUS, 'protected', 'p')}) "
            'GROUP BY "site"'
        ),
        legend="{site}",
        instant=True,
    )


def schools_with_internet() -> Query:
    # A school has Internet when any of its devices reached it in the last FRESH minutes.
    inner = influx_last_per_device(MEASUREMENT_NET, "internet_ok", "ok")
    return Query(
        promql=(
            "sum(max by (site) "
            f"(last_over_time({series(MEASUREMENT_NET, 'internet_ok')}[{FRESH}])))"
        ),
        influxql=f'SELECT sum("ok") FROM (SELECT max("ok") AS "ok" FROM ({inner}) GROUP BY "site")',
        instant=True,
    )


def schools_reporting() -> Query:
    return Query(
        promql=(
            "count(count by (site) "
            f"(last_over_time({series(MEASUREMENT_HEALTH, 'cpu_pct')}[{FRESH}])))"
        ),
        influxql=(
            'SELECT count("n") FROM (SELECT count("cpu_pct") AS "n" '
            f'FROM "{MEASUREMENT_HEALTH}" {influx_where(INFLUX_FRESH)} GROUP BY "site")'
        ),
        instant=True,
    )


def pcs_reporting() -> Query:
    return Query(
        promql=f"count(last_over_time({series(MEASUREMENT_HEALTH, 'cpu_pct')}[{FRESH}]))",
        influxql=(
            f'SELECT count("c") FROM ({influx_last_per_device(MEASUREMENT_HEALTH, "cpu_pct", "c")})'
        ),
        instant=True,
    )


SERIOUS_SEVERITIES: Final = "high|critical"


def serious_events(window: str, influx_time: str) -> Query:
    selector = series(MEASUREMENT_EVENT, "count", f'severity=~"{SERIOUS_SEVERITIES}"')
    severity_filter = f'"severity" =~ /^({SERIOUS_SEVERITIES})$/'
    return Query(
        # "or vector(0)": no serious event is a real zero, not missing data.
        promql=f"sum(count_over_time({selector}[{window}])) or vector(0)",
        influxql=(
            f'SELECT sum("count") FROM "{MEASUREMENT_EVENT}" '
            f"{influx_where(influx_time, severity_filter)}"
        ),
        instant=True,
    )


def not_protected(status: str) -> Query:
    """Devices whose latest AV status is ``status`` (table rows: site, device)."""
    inner = influx_last_per_device(MEASUREMENT_AV_STATUS, status, "s")
    return Query(
        promql=(
            "max by (site, device) "
            f"(last_over_time({series(MEASUREMENT_AV_STATUS, status)}[{FRESH}])) == 1"
        ),
        influxql=f'SELECT "s" AS "{status}" FROM ({inner}) WHERE "s" = 1 GROUP BY "site", "device"',
        legend=status,
        instant=True,
    )


def outdated_products(field: str) -> Query:
    """AV products whose latest report has the 0/1 ``field`` at 0 (off / out of date)."""
    inner = influx_last_per_device(MEASUREMENT_AV, field, "v", extra_group='"product"')
    return Query(
        promql=(
            f"count(last_over_time({series(MEASUREMENT_AV, field)}[{FRESH}]) == 0) or vector(0)"
        ),
        influxql=f'SELECT count("v") - sum("v") FROM ({inner})',
        instant=True,
    )


def latest_combined(
    aggregate: str, measurement: str, field: str, by: str, per: str = "", legend: str = ""
) -> Query:
    """``aggregate`` (max, sum, count) ``by`` tags of each device's latest value, one value per
    device (or per device and ``per`` tag: mount, product, uplink)."""
    tags = [tag.strip() for tag in by.split(",")]
    inner = influx_last_per_device(measurement, field, "v", extra_group=f'"{per}"' if per else "")
    return Query(
        promql=f"{aggregate} by ({by}) (last_over_time({series(measurement, field)}[{FRESH}]))",
        influxql=(
            f'SELECT {aggregate}("v") FROM ({inner}) GROUP BY '
            + ", ".join(f'"{tag}"' for tag in tags)
        ),
        legend=legend,
        instant=True,
    )


# --- tiles shared by several dashboards ------------------------------------------------------

GOOD_ABOVE_95: Final = thresholds(("red", None), ("orange", 80), ("green", 95))
BAD_ABOVE_0: Final = thresholds(("green", None), ("red", 1))
NEUTRAL: Final = thresholds(("blue", None))
ONLINE_TEXTS: Final = value_texts((1, "Online", "green"), (0, "Offline", "red"))


def count_tile(
    board: Board,
    title: str,
    description: str,
    query: Query,
    size: Size,
    steps: ThresholdsConfig = NEUTRAL,
) -> stat.Panel:
    """A count where no rows honestly means zero (no events, none at risk): "0", not No data."""
    return board.panel(stat.Panel(), title, description, (query,), size, steps=steps).no_value("0")


def percent_of(panel: P) -> P:
    return panel.unit("percent").min(0).max(100)


def mean_percent(
    board: Board, title: str, description: str, query: Query, size: Size
) -> timeseries.Panel:
    return percent_of(board.panel(timeseries.Panel(), title, description, (query,), size))


def av_status_tiles(board: Board, size: Size) -> tuple[stat.Panel, ...]:
    def status(title: str, description: str, field: str, steps: ThresholdsConfig) -> stat.Panel:
        query = fresh_device_sum(MEASUREMENT_AV_STATUS, field)
        return count_tile(board, title, description, query, size, steps)

    coverage = board.panel(
        stat.Panel(),
        "AV coverage",
        "Share of PCs whose latest antivirus report (last 15 min) says protected. "
        "Plan target: 100 %.",
        (coverage_percent(),),
        size,
        steps=GOOD_ABOVE_95,
    )
    return (
        percent_of(coverage).decimals(1),
        status("PCs protected", "PCs whose latest AV status is protected.", "protected", GREEN),
        status(
            "PCs at risk",
            "AV installed but not fully working: disabled, real-time off or old signatures.",
            "at_risk",
            BAD_ABOVE_0,
        ),
        status(
            "PCs without AV",
            "PCs that report no antivirus product at all.",
            "no_av",
            BAD_ABOVE_0,
        ),
        status(
            "AV status unknown",
            "PCs whose AV probe failed: their protection cannot be confirmed.",
            "error",
            thresholds(("green", None), ("orange", 1)),
        ),
    )


def schools_with_internet_tile(board: Board, size: Size) -> stat.Panel:
    return count_tile(
        board,
        "Schools with Internet",
        "Schools where a device reached the Internet in the last 15 min.",
        schools_with_internet(),
        size,
    )


def internet_by_school_tile(board: Board, width: int) -> stat.Panel:
    query = latest_combined("max", MEASUREMENT_NET, "internet_ok", "site", legend="{site}")
    return board.panel(
        stat.Panel(),
        "Internet by school",
        "Online when any device of the school reached the Internet in the last 15 min.",
        (query,),
        (width, 8),
        steps=thresholds(("red", None), ("green", 1)),
    ).mappings(ONLINE_TEXTS)


def internet_reachable(board: Board, description: str) -> timeseries.Panel:
    query = mean_by("site", MEASUREMENT_NET, "internet_ok", scale="100")
    return mean_percent(board, "Internet reachable", description, query, (12, 8))


def latency(board: Board, title: str) -> timeseries.Panel:
    description = "Mean round-trip time to the Internet targets."
    query = mean_by("site", MEASUREMENT_NET, "latency_ms")
    return board.panel(timeseries.Panel(), title, description, (query,), (12, 8), unit="ms")


def per_device(
    board: Board,
    kind: P,
    title: str,
    description: str,
    field: str,
    device: DeviceType,
    unit: str = "none",
    steps: ThresholdsConfig = GREEN,
    width: int = 10,
) -> P:
    """A telemetry ``field`` per device: its latest value as a bar, or its mean over time."""
    if isinstance(kind, bargauge.Panel):
        query = latest_by_device(MEASUREMENT_TELEMETRY, field, device)
    else:
        query = mean_by("site, device", MEASUREMENT_TELEMETRY, field, device)
    return board.panel(kind, title, description, (query,), (width, 8), unit=unit, steps=steps)


ENV_SENSOR: Final = DeviceType("env_sensor")
PROJECTOR: Final = DeviceType("projector")
CAMERA: Final = DeviceType("camera")
SMART_PLUG: Final = DeviceType("smart_plug")

# --- dashboards ------------------------------------------------------------------------------


def dashboard(
    slug: str,
    title: str,
    *tags: str,
    time_from: str = "now-6h",
    refresh: str = "1m",
) -> Callable[[Callable[[Board], None]], Dashboard]:
    """Turns a function that adds rows to a board into a ``Dashboard``; its docstring is the
    dashboard's description."""

    def make(panels: Callable[[Board], None]) -> Dashboard:
        description = " ".join((panels.__doc__ or "").split())
        return Dashboard(
            slug, f"CampusWatch · {title}", description, tags, VARIABLES, panels, time_from, refresh
        )

    return make


@dashboard("operations-wall", "District operations wall", "wall", time_from="now-1h", refresh="30s")
def operations_wall(board: Board) -> None:
    """Big tiles for the operations-centre screen: plan KPIs for the selection."""
    board.row("Antivirus (plan target: 100 % coverage)", *av_status_tiles(board, (4, 6)))
    board.row(
        "Schools",
        schools_with_internet_tile(board, (4, 6)),
        count_tile(
            board,
            "Schools reporting",
            "Schools with at least one PC agent reporting in the last 15 min.",
            schools_reporting(),
            (4, 6),
        ),
        count_tile(
            board,
            "PCs reporting",
            "PC agents that sent health data in the last 15 min.",
            pcs_reporting(),
            (4, 6),
        ),
        count_tile(
            board,
            "High / critical events (24 h)",
            "Device events of severity high or critical in the last 24 hours. "
            "Open alerts live in the collector, not the TSDB: see its wall page.",
            serious_events("24h", "time > now() - 24h"),
            (4, 6),
            BAD_ABOVE_0,
        ),
    )
    coverage = board.panel(
        bargauge.Panel(),
        "AV coverage by school",
        "Protected share of each school's PCs (latest report, last 15 min).",
        (coverage_by_school_now(),),
        (12, 10),
        steps=GOOD_ABOVE_95,
    )
    board.row("By school", percent_of(coverage).decimals(0), internet_by_school_tile(board, 12))


@dashboard("school", "School detail", "school")
def school_detail(board: Board) -> None:
    """One school (pick it above): antivirus, connectivity, PC health, devices."""
    board.row("Antivirus now", *av_status_tiles(board, (4, 5)))
    board.row(
        "Connectivity",
        internet_reachable(board, "Share of the school's devices that reached the Internet."),
        latency(board, "Internet latency"),
    )
    fullest_disk = latest_combined(
        "max", MEASUREMENT_DISK, "used_pct", "site, device", "mount", "{site} {device}"
    )
    board.row(
        "PC health",
        mean_percent(
            board,
            "CPU",
            "Mean CPU use over the school's PCs.",
            mean_by("site", MEASUREMENT_HEALTH, "cpu_pct"),
            (8, 8),
        ),
        mean_percent(
            board,
            "Memory",
            "Mean memory use over the school's PCs.",
            mean_by("site", MEASUREMENT_HEALTH, "memory_pct"),
            (8, 8),
        ),
        percent_of(
            board.panel(
                bargauge.Panel(),
                "Fullest disk per PC",
                "Highest used share over each PC's mounts (latest report).",
                (fullest_disk,),
                (8, 8),
                steps=thresholds(("green", None), ("orange", 80), ("red", 95)),
            )
        ),
    )
    availability = Query(
        promql=(
            "max by (site, device) (last_over_time"
            f"({series(MEASUREMENT_STATE, 'online')}[$__range]))"
        ),
        influxql=(
            f'SELECT last("online") FROM "{MEASUREMENT_STATE}" '
            f'{influx_where()} GROUP BY "site", "device"'
        ),
        instant=True,
    )
    board.row(
        "Devices",
        board.panel(
            table.Panel(),
            "Device availability (latest in range)",
            "1 = online, 0 = offline: the latest state message in the time range. "
            "State is sent on change only, so widen the range if a device is missing.",
            (availability,),
            (24, 8),
        ).mappings(ONLINE_TEXTS),
    )


@dashboard("antivirus", "Antivirus compliance", "antivirus", "compliance", time_from="now-24h")
def antivirus(board: Board) -> None:
    """Coverage per school over time, signature freshness and the PCs to fix."""
    coverage_over_time = Query(
        promql=(
            "100 * avg by (site) (last_over_time"
            f"({series(MEASUREMENT_AV_STATUS, 'protected')}[$__interval]))"
        ),
        influxql=(
            'SELECT 100 * mean("p") FROM ('
            f'SELECT last("protected") AS "p" FROM "{MEASUREMENT_AV_STATUS}" '
            f"{influx_where()} "
            'GROUP BY time($__interval), "site", "device") '
            'WHERE $timeFilter GROUP BY time($__interval), "site" fill(none)'
        ),
        legend="{site}",
    )
    board.row(
        "Coverage",
        # At least 10 min per bucket: an AV status arrives every few minutes, so a bucket
        # always holds one per device.
        mean_percent(
            board,
            "AV coverage by school over time",
            "Share of each school's PCs protected, per time bucket (at least 10 min "
            "so every PC has reported once).",
            coverage_over_time,
            (16, 9),
        ).interval("10m"),
        count_tile(
            board,
            "Products with outdated signatures",
            "AV products (one PC may run two) whose signatures are not up to date.",
            outdated_products("sig_up_to_date"),
            (4, 9),
            BAD_ABOVE_0,
        ),
        count_tile(
            board,
            "Real-time protection off",
            "AV products whose real-time protection is off.",
            outdated_products("realtime"),
            (4, 9),
            BAD_ABOVE_0,
        ),
    )
    signature_age = Query(
        promql=f"last_over_time({series(MEASUREMENT_AV, 'sig_age_hours')}[{FRESH}])",
        influxql=(
            f'SELECT last("sig_age_hours") FROM "{MEASUREMENT_AV}" '
            f'{influx_where(INFLUX_FRESH)} GROUP BY "site", "device", "product"'
        ),
        legend="{site} {device} {product}",
        instant=True,
    )
    threats = latest_combined("sum", MEASUREMENT_AV, "threats_found", "site", "product", "{site}")
    board.row(
        "Signatures and threats",
        board.panel(
            histogram.Panel(),
            "Signature age distribution",
            "Age in hours of each AV product's signatures (latest report). "
            "Defender and ClamAV update daily: anything past 72 h is stale.",
            (signature_age,),
            (12, 9),
            unit="h",
        ),
        board.panel(
            bargauge.Panel(),
            "Threats found by school",
            "Sum of the threat counters the AV products report (latest report).",
            (threats,),
            (12, 9),
            steps=BAD_ABOVE_0,
        ),
    )
    board.row(
        "PCs to fix",
        board.panel(
            table.Panel(),
            "PCs not protected",
            "PCs whose latest status is at risk, without AV, or unknown (probe "
            "error); one column per status, 1 where it applies.",
            (not_protected("at_risk"), not_protected("no_av"), not_protected("error")),
            (24, 10),
        ),
    )


@dashboard("connectivity", "Connectivity", "connectivity")
def connectivity(board: Board) -> None:
    """Each school's Internet link as its devices see it (plan target: 100 %)."""
    uplinks = latest_combined("count", MEASUREMENT_NET, "internet_ok", "site, uplink", "uplink")
    board.row(
        "Now",
        schools_with_internet_tile(board, (4, 8)),
        internet_by_school_tile(board, 10),
        board.panel(
            table.Panel(),
            "Uplink type per school",
            "Devices reporting per school and uplink type (fibre, 4g, 5g …).",
            (uplinks,),
            (10, 8),
        ),
    )

    def mean(title: str, description: str, field: str, unit: str) -> timeseries.Panel:
        query = mean_by("site", MEASUREMENT_NET, field)
        return board.panel(timeseries.Panel(), title, description, (query,), (12, 8), unit=unit)

    board.row(
        "Over time",
        internet_reachable(board, "Share of each school's devices that reached the Internet."),
        latency(board, "Latency"),
        mean("Packet loss", "Mean packet loss to the Internet targets.", "loss_pct", "percent").min(
            0
        ),
        mean(
            "Gateway round-trip time",
            "Mean RTT to the school's default gateway: high here means a LAN problem.",
            "gateway_rtt_ms",
            "ms",
        ),
        mean_percent(
            board,
            "DNS success",
            "Share of DNS checks that resolved.",
            mean_by("site", MEASUREMENT_NET, "dns_ok_ratio", scale="100"),
            (12, 8),
        ),
        mean(
            "Measured throughput",
            "Mean measured throughput, where devices measure it.",
            "throughput_mbps",
            "Mbits",
        ),
    )


@dashboard("smart-classroom", "Smart classroom", "iot")
def smart_classroom(board: Board) -> None:
    """Room air, projectors and cameras from the smart-classroom devices."""
    co2_steps = thresholds(("green", None), ("orange", 1000))
    room_air = (
        ("CO₂", "CO₂ per sensor; above 1000 ppm a room needs airing.", "co2_ppm", "ppm", co2_steps),
        ("Temperature", "Temperature per sensor.", "temperature_c", "celsius", GREEN),
        ("Humidity", "Relative humidity per sensor.", "humidity_pct", "humidity", GREEN),
    )
    board.row(
        "Room air",
        *(
            per_device(board, timeseries.Panel(), title, text, field, ENV_SENSOR, unit, steps, 8)
            for title, text, field, unit, steps in room_air
        ),
    )
    board.row(
        "Projectors",
        count_tile(
            board,
            "Projectors on",
            "Projectors whose latest power state is on.",
            fresh_device_sum(MEASUREMENT_TELEMETRY, "power", PROJECTOR),
            (4, 8),
        ),
        per_device(
            board,
            bargauge.Panel(),
            "Lamp hours",
            "Lamp hours per projector; most lamps last 3000–5000 h.",
            "lamp_hours",
            PROJECTOR,
            unit="h",
            steps=thresholds(("green", None), ("orange", 3000), ("red", 4500)),
        ),
        per_device(
            board,
            timeseries.Panel(),
            "Projector temperature",
            "Internal temperature per projector: a rising trend means a clogged filter.",
            "temperature_c",
            PROJECTOR,
            unit="celsius",
        ),
    )
    board.row(
        "Cameras and energy",
        count_tile(
            board,
            "Cameras recording",
            "Cameras whose latest recording state is on.",
            fresh_device_sum(MEASUREMENT_TELEMETRY, "recording", CAMERA),
            (4, 8),
        ),
        percent_of(
            per_device(
                board,
                bargauge.Panel(),
                "Camera storage free",
                "Free share of each camera's storage (latest report); below 10 % "
                "recordings are overwritten early.",
                "storage_free_pct",
                CAMERA,
                steps=thresholds(("red", None), ("orange", 10), ("green", 20)),
            )
        ),
        per_device(
            board,
            timeseries.Panel(),
            "Smart-plug power draw",
            "Electrical power per smart plug (air conditioners, projectors, benches).",
            "power_w",
            SMART_PLUG,
            unit="watt",
        ),
    )


@dashboard("alerts", "Device events", "alerts", "events", time_from="now-24h")
def alerts(board: Board) -> None:
    """Events devices reported (threats, tamper, probe failures) by type and severity.
    Alert lifecycle (ack, resolve) lives in the collector's UI."""
    by_severity = Query(
        promql=(
            "sum by (severity) (count_over_time"
            f"({series(MEASUREMENT_EVENT, 'count')}[$__interval]))"
        ),
        influxql=(
            f'SELECT sum("count") FROM "{MEASUREMENT_EVENT}" {influx_where()} '
            'GROUP BY time($__interval), "severity" fill(none)'
        ),
        legend="{severity}",
    )
    board.row(
        "Events",
        count_tile(
            board,
            "High / critical events in range",
            "Events of severity high or critical in the selected time range.",
            serious_events("$__range", "$timeFilter"),
            (4, 9),
            BAD_ABOVE_0,
        ),
        board.panel(
            timeseries.Panel(),
            "Events by severity",
            "Events per time bucket, stacked by severity.",
            (by_severity,),
            (20, 9),
        )
        .draw_style(GraphDrawStyle.BARS)
        .fill_opacity(60)
        .stacking(StackingConfig().mode(StackingMode.NORMAL).group("A"))
        .interval("5m"),
    )

    def in_range(*tags: str, legend: str = "") -> Query:
        """Events per ``tags`` in the selected time range."""
        return Query(
            promql=(
                f"sum by ({', '.join(tags)}) (count_over_time"
                f"({series(MEASUREMENT_EVENT, 'count')}[$__range]))"
            ),
            influxql=(
                f'SELECT sum("count") FROM "{MEASUREMENT_EVENT}" {influx_where()} GROUP BY '
                + ", ".join(f'"{tag}"' for tag in tags)
            ),
            legend=legend,
            instant=True,
        )

    board.row(
        "Breakdown",
        board.panel(
            table.Panel(),
            "Events by type and severity",
            "Event counts in the selected time range.",
            (in_range("event_type", "severity"),),
            (12, 10),
        ),
        board.panel(
            bargauge.Panel(),
            "Events by school",
            "Event counts per school in the selected time range.",
            (in_range("site", legend="{site}"),),
            (12, 10),
            steps=NEUTRAL,
        ),
    )


DASHBOARDS: Final = (
    operations_wall,
    school_detail,
    antivirus,
    connectivity,
    smart_classroom,
    alerts,
)
