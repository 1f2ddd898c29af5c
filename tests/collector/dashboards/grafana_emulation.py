"""What Grafana does to a panel query before sending it, and how it calls the stores.

Grafana itself cannot run here, so this reproduces the parts that decide whether a query
works: variable interpolation (a custom "All" value passes through unescaped, a concrete
value of an includeAll variable is regex-escaped), the interval and time-range macros, the
panel's min interval, instant vs range PromQL, and the variable "regex" filter.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Final

import httpx

RANGE_S: Final = 3600
# Grafana's default for a 1 h range on a wide panel, floored by the datasource's 1m.
DEFAULT_INTERVAL_S: Final = 60
_DURATION: Final = re.compile(r"^(\d+)([smhd])$")
_UNIT_S: Final = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_LEFTOVER_VARIABLE: Final = re.compile(r"\$\{?[A-Za-z_]\w*")
_LABEL_VALUES: Final = re.compile(r"^label_values\((?:(.*),\s*)?(\w+)\)$")


@dataclass(frozen=True, slots=True)
class Selection:
    """Values of the dashboard variables; None means "All"."""

    district: str | None = None
    school: str | None = None

    def describe(self) -> str:
        return f"district={self.district or 'All'}, school={self.school or 'All'}"


def duration_s(text: str) -> int:
    match = _DURATION.match(text)
    if match is None:
        raise ValueError(f"not a Grafana duration: {text!r}")
    return int(match.group(1)) * _UNIT_S[match.group(2)]


def panel_interval_s(panel: dict[str, Any]) -> int:
    minimum = panel.get("interval")
    return max(DEFAULT_INTERVAL_S, duration_s(minimum) if minimum else 0)


def prometheus_regex_escape(value: str) -> str:
    """Grafana's ``prometheusSpecialRegexEscape``: the backslash is doubled because the
    regex sits inside a PromQL string literal, where a lone ``\\-`` is a syntax error."""
    value = value.replace("\\", "\\\\\\\\")
    return re.sub(r"[$^*{}\[\]'+?.()|]", lambda match: "\\\\" + match.group(0), value)


def influx_regex_escape(value: str) -> str:
    """Grafana's ``escapeRegex`` for InfluxQL ``/…/`` literals."""
    return re.sub(r"[\\^$*+?.()|\[\]{}/]", lambda match: "\\" + match.group(0), value)


def interpolate_variables(
    query: str, variables: list[dict[str, Any]], chosen: Selection, flavour: str
) -> str:
    escape = prometheus_regex_escape if flavour == "victoriametrics" else influx_regex_escape
    for variable in variables:
        name = variable["name"]
        value = getattr(chosen, name)
        text = variable["allValue"] if value is None else escape(value)
        query = query.replace(f"${{{name}}}", text).replace(f"${name}", text)
    return query


def interpolate_macros(query: str, *, start_s: float, end_s: float, interval_s: int) -> str:
    start_ms, end_ms = int(start_s * 1000), int(end_s * 1000)
    time_filter = f"time >= {start_ms}ms and time <= {end_ms}ms"
    replacements = {
        "$__rate_interval": f"{4 * interval_s}s",
        "$__interval_ms": str(interval_s * 1000),
        "$__interval": f"{interval_s}s",
        "$__range": f"{math.ceil(end_s - start_s)}s",
        "$__timeFilter": time_filter,
        "$timeFilter": time_filter,
    }
    # Longest first: "$__interval" is a prefix of "$__interval_ms".
    for macro in sorted(replacements, key=len, reverse=True):
        query = query.replace(macro, replacements[macro])
    leftover = _LEFTOVER_VARIABLE.search(query)
    if leftover is not None:
        raise AssertionError(f"uninterpolated {leftover.group(0)!r} in {query!r}")
    return query


def apply_variable_regex(values: list[str], regex: str) -> list[str]:
    """Grafana's variable "Regex": keep matches; the first capture group is the value."""
    if not regex:
        return sorted(set(values))
    pattern = re.compile(regex.strip("/"))
    kept: set[str] = set()
    for value in values:
        match = pattern.search(value)
        if match is not None:
            kept.add(match.group(1) if match.groups() else value)
    return sorted(kept)


class QueryFailed(Exception):
    pass


def prometheus_query(
    client: httpx.Client, query: str, *, instant: bool, start_s: float, end_s: float, step_s: int
) -> list[dict[str, Any]]:
    """``data.result`` of an instant or range query, as Grafana sends them."""
    if instant:
        response = client.post("/api/v1/query", data={"query": query, "time": str(end_s)})
    else:
        response = client.post(
            "/api/v1/query_range",
            data={"query": query, "start": str(start_s), "end": str(end_s), "step": str(step_s)},
        )
    body = response.json() if response.headers.get("content-type", "").startswith("app") else {}
    if response.status_code != 200 or body.get("status") != "success":
        raise QueryFailed(f"HTTP {response.status_code}: {response.text[:500]}")
    result: list[dict[str, Any]] = body["data"]["result"]
    return result


def prometheus_label_values(
    client: httpx.Client, query: str, *, start_s: float, end_s: float
) -> list[str]:
    """``label_values(selector, label)`` the way Grafana's Prometheus datasource runs it."""
    match = _LABEL_VALUES.match(query.strip())
    if match is None:
        raise QueryFailed(f"not a label_values() query: {query!r}")
    selector, label = match.groups()
    params: dict[str, str] = {"start": str(int(start_s)), "end": str(int(end_s))}
    if selector:
        params["match[]"] = selector
    response = client.get(f"/api/v1/label/{label}/values", params=params)
    if response.status_code != 200:
        raise QueryFailed(f"HTTP {response.status_code}: {response.text[:500]}")
    values: list[str] = response.json()["data"]
    return values


def influx_query(client: httpx.Client, database: str, query: str) -> list[dict[str, Any]]:
    """The series of a single InfluxQL statement (``/query?db=…&q=…&epoch=ms``)."""
    response = client.get("/query", params={"db": database, "q": query, "epoch": "ms"})
    if response.status_code != 200:
        raise QueryFailed(f"HTTP {response.status_code}: {response.text[:500]}")
    results = response.json().get("results", [])
    if len(results) != 1:
        raise QueryFailed(f"expected one statement result, got {response.text[:500]}")
    if "error" in results[0]:
        raise QueryFailed(results[0]["error"])
    series: list[dict[str, Any]] = results[0].get("series", [])
    return series
