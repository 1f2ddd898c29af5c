"""Grafana dashboards built with Grafana's own SDK (grafana-foundation-sdk), for two datasources.

Each panel carries its query twice, once in PromQL/MetricsQL (VictoriaMetrics through a
Prometheus-type datasource) and once in InfluxQL (InfluxDB 1.x): ``Query`` is that pair, the
one thing the SDK cannot say. A dashboard is written once, as a function that adds panels to
a ``Board``; the board builds them with the SDK's panel builders for one flavour at a time, so
the two flavours of every dashboard cannot drift apart: same panels, same layout, same meaning.

The SDK has no InfluxDB query type, so ``InfluxQL`` is a small SDK ``Dataquery`` of our own.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal, TypeVar

from grafana_foundation_sdk.builders import bargauge, histogram, prometheus, stat, table, timeseries
from grafana_foundation_sdk.builders import common as common_builders
from grafana_foundation_sdk.builders import dashboard as builders
from grafana_foundation_sdk.cog import builder as cogbuilder
from grafana_foundation_sdk.cog import variants as cogvariants
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common
from grafana_foundation_sdk.models import dashboard as models
from grafana_foundation_sdk.models.prometheus import PromQueryFormat

Flavour = Literal["victoriametrics", "influxdb"]
FLAVOURS: Final[tuple[Flavour, ...]] = ("victoriametrics", "influxdb")

# Datasource uids the dashboards reference; the provisioning file and `push` create them.
DATASOURCE_UIDS: Final[dict[Flavour, str]] = {
    "victoriametrics": "campuswatch-vm",
    "influxdb": "campuswatch-influxdb",
}
DATASOURCE_TYPES: Final[dict[Flavour, str]] = {
    "victoriametrics": "prometheus",
    "influxdb": "influxdb",
}
DATASOURCE_NAMES: Final[dict[Flavour, str]] = {
    "victoriametrics": "CampusWatch VictoriaMetrics",
    "influxdb": "CampusWatch InfluxDB",
}
UID_SUFFIXES: Final[dict[Flavour, str]] = {"victoriametrics": "vm", "influxdb": "influx"}
FOLDERS: Final[dict[Flavour, str]] = {
    "victoriametrics": "CampusWatch",
    "influxdb": "CampusWatch (InfluxDB)",
}
# The SDK (Grafana 11.6 build) writes 41; nothing here needs more than 39, which Grafana 10.3+
# reads without a migration of its own, so the files keep working on Grafana 10 and 11.
SCHEMA_VERSION: Final = 39
GRID_COLUMNS: Final = 24
# A legend like "{site} {device}" is written once and turned into each language's syntax.
_LEGEND_TAG: Final = re.compile(r"\{([a-z_]+)\}")


@dataclass(frozen=True, slots=True)
class Query:
    """One panel target in both languages.

    ``instant`` makes the PromQL an instant query (Grafana's "Instant" toggle); InfluxQL
    has no such switch, so its text must itself return the latest values.
    """

    promql: str
    influxql: str
    legend: str = ""
    instant: bool = False


@dataclass(frozen=True, slots=True)
class Variable:
    """A query variable with an "All" option whose value is a regex matching everything.

    ``regex`` is Grafana's result filter; its first capture group becomes the value, which
    is how the district is cut out of site ids.
    """

    name: str
    label: str
    promql: str
    influxql: str
    regex: str = ""
    all_value: str = ".*"


def legend_for(legend: str, flavour: Flavour) -> str:
    if flavour == "victoriametrics":
        return _LEGEND_TAG.sub(r"{{\1}}", legend)
    return _LEGEND_TAG.sub(r"$tag_\1", legend)


def datasource(flavour: Flavour) -> models.DataSourceRef:
    return models.DataSourceRef(type_val=DATASOURCE_TYPES[flavour], uid=DATASOURCE_UIDS[flavour])


class InfluxQLQuery(cogvariants.Dataquery):
    """A raw InfluxQL target of Grafana's InfluxDB datasource (not in the SDK)."""

    def __init__(
        self, ref_id: str, query: str, alias: str, table: bool, source: models.DataSourceRef
    ) -> None:
        self.ref_id = ref_id
        self.query = query
        self.alias = alias
        self.result_format = "table" if table else "time_series"
        self.datasource = source

    def to_json(self) -> dict[str, object]:
        return {
            "refId": self.ref_id,
            "datasource": self.datasource,
            "query": self.query,
            "rawQuery": True,
            "resultFormat": self.result_format,
            "alias": self.alias,
        }


class InfluxQL(cogbuilder.Builder[InfluxQLQuery]):
    def __init__(self, query: InfluxQLQuery) -> None:
        self._internal = query

    def build(self) -> InfluxQLQuery:
        return self._internal


def target(
    query: Query, ref_id: str, flavour: Flavour, table: bool
) -> cogbuilder.Builder[cogvariants.Dataquery]:
    legend = legend_for(query.legend, flavour)
    if flavour == "influxdb":
        return InfluxQL(InfluxQLQuery(ref_id, query.influxql, legend, table, datasource(flavour)))
    promql = (
        prometheus.Dataquery()
        .ref_id(ref_id)
        .datasource(datasource(flavour))
        .expr(query.promql)
        .legend_format(legend or "__auto")
        .format(PromQueryFormat.TABLE if table else PromQueryFormat.TIME_SERIES)
    )
    return promql.instant() if query.instant else promql.range()


def thresholds(*steps: tuple[str, float | None]) -> builders.ThresholdsConfig:
    """Absolute thresholds: ``("green", None), ("red", 1)``; the first step has no value."""
    return (
        builders.ThresholdsConfig()
        .mode(models.ThresholdsMode.ABSOLUTE)
        .steps([models.Threshold(value=value, color=color) for color, value in steps])
    )


def value_texts(*texts: tuple[int, str, str]) -> list[models.ValueMapping]:
    """One value mapping: ``(1, "Online", "green"), (0, "Offline", "red")``."""
    return [
        models.ValueMap(
            options={
                str(value): models.ValueMappingResult(text=text, color=color, index=index)
                for index, (value, text, color) in enumerate(texts)
            }
        )
    ]


# Every panel builder of the SDK has the same common methods; these are the ones used here.
AnyPanel = bargauge.Panel | histogram.Panel | stat.Panel | table.Panel | timeseries.Panel
P = TypeVar("P", bargauge.Panel, histogram.Panel, stat.Panel, table.Panel, timeseries.Panel)
# A panel's size in grid units: (width of 24, height).
Size = tuple[int, int]
GREEN: Final = thresholds(("green", None))


def _last_value() -> common_builders.ReduceDataOptions:
    return common_builders.ReduceDataOptions().calcs(["lastNotNull"]).fields("").values(False)


def _legend(shown: bool) -> common_builders.VizLegendOptions:
    return (
        common_builders.VizLegendOptions()
        .display_mode(common.LegendDisplayMode.LIST)
        .placement(common.LegendPlacement.BOTTOM)
        .show_legend(shown)
    )


def _style(panel: P) -> P:
    """The look every panel of a kind shares here; the catalogue changes it per panel."""
    if isinstance(panel, stat.Panel):
        return (
            panel.reduce_options(_last_value())
            .color_mode(common.BigValueColorMode.BACKGROUND)
            .graph_mode(common.BigValueGraphMode.NONE)
            .justify_mode(common.BigValueJustifyMode.CENTER)
            .text_mode(common.BigValueTextMode.VALUE)
            .orientation(common.VizOrientation.AUTO)
        )
    if isinstance(panel, bargauge.Panel):
        return (
            panel.reduce_options(_last_value())
            .display_mode(common.BarGaugeDisplayMode.GRADIENT)
            .orientation(common.VizOrientation.HORIZONTAL)
            .show_unfilled(True)
        )
    if isinstance(panel, timeseries.Panel):
        return (
            panel.color_scheme(builders.FieldColor().mode(models.FieldColorModeId.PALETTE_CLASSIC))
            .legend(_legend(shown=True))
            .tooltip(
                common_builders.VizTooltipOptions()
                .mode(common.TooltipDisplayMode.MULTI)
                .sort(common.SortOrder.DESCENDING)
            )
            .draw_style(common.GraphDrawStyle.LINE)
            .fill_opacity(10)
            .line_width(1)
            .show_points(common.VisibilityMode.NEVER)
            .span_nulls(False)
            .stacking(common_builders.StackingConfig().mode(common.StackingMode.NONE).group("A"))
        )
    if isinstance(panel, histogram.Panel):
        return panel.bucket_count(10).combine(True).legend(_legend(shown=False))
    return panel.show_header(True).cell_height(common.TableCellHeight.SM)


class Board:
    """One dashboard's panels for one flavour, built with the SDK; rows fill 24 columns."""

    def __init__(self, flavour: Flavour) -> None:
        self.flavour = flavour
        self.rows: list[tuple[str, tuple[AnyPanel, ...]]] = []

    def row(self, title: str, *panels: AnyPanel) -> None:
        self.rows.append((title, panels))

    def panel(
        self,
        kind: P,
        title: str,
        description: str,
        queries: Sequence[Query],
        size: Size,
        *,
        steps: builders.ThresholdsConfig = GREEN,
        unit: str = "none",
    ) -> P:
        """``kind`` is a fresh SDK panel builder (``stat.Panel()``); returned filled in, for
        the caller to chain what only this panel has (``.no_value("0")``, ``.interval(…)``)."""
        if not queries:
            raise ValueError(f"panel {title!r} has no query")
        width, height = size
        if not 1 <= width <= GRID_COLUMNS:
            raise ValueError(f"panel {title!r}: width must be 1..{GRID_COLUMNS}")
        is_table = isinstance(kind, table.Panel)
        panel = (
            kind.title(title)
            .description(description)
            .datasource(datasource(self.flavour))
            .targets(
                [
                    target(query, chr(ord("A") + index), self.flavour, is_table)
                    for index, query in enumerate(queries)
                ]
            )
            .span(width)
            .height(height)
            .unit(unit)
            .color_scheme(builders.FieldColor().mode(models.FieldColorModeId.THRESHOLDS))
            .thresholds(steps)
            .mappings([])
        )
        if is_table and len(queries) > 1:
            # One row per device instead of one table per query.
            panel = panel.with_transformation(
                models.DataTransformerConfig(id_val="merge", options={})
            )
        return _style(panel)


@dataclass(frozen=True, slots=True)
class Dashboard:
    """A dashboard's identity and settings; ``panels`` adds its rows to a ``Board``."""

    slug: str
    title: str
    description: str
    tags: tuple[str, ...]
    variables: tuple[Variable, ...]
    panels: Callable[[Board], None]
    time_from: str = "now-6h"
    refresh: str = "1m"

    def uid(self, flavour: Flavour) -> str:
        return f"cw-{self.slug}-{UID_SUFFIXES[flavour]}"


def _variable(variable: Variable, flavour: Flavour) -> builders.QueryVariable:
    return (
        builders.QueryVariable(variable.name)
        .label(variable.label)
        .datasource(datasource(flavour))
        .query(variable.promql if flavour == "victoriametrics" else variable.influxql)
        .regex(variable.regex)
        .include_all(True)
        # A custom All value is passed through unescaped: ".*" matches every site, so "All"
        # never turns into a long alternation or an empty match.
        .all_value(variable.all_value)
        .multi(False)
        # On time-range change, so new schools appear without a reload.
        .refresh(models.VariableRefresh.ON_TIME_RANGE_CHANGED)
        .sort(models.VariableSort.ALPHABETICAL_ASC)
        .current(models.VariableOption(selected=True, text="All", value="$__all"))
        .options([])
        .hide(models.VariableHide.DONT_HIDE)
    )


def build_dashboard(dashboard: Dashboard, flavour: Flavour) -> builders.Dashboard:
    """The SDK's dashboard builder; the SDK lays panels out left to right, row by row."""
    built = (
        builders.Dashboard(dashboard.title)
        .uid(dashboard.uid(flavour))
        .description(dashboard.description)
        .tags(["campuswatch", *dashboard.tags])
        .timezone("browser")
        .editable()
        .tooltip(models.DashboardCursorSync.CROSSHAIR)
        .version(1)
        .refresh(dashboard.refresh)
        .time(dashboard.time_from, "now")
        .fiscal_year_start_month(0)
        .live_now(False)
        .link(
            builders.DashboardLink("CampusWatch")
            .type(models.DashboardLinkType.DASHBOARDS)
            .tags(["campuswatch"])
            .as_dropdown(True)
            .include_vars(True)
            .keep_time(True)
        )
        .variables([_variable(variable, flavour) for variable in dashboard.variables])
    )
    board = Board(flavour)
    dashboard.panels(board)
    next_id = 1
    for title, panels in board.rows:
        # An open row's panels follow it at the top level, as Grafana saves them; the SDK's
        # with_row would nest them inside the row, which Grafana keeps for collapsed rows.
        built = built.with_row(builders.Row(title).id(next_id).collapsed(False))
        for panel in panels:
            next_id += 1
            built = built.with_panel(panel.id(next_id))
        next_id += 1
    return built


def render_dashboard(dashboard: Dashboard, flavour: Flavour) -> dict[str, Any]:
    """Grafana's dashboard JSON model, as plain data."""
    model = build_dashboard(dashboard, flavour).build()
    model.schema_version = SCHEMA_VERSION
    model.annotations = models.AnnotationContainer(list_val=[])
    rendered: dict[str, Any] = json.loads(json.dumps(model, cls=JSONEncoder))
    for variable in rendered["templating"]["list"]:
        # Grafana's variable list shows this; the SDK's model has no field for it.
        variable["definition"] = variable["query"]
    return rendered
