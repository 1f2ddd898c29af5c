"""The shipped dashboards: every panel, with its PromQL and InfluxQL side by side.

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

from typing import Final

from campuswatch.collector.dashboards.model import (
    Dashboard,
    Panel,
    Query,
    Row,
    Threshold,
    ValueText,
    Variable,
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


def mean_by_site(measurement: str, field: str, scale: str = "") -> Query:
    """Average over the school's devices per time bucket, one line per school."""
    prefix = f"{scale} * " if scale else ""
    return Query(
        promql=(
            f"{prefix}avg by (site) (avg_over_time({series(measurement, field)}[$__interval]))"
        ),
        influxql=(
            f'SELECT {prefix}mean("{field}") FROM "{measurement}" {influx_where()} '
            'GROUP BY time($__interval), "site" fill(none)'
        ),
        legend="{site}",
    )


def mean_by_device(measurement: str, field: str, kind: DeviceType) -> Query:
    return Query(
        promql=(
            "avg by (site, device) "
            f"(avg_over_time({series(measurement, field, kind.promql)}[$__interval]))"
        ),
        influxql=(
            f'SELECT mean("{field}") FROM "{measurement}" {influx_where(extra=kind.influxql)} '
            'GROUP BY time($__interval), "site", "device" fill(none)'
        ),
        legend="{site} {device}",
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


# --- tiles shared by several dashboards ------------------------------------------------------

GOOD_ABOVE_95: Final = (Threshold("red"), Threshold("orange", 80), Threshold("green", 95))
BAD_ABOVE_0: Final = (Threshold("green"), Threshold("red", 1))
NEUTRAL: Final = (Threshold("blue"),)


def av_status_tiles(width: int, height: int) -> tuple[Panel, ...]:
    return (
        Panel(
            "AV coverage",
            "Share of PCs whose latest antivirus report (last 15 min) says protected. "
            "Plan target: 100 %.",
            "stat",
            (coverage_percent(),),
            width=width,
            height=height,
            unit="percent",
            decimals=1,
            minimum=0,
            maximum=100,
            thresholds=GOOD_ABOVE_95,
        ),
        Panel(
            "PCs protected",
            "PCs whose latest AV status is protected.",
            "stat",
            (fresh_device_sum(MEASUREMENT_AV_STATUS, "protected"),),
            width=width,
            height=height,
            thresholds=(Threshold("green"),),
            no_value="0",
        ),
        Panel(
            "PCs at risk",
            "AV installed but not fully working: disabled, real-time off or old signatures.",
            "stat",
            (fresh_device_sum(MEASUREMENT_AV_STATUS, "at_risk"),),
            width=width,
            height=height,
            thresholds=BAD_ABOVE_0,
            no_value="0",
        ),
        Panel(
            "PCs without AV",
            "PCs that report no antivirus product at all.",
            "stat",
            (fresh_device_sum(MEASUREMENT_AV_STATUS, "no_av"),),
            width=width,
            height=height,
            thresholds=BAD_ABOVE_0,
            no_value="0",
        ),
        Panel(
            "AV status unknown",
            "PCs whose AV probe failed: their protection cannot be confirmed.",
            "stat",
            (fresh_device_sum(MEASUREMENT_AV_STATUS, "error"),),
            width=width,
            height=height,
            thresholds=(Threshold("green"), Threshold("orange", 1)),
            no_value="0",
        ),
    )


ONLINE_TEXTS: Final = (ValueText(1, "Online", "green"), ValueText(0, "Offline", "red"))


def internet_by_school_tile(width: int) -> Panel:
    inner = influx_last_per_device(MEASUREMENT_NET, "internet_ok", "ok")
    return Panel(
        "Internet by school",
        "Online when any device of the school reached the Internet in the last 15 min.",
        "stat",
        (
            Query(
                promql=(
                    "max by (site) "
                    f"(last_over_time({series(MEASUREMENT_NET, 'internet_ok')}[{FRESH}]))"
                ),
                influxql=f'SELECT max("ok") FROM ({inner}) GROUP BY "site"',
                legend="{site}",
                instant=True,
            ),
        ),
        width=width,
        height=8,
        thresholds=(Threshold("red"), Threshold("green", 1)),
        value_texts=ONLINE_TEXTS,
    )


ENV_SENSOR: Final = DeviceType("env_sensor")
PROJECTOR: Final = DeviceType("projector")
CAMERA: Final = DeviceType("camera")
SMART_PLUG: Final = DeviceType("smart_plug")

# --- dashboards ------------------------------------------------------------------------------

OPERATIONS_WALL: Final = Dashboard(
    slug="operations-wall",
    title="CampusWatch · District operations wall",
    description="Big tiles for the operations-centre screen: plan KPIs for the selection.",
    tags=("wall",),
    variables=VARIABLES,
    time_from="now-1h",
    refresh="30s",
    rows=(
        Row("Antivirus (plan target: 100 % coverage)", av_status_tiles(width=4, height=6)),
        Row(
            "Schools",
            (
                Panel(
                    "Schools with Internet",
                    "Schools where a device reached the Internet in the last 15 min.",
                    "stat",
                    (schools_with_internet(),),
                    width=4,
                    height=6,
                    thresholds=NEUTRAL,
                    no_value="0",
                ),
                Panel(
                    "Schools reporting",
                    "Schools with at least one PC agent reporting in the last 15 min.",
                    "stat",
                    (schools_reporting(),),
                    width=4,
                    height=6,
                    thresholds=NEUTRAL,
                    no_value="0",
                ),
                Panel(
                    "PCs reporting",
                    "PC agents that sent health data in the last 15 min.",
                    "stat",
                    (pcs_reporting(),),
                    width=4,
                    height=6,
                    thresholds=NEUTRAL,
                    no_value="0",
                ),
                Panel(
                    "High / critical events (24 h)",
                    "Device events of severity high or critical in the last 24 hours. "
                    "Open alerts live in the collector, not the TSDB: see its wall page.",
                    "stat",
                    (serious_events("24h", "time > now() - 24h"),),
                    width=4,
                    height=6,
                    thresholds=BAD_ABOVE_0,
                    no_value="0",
                ),
            ),
        ),
        Row(
            "By school",
            (
                Panel(
                    "AV coverage by school",
                    "Protected share of each school's PCs (latest report, last 15 min).",
                    "bargauge",
                    (coverage_by_school_now(),),
                    width=12,
                    height=10,
                    unit="percent",
                    decimals=0,
                    minimum=0,
                    maximum=100,
                    thresholds=GOOD_ABOVE_95,
                ),
                internet_by_school_tile(width=12),
            ),
        ),
    ),
)

SCHOOL_DETAIL: Final = Dashboard(
    slug="school",
    title="CampusWatch · School detail",
    description="One school (pick it above): antivirus, connectivity, PC health, devices.",
    tags=("school",),
    variables=VARIABLES,
    rows=(
        Row("Antivirus now", av_status_tiles(width=4, height=5)),
        Row(
            "Connectivity",
            (
                Panel(
                    "Internet reachable",
                    "Share of the school's devices that reached the Internet.",
                    "timeseries",
                    (mean_by_site(MEASUREMENT_NET, "internet_ok", scale="100"),),
                    width=12,
                    unit="percent",
                    minimum=0,
                    maximum=100,
                ),
                Panel(
                    "Internet latency",
                    "Mean round-trip time to the Internet targets.",
                    "timeseries",
                    (mean_by_site(MEASUREMENT_NET, "latency_ms"),),
                    width=12,
                    unit="ms",
                ),
            ),
        ),
        Row(
            "PC health",
            (
                Panel(
                    "CPU",
                    "Mean CPU use over the school's PCs.",
                    "timeseries",
                    (mean_by_site(MEASUREMENT_HEALTH, "cpu_pct"),),
                    width=8,
                    unit="percent",
                    minimum=0,
                    maximum=100,
                ),
                Panel(
                    "Memory",
                    "Mean memory use over the school's PCs.",
                    "timeseries",
                    (mean_by_site(MEASUREMENT_HEALTH, "memory_pct"),),
                    width=8,
                    unit="percent",
                    minimum=0,
                    maximum=100,
                ),
                Panel(
                    "Fullest disk per PC",
                    "Highest used share over each PC's mounts (latest report).",
                    "bargauge",
                    (
                        Query(
                            promql=(
                                "max by (site, device) (last_over_time"
                                f"({series(MEASUREMENT_DISK, 'used_pct')}[{FRESH}]))"
                            ),
                            influxql=(
                                'SELECT max("u") FROM ('
                                + influx_last_per_device(
                                    MEASUREMENT_DISK, "used_pct", "u", extra_group='"mount"'
                                )
                                + ') GROUP BY "site", "device"'
                            ),
                            legend="{site} {device}",
                            instant=True,
                        ),
                    ),
                    width=8,
                    unit="percent",
                    minimum=0,
                    maximum=100,
                    thresholds=(Threshold("green"), Threshold("orange", 80), Threshold("red", 95)),
                ),
            ),
        ),
        Row(
            "Devices",
            (
                Panel(
                    "Device availability (latest in range)",
                    "1 = online, 0 = offline: the latest state message in the time range. "
                    "State is sent on change only, so widen the range if a device is missing.",
                    "table",
                    (
                        Query(
                            promql=(
                                "max by (site, device) (last_over_time"
                                f"({series(MEASUREMENT_STATE, 'online')}[$__range]))"
                            ),
                            influxql=(
                                f'SELECT last("online") FROM "{MEASUREMENT_STATE}" '
                                f'{influx_where()} GROUP BY "site", "device"'
                            ),
                            instant=True,
                        ),
                    ),
                    width=24,
                    value_texts=ONLINE_TEXTS,
                ),
            ),
        ),
    ),
)

ANTIVIRUS: Final = Dashboard(
    slug="antivirus",
    title="CampusWatch · Antivirus compliance",
    description="Coverage per school over time, signature freshness and the PCs to fix.",
    tags=("antivirus", "compliance"),
    variables=VARIABLES,
    time_from="now-24h",
    rows=(
        Row(
            "Coverage",
            (
                Panel(
                    "AV coverage by school over time",
                    "Share of each school's PCs protected, per time bucket (at least 10 min "
                    "so every PC has reported once).",
                    "timeseries",
                    (
                        Query(
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
                        ),
                    ),
                    width=16,
                    height=9,
                    unit="percent",
                    minimum=0,
                    maximum=100,
                    min_interval="10m",
                ),
                Panel(
                    "Products with outdated signatures",
                    "AV products (one PC may run two) whose signatures are not up to date.",
                    "stat",
                    (outdated_products("sig_up_to_date"),),
                    width=4,
                    height=9,
                    thresholds=BAD_ABOVE_0,
                    no_value="0",
                ),
                Panel(
                    "Real-time protection off",
                    "AV products whose real-time protection is off.",
                    "stat",
                    (outdated_products("realtime"),),
                    width=4,
                    height=9,
                    thresholds=BAD_ABOVE_0,
                    no_value="0",
                ),
            ),
        ),
        Row(
            "Signatures and threats",
            (
                Panel(
                    "Signature age distribution",
                    "Age in hours of each AV product's signatures (latest report). "
                    "Defender and ClamAV update daily: anything past 72 h is stale.",
                    "histogram",
                    (
                        Query(
                            promql=(
                                "last_over_time"
                                f"({series(MEASUREMENT_AV, 'sig_age_hours')}[{FRESH}])"
                            ),
                            influxql=(
                                f'SELECT last("sig_age_hours") FROM "{MEASUREMENT_AV}" '
                                f'{influx_where(INFLUX_FRESH)} GROUP BY "site", "device", '
                                '"product"'
                            ),
                            legend="{site} {device} {product}",
                            instant=True,
                        ),
                    ),
                    width=12,
                    height=9,
                    unit="h",
                ),
                Panel(
                    "Threats found by school",
                    "Sum of the threat counters the AV products report (latest report).",
                    "bargauge",
                    (
                        Query(
                            promql=(
                                "sum by (site) (last_over_time"
                                f"({series(MEASUREMENT_AV, 'threats_found')}[{FRESH}]))"
                            ),
                            influxql=(
                                'SELECT sum("t") FROM ('
                                + influx_last_per_device(
                                    MEASUREMENT_AV, "threats_found", "t", extra_group='"product"'
                                )
                                + ') GROUP BY "site"'
                            ),
                            legend="{site}",
                            instant=True,
                        ),
                    ),
                    width=12,
                    height=9,
                    thresholds=BAD_ABOVE_0,
                ),
            ),
        ),
        Row(
            "PCs to fix",
            (
                Panel(
                    "PCs not protected",
                    "PCs whose latest status is at risk, without AV, or unknown (probe "
                    "error); one column per status, 1 where it applies.",
                    "table",
                    (not_protected("at_risk"), not_protected("no_av"), not_protected("error")),
                    width=24,
                    height=10,
                ),
            ),
        ),
    ),
)

CONNECTIVITY: Final = Dashboard(
    slug="connectivity",
    title="CampusWatch · Connectivity",
    description="Each school's Internet link as its devices see it (plan target: 100 %).",
    tags=("connectivity",),
    variables=VARIABLES,
    rows=(
        Row(
            "Now",
            (
                Panel(
                    "Schools with Internet",
                    "Schools where a device reached the Internet in the last 15 min.",
                    "stat",
                    (schools_with_internet(),),
                    width=4,
                    height=8,
                    thresholds=NEUTRAL,
                    no_value="0",
                ),
                internet_by_school_tile(width=10),
                Panel(
                    "Uplink type per school",
                    "Devices reporting per school and uplink type (fibre, 4g, 5g …).",
                    "table",
                    (
                        Query(
                            promql=(
                                "count by (site, uplink) (last_over_time"
                                f"({series(MEASUREMENT_NET, 'internet_ok')}[{FRESH}]))"
                            ),
                            influxql=(
                                'SELECT count("ok") FROM ('
                                + influx_last_per_device(
                                    MEASUREMENT_NET, "internet_ok", "ok", extra_group='"uplink"'
                                )
                                + ') GROUP BY "site", "uplink"'
                            ),
                            instant=True,
                        ),
                    ),
                    width=10,
                    height=8,
                ),
            ),
        ),
        Row(
            "Over time",
            (
                Panel(
                    "Internet reachable",
                    "Share of each school's devices that reached the Internet.",
                    "timeseries",
                    (mean_by_site(MEASUREMENT_NET, "internet_ok", scale="100"),),
                    width=12,
                    unit="percent",
                    minimum=0,
                    maximum=100,
                ),
                Panel(
                    "Latency",
                    "Mean round-trip time to the Internet targets.",
                    "timeseries",
                    (mean_by_site(MEASUREMENT_NET, "latency_ms"),),
                    width=12,
                    unit="ms",
                ),
                Panel(
                    "Packet loss",
                    "Mean packet loss to the Internet targets.",
                    "timeseries",
                    (mean_by_site(MEASUREMENT_NET, "loss_pct"),),
                    width=12,
                    unit="percent",
                    minimum=0,
                ),
                Panel(
                    "Gateway round-trip time",
                    "Mean RTT to the school's default gateway: high here means a LAN problem.",
                    "timeseries",
                    (mean_by_site(MEASUREMENT_NET, "gateway_rtt_ms"),),
                    width=12,
                    unit="ms",
                ),
                Panel(
                    "DNS success",
                    "Share of DNS checks that resolved.",
                    "timeseries",
                    (mean_by_site(MEASUREMENT_NET, "dns_ok_ratio", scale="100"),),
                    width=12,
                    unit="percent",
                    minimum=0,
                    maximum=100,
                ),
                Panel(
                    "Measured throughput",
                    "Mean measured throughput, where devices measure it.",
                    "timeseries",
                    (mean_by_site(MEASUREMENT_NET, "throughput_mbps"),),
                    width=12,
                    unit="Mbits",
                ),
            ),
        ),
    ),
)

SMART_CLASSROOM: Final = Dashboard(
    slug="smart-classroom",
    title="CampusWatch · Smart classroom",
    description="Room air, projectors and cameras from the smart-classroom devices.",
    tags=("iot",),
    variables=VARIABLES,
    rows=(
        Row(
            "Room air",
            (
                Panel(
                    "CO₂",
                    "CO₂ per sensor; above 1000 ppm a room needs airing.",
                    "timeseries",
                    (mean_by_device(MEASUREMENT_TELEMETRY, "co2_ppm", ENV_SENSOR),),
                    width=8,
                    unit="ppm",
                    thresholds=(Threshold("green"), Threshold("orange", 1000)),
                ),
                Panel(
                    "Temperature",
                    "Temperature per sensor.",
                    "timeseries",
                    (mean_by_device(MEASUREMENT_TELEMETRY, "temperature_c", ENV_SENSOR),),
                    width=8,
                    unit="celsius",
                ),
                Panel(
                    "Humidity",
                    "Relative humidity per sensor.",
                    "timeseries",
                    (mean_by_device(MEASUREMENT_TELEMETRY, "humidity_pct", ENV_SENSOR),),
                    width=8,
                    unit="humidity",
                ),
            ),
        ),
        Row(
            "Projectors",
            (
                Panel(
                    "Projectors on",
                    "Projectors whose latest power state is on.",
                    "stat",
                    (fresh_device_sum(MEASUREMENT_TELEMETRY, "power", PROJECTOR),),
                    width=4,
                    thresholds=NEUTRAL,
                    no_value="0",
                ),
                Panel(
                    "Lamp hours",
                    "Lamp hours per projector; most lamps last 3000–5000 h.",
                    "bargauge",
                    (latest_by_device(MEASUREMENT_TELEMETRY, "lamp_hours", PROJECTOR),),
                    width=10,
                    unit="h",
                    thresholds=(
                        Threshold("green"),
                        Threshold("orange", 3000),
                        Threshold("red", 4500),
                    ),
                ),
                Panel(
                    "Projector temperature",
                    "Internal temperature per projector: a rising trend means a clogged filter.",
                    "timeseries",
                    (mean_by_device(MEASUREMENT_TELEMETRY, "temperature_c", PROJECTOR),),
                    width=10,
                    unit="celsius",
                ),
            ),
        ),
        Row(
            "Cameras and energy",
            (
                Panel(
                    "Cameras recording",
                    "Cameras whose latest recording state is on.",
                    "stat",
                    (fresh_device_sum(MEASUREMENT_TELEMETRY, "recording", CAMERA),),
                    width=4,
                    thresholds=NEUTRAL,
                    no_value="0",
                ),
                Panel(
                    "Camera storage free",
                    "Free share of each camera's storage (latest report); below 10 % "
                    "recordings are overwritten early.",
                    "bargauge",
                    (latest_by_device(MEASUREMENT_TELEMETRY, "storage_free_pct", CAMERA),),
                    width=10,
                    unit="percent",
                    minimum=0,
                    maximum=100,
                    thresholds=(Threshold("red"), Threshold("orange", 10), Threshold("green", 20)),
                ),
                Panel(
                    "Smart-plug power draw",
                    "Electrical power per smart plug (air conditioners, projectors, benches).",
                    "timeseries",
                    (mean_by_device(MEASUREMENT_TELEMETRY, "power_w", SMART_PLUG),),
                    width=10,
                    unit="watt",
                ),
            ),
        ),
    ),
)

ALERTS: Final = Dashboard(
    slug="alerts",
    title="CampusWatch · Device events",
    description="Events devices reported (threats, tamper, probe failures) by type and "
    "severity. Alert lifecycle (ack, resolve) lives in the collector's UI.",
    tags=("alerts", "events"),
    variables=VARIABLES,
    time_from="now-24h",
    rows=(
        Row(
            "Events",
            (
                Panel(
                    "High / critical events in range",
                    "Events of severity high or critical in the selected time range.",
                    "stat",
                    (serious_events("$__range", "$timeFilter"),),
                    width=4,
                    height=9,
                    thresholds=BAD_ABOVE_0,
                    no_value="0",
                ),
                Panel(
                    "Events by severity",
                    "Events per time bucket, stacked by severity.",
                    "timeseries",
                    (
                        Query(
                            promql=(
                                "sum by (severity) (count_over_time"
                                f"({series(MEASUREMENT_EVENT, 'count')}[$__interval]))"
                            ),
                            influxql=(
                                f'SELECT sum("count") FROM "{MEASUREMENT_EVENT}" '
                                f"{influx_where()} "
                                'GROUP BY time($__interval), "severity" fill(none)'
                            ),
                            legend="{severity}",
                        ),
                    ),
                    width=20,
                    height=9,
                    stacked=True,
                    bars=True,
                    min_interval="5m",
                ),
            ),
        ),
        Row(
            "Breakdown",
            (
                Panel(
                    "Events by type and severity",
                    "Event counts in the selected time range.",
                    "table",
                    (
                        Query(
                            promql=(
                                "sum by (event_type, severity) (count_over_time"
                                f"({series(MEASUREMENT_EVENT, 'count')}[$__range]))"
                            ),
                            influxql=(
                                f'SELECT sum("count") FROM "{MEASUREMENT_EVENT}" '
                                f'{influx_where()} GROUP BY "event_type", "severity"'
                            ),
                            instant=True,
                        ),
                    ),
                    width=12,
                    height=10,
                ),
                Panel(
                    "Events by school",
                    "Event counts per school in the selected time range.",
                    "bargauge",
                    (
                        Query(
                            promql=(
                                "sum by (site) (count_over_time"
                                f"({series(MEASUREMENT_EVENT, 'count')}[$__range]))"
                            ),
                            influxql=(
                                f'SELECT sum("count") FROM "{MEASUREMENT_EVENT}" '
                                f'{influx_where()} GROUP BY "site"'
                            ),
                            legend="{site}",
                            instant=True,
                        ),
                    ),
                    width=12,
                    height=10,
                    thresholds=NEUTRAL,
                ),
            ),
        ),
    ),
)

DASHBOARDS: Final = (
    OPERATIONS_WALL,
    SCHOOL_DETAIL,
    ANTIVIRUS,
    CONNECTIVITY,
    SMART_CLASSROOM,
    ALERTS,
)
