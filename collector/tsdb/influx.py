"""Line protocol and the writers that speak it: InfluxDB 2.x/3.x and VictoriaMetrics through
``influxdb-client``, InfluxDB 1.x through its ``/write`` endpoint with httpx.

Every detail of those protocols lives in this module (house style: one module owns a
protocol). Writers do no retrying: ``BufferedWriter`` does, so errors are mapped to
``TsdbUnavailable`` (retry later) or ``TsdbRejected`` (the data itself is bad).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Final, Literal

import httpx

from campuswatch.collector.tsdb.base import TsdbRejected, TsdbUnavailable
from campuswatch.collector.tsdb.points import FieldValue, Point

log = logging.getLogger(__name__)

Precision = Literal["ms", "ns"]

_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_UNITS: Final[dict[str, timedelta]] = {
    "ms": timedelta(milliseconds=1),
    "ns": timedelta(microseconds=1),  # datetime has µs resolution; scaled by 1000 below
}
# Same escaping as influxdb-client, so the two paths store identical keys. Newlines cannot
# appear raw (they end a line), so they are written as the two characters ``\n``.
_ESCAPE_MEASUREMENT: Final = str.maketrans(
    {"\\": "\\\\", ",": r"\,", " ": r"\ ", "\n": r"\n", "\r": r"\r", "\t": r"\t"}
)
_ESCAPE_KEY: Final = str.maketrans(
    {"\\": "\\\\", ",": r"\,", " ": r"\ ", "=": r"\=", "\n": r"\n", "\r": r"\r", "\t": r"\t"}
)
# Retry-worthy although 4xx: the store is busy or the request timed out on its side.
_TRANSIENT_CLIENT_STATUSES: Final = frozenset({408, 429})
# Configuration problems (bad token, missing database/bucket) say nothing about the points:
# treat them as an outage so data waits in the spool until someone fixes the setting,
# instead of being bisected and thrown away as "rejected".
_CONFIGURATION_STATUSES: Final = frozenset({401, 403, 404})


def timestamp(time: datetime, precision: Precision = "ms") -> int:
    """Integer epoch time without float rounding; a naive datetime is taken as UTC."""
    if time.tzinfo is None:
        time = time.replace(tzinfo=UTC)
    delta = time - _EPOCH
    if precision == "ms":
        return delta // _UNITS["ms"]
    return (delta // _UNITS["ns"]) * 1000


def _format_value(value: FieldValue) -> str:
    # bool first: it is a subclass of int.
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return f"{value}i"
    # repr() is the shortest string that round-trips, i.e. full precision.
    return repr(float(value))


def encode_point(point: Point, precision: Precision = "ms") -> str | None:
    """One line of line protocol, or None if the point has nothing storable."""
    fields = [
        f"{name.translate(_ESCAPE_KEY)}={_format_value(value)}"
        for name, value in sorted(point.fields.items())
        if name and not (isinstance(value, float) and value != value)
    ]
    if not point.measurement or not fields:
        return None
    parts = [point.measurement.translate(_ESCAPE_MEASUREMENT)]
    # Sorted tags are what InfluxDB recommends for write performance and make lines stable.
    for key, value in sorted(point.tags.items()):
        if key and value:  # an empty tag key or value is a parse error
            parts.append(f"{key.translate(_ESCAPE_KEY)}={value.translate(_ESCAPE_KEY)}")
    return f"{','.join(parts)} {','.join(fields)} {timestamp(point.time, precision)}"


def encode_line_protocol(points: Iterable[Point], precision: Precision = "ms") -> bytes:
    lines = [line for line in (encode_point(p, precision) for p in points) if line is not None]
    return ("\n".join(lines) + "\n").encode() if lines else b""


def _raise_for_status(status: int, body: str, target: str) -> None:
    if status < 300:
        return
    detail = f"{target} answered HTTP {status}: {body[:300]}"
    if status >= 500 or status in _TRANSIENT_CLIENT_STATUSES or status in _CONFIGURATION_STATUSES:
        raise TsdbUnavailable(detail)
    raise TsdbRejected(detail)


class Influx1Writer:
    """InfluxDB 1.x: ``POST /write?db=…&precision=ms`` (Debian's 1.6 has no ``/api/v2``)."""

    def __init__(
        self,
        base_url: str,
        database: str,
        *,
        username: str | None = None,
        password: str | None = None,
        timeout_s: float = 10.0,
        verify_tls: bool = True,
    ) -> None:
        self._database = database
        self._target = f"InfluxDB 1.x at {base_url}"
        params = {"db": database, "precision": "ms"}
        if username is not None:
            # Query parameters rather than basic auth: 1.x accepts both, u/p works on all 1.x.
            params |= {"u": username, "p": password or ""}
        self._params = params
        self._client = httpx.Client(base_url=base_url, timeout=timeout_s, verify=verify_tls)

    def write(self, points: Sequence[Point]) -> None:
        body = encode_line_protocol(points, "ms")
        if not body:
            return
        try:
            response = self._client.post("/write", params=self._params, content=body)
        except httpx.HTTPError as error:  # connection refused, reset, timeout, …
            raise TsdbUnavailable(f"{self._target}: {error!r}") from error
        _raise_for_status(response.status_code, response.text, self._target)

    def close(self) -> None:
        self._client.close()


class Influx2Writer:
    """InfluxDB 2.x/3.x, and VictoriaMetrics (it accepts ``/api/v2/write``), through
    influxdb-client's synchronous write API; batching is the runner's job."""

    def __init__(
        self,
        base_url: str,
        *,
        token: str,
        org: str,
        bucket: str,
        timeout_s: float = 10.0,
        verify_tls: bool = True,
    ) -> None:
        from influxdb_client.client.influxdb_client import InfluxDBClient
        from influxdb_client.client.write_api import SYNCHRONOUS

        self._target = f"{base_url} (bucket {bucket!r})"
        self._org = org
        self._bucket = bucket
        # retries=False: the client must not sleep inside write(); BufferedWriter retries.
        self._client = InfluxDBClient(
            url=base_url,
            token=token,
            org=org,
            timeout=int(timeout_s * 1000),
            verify_ssl=verify_tls,
            retries=False,
            enable_gzip=False,
        )
        self._write_api = self._client.write_api(write_options=SYNCHRONOUS)

    def write(self, points: Sequence[Point]) -> None:
        from influxdb_client.domain.write_precision import WritePrecision
        from influxdb_client.rest import ApiException

        body = encode_line_protocol(points, "ms")
        if not body:
            return
        try:
            self._write_api.write(
                bucket=self._bucket,
                org=self._org,
                record=body,
                write_precision=WritePrecision.MS,  # type: ignore[arg-type]  # a str constant
            )
        except ApiException as error:
            status = int(error.status or 0)
            body_text = error.body.decode(errors="replace") if isinstance(error.body, bytes) else ""
            if status == 0:
                raise TsdbUnavailable(f"{self._target}: {error!r}") from error
            _raise_for_status(status, body_text or str(error.reason), self._target)
        except Exception as error:
            # urllib3 raises a family of its own (MaxRetryError, ProtocolError, …) for network
            # trouble; none of them say anything about the data, so all mean "try later".
            raise TsdbUnavailable(f"{self._target}: {error!r}") from error

    def close(self) -> None:
        try:
            self._write_api.close()  # type: ignore[no-untyped-call]
        finally:
            self._client.close()  # type: ignore[no-untyped-call]
