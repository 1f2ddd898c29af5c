"""A small typed model of a Grafana dashboard and its rendering to JSON for two datasources.

Each panel carries its query twice, once in PromQL/MetricsQL (VictoriaMetrics through a
Prometheus-type datasource) and once in InfluxQL (InfluxDB 1.x), so the two flavours of
every dashboard cannot drift apart: same panels, same layout, same meaning.

Why our own model instead of grafana-foundation-sdk or grafanalib: we need one panel
definition rendered for two query languages, a handful of panel types and a stable,
diff-friendly JSON; a few dataclasses do that without another dependency.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Final, Literal

Flavour = Literal["victoriametrics", "influxdb"]
FLAVOURS: Final[tuple[Flavour, ...]] = ("victoriametrics", "influxdb")
PanelKind = Literal["stat", "timeseries", "table", "bargauge", "histogram"]

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
# Grafana's current JSON model version at the time of writing (Grafana 10/11 accept it).
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
class Threshold:
    color: str
    value: float | None = None


@dataclass(frozen=True, slots=True)
class ValueText:
    """A value mapping, e.g. 1 → "Online" in green."""

    value: int
    text: str
    color: str


@dataclass(frozen=True, slots=True)
class Panel:
    title: str
    description: str
    kind: PanelKind
    queries: tuple[Query, ...]
    width: int = 6
    height: int = 8
    unit: str = "none"
    decimals: int | None = None
    minimum: float | None = None
    maximum: float | None = None
    thresholds: tuple[Threshold, ...] = (Threshold("green"),)
    value_texts: tuple[ValueText, ...] = ()
    # Shown instead of "No data" where no rows honestly means zero (no events, none at risk).
    no_value: str | None = None
    # Grafana's panel "Min interval": $__interval never goes below it. Needed where a sample
    # only arrives every few minutes (AV status) so a bucket always holds one per device.
    min_interval: str | None = None
    stacked: bool = False
    bars: bool = False

    def __post_init__(self) -> None:
        if not self.queries:
            raise ValueError(f"panel {self.title!r} has no query")
        if not 1 <= self.width <= GRID_COLUMNS:
            raise ValueError(f"panel {self.title!r}: width must be 1..{GRID_COLUMNS}")


@dataclass(frozen=True, slots=True)
class Row:
    title: str
    panels: tuple[Panel, ...]


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


@dataclass(frozen=True, slots=True)
class Dashboard:
    slug: str
    title: str
    description: str
    tags: tuple[str, ...]
    variables: tuple[Variable, ...]
    rows: tuple[Row, ...]
    time_from: str = "now-6h"
    refresh: str = "1m"

    def uid(self, flavour: Flavour) -> str:
        return f"cw-{self.slug}-{UID_SUFFIXES[flavour]}"

    def panels(self) -> list[Panel]:
        return [panel for row in self.rows for panel in row.panels]


def _datasource(flavour: Flavour) -> dict[str, str]:
    return {"type": DATASOURCE_TYPES[flavour], "uid": DATASOURCE_UIDS[flavour]}


def legend_for(legend: str, flavour: Flavour) -> str:
    if flavour == "victoriametrics":
        return _LEGEND_TAG.sub(r"{{\1}}", legend)
    return _LEGEND_TAG.sub(r"$tag_\1", legend)


def _target(query: Query, ref_id: str, flavour: Flavour, table: bool) -> dict[str, Any]:
    target: dict[str, Any] = {"refId": ref_id, "datasource": _datasource(flavour)}
    if flavour == "victoriametrics":
        target |= {
            "expr": query.promql,
            "legendFormat": legend_for(query.legend, flavour) or "__auto",
            "instant": query.instant,
            "range": not query.instant,
            "format": "table" if table else "time_series",
        }
    else:
        target |= {
            "query": query.influxql,
            "rawQuery": True,
            "resultFormat": "table" if table else "time_series",
            "alias": legend_for(query.legend, flavour),
        }
    return target


def _field_config(panel: Panel) -> dict[str, Any]:
    defaults: dict[str, Any] = {
        "unit": panel.unit,
        "color": {"mode": "thresholds" if panel.kind != "timeseries" else "palette-classic"},
        "thresholds": {
            "mode": "absolute",
            "steps": [{"color": step.color, "value": step.value} for step in panel.thresholds],
        },
        "mappings": [
            {
                "type": "value",
                "options": {
                    str(mapping.value): {
                        "text": mapping.text,
                        "color": mapping.color,
                        "index": index,
                    }
                    for index, mapping in enumerate(panel.value_texts)
                },
            }
        ]
        if panel.value_texts
        else [],
    }
    if panel.decimals is not None:
        defaults["decimals"] = panel.decimals
    if panel.minimum is not None:
        defaults["min"] = panel.minimum
    if panel.maximum is not None:
        defaults["max"] = panel.maximum
    if panel.no_value is not None:
        defaults["noValue"] = panel.no_value
    if panel.kind == "timeseries":
        defaults["custom"] = {
            "drawStyle": "bars" if panel.bars else "line",
            "fillOpacity": 60 if panel.bars else 10,
            "lineWidth": 1,
            "showPoints": "never",
            "spanNulls": False,
            "stacking": {"mode": "normal" if panel.stacked else "none", "group": "A"},
        }
    return {"defaults": defaults, "overrides": []}


def _options(panel: Panel) -> dict[str, Any]:
    reduce = {"calcs": ["lastNotNull"], "fields": "", "values": False}
    if panel.kind == "stat":
        return {
            "reduceOptions": reduce,
            "colorMode": "background",
            "graphMode": "none",
            "justifyMode": "center",
            "textMode": "value",
            "orientation": "auto",
        }
    if panel.kind == "bargauge":
        return {
            "reduceOptions": reduce,
            "displayMode": "gradient",
            "orientation": "horizontal",
            "showUnfilled": True,
        }
    if panel.kind == "timeseries":
        return {
            "legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
            "tooltip": {"mode": "multi", "sort": "desc"},
        }
    if panel.kind == "histogram":
        return {"bucketCount": 10, "combine": True, "legend": {"showLegend": False}}
    return {"showHeader": True, "cellHeight": "sm"}


def _panel_json(
    panel: Panel, panel_id: int, position: dict[str, int], flavour: Flavour
) -> dict[str, Any]:
    table = panel.kind == "table"
    rendered: dict[str, Any] = {
        "id": panel_id,
        "type": panel.kind,
        "title": panel.title,
        "description": panel.description,
        "gridPos": position,
        "datasource": _datasource(flavour),
        "targets": [
            _target(query, chr(ord("A") + index), flavour, table)
            for index, query in enumerate(panel.queries)
        ],
        "fieldConfig": _field_config(panel),
        "options": _options(panel),
    }
    if panel.min_interval is not None:
        rendered["interval"] = panel.min_interval
    if table and len(panel.queries) > 1:
        # One row per device instead of one table per query.
        rendered["transformations"] = [{"id": "merge", "options": {}}]
    return rendered


def _variable_json(variable: Variable, flavour: Flavour) -> dict[str, Any]:
    query = variable.promql if flavour == "victoriametrics" else variable.influxql
    return {
        "name": variable.name,
        "label": variable.label,
        "type": "query",
        "datasource": _datasource(flavour),
        "query": query,
        "definition": query,
        "regex": variable.regex,
        "includeAll": True,
        # A custom All value is passed through unescaped: ".*" matches every site, so "All"
        # never turns into a long alternation or an empty match.
        "allValue": variable.all_value,
        "multi": False,
        "refresh": 2,  # on time-range change, so new schools appear without a reload
        "sort": 1,
        "current": {"selected": True, "text": "All", "value": "$__all"},
        "options": [],
        "hide": 0,
    }


def render_dashboard(dashboard: Dashboard, flavour: Flavour) -> dict[str, Any]:
    """Grafana's dashboard JSON model; rows are laid out left to right, 24 columns wide."""
    panels: list[dict[str, Any]] = []
    next_id = 1
    y = 0
    for row in dashboard.rows:
        panels.append(
            {
                "id": next_id,
                "type": "row",
                "title": row.title,
                "collapsed": False,
                "gridPos": {"x": 0, "y": y, "w": GRID_COLUMNS, "h": 1},
                "panels": [],
            }
        )
        next_id += 1
        y += 1
        x = 0
        line_height = 0
        for panel in row.panels:
            if x + panel.width > GRID_COLUMNS:
                y += line_height
                x = 0
                line_height = 0
            position = {"x": x, "y": y, "w": panel.width, "h": panel.height}
            panels.append(_panel_json(panel, next_id, position, flavour))
            next_id += 1
            x += panel.width
            line_height = max(line_height, panel.height)
        y += line_height
    return {
        "uid": dashboard.uid(flavour),
        "title": dashboard.title,
        "description": dashboard.description,
        "tags": ["campuswatch", *dashboard.tags],
        "timezone": "browser",
        "editable": True,
        "graphTooltip": 1,
        "schemaVersion": SCHEMA_VERSION,
        "version": 1,
        "refresh": dashboard.refresh,
        "time": {"from": dashboard.time_from, "to": "now"},
        "timepicker": {},
        "fiscalYearStartMonth": 0,
        "liveNow": False,
        "annotations": {"list": []},
        "links": [
            {
                "type": "dashboards",
                "tags": ["campuswatch"],
                "asDropdown": True,
                "title": "CampusWatch",
                "includeVars": True,
                "keepTime": True,
            }
        ],
        "templating": {"list": [_variable_json(v, flavour) for v in dashboard.variables]},
        "panels": panels,
    }
