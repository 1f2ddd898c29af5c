"""``writer_from_url``: one setting string chooses and configures the time-series store.

Forms (documented in docs/timeseries.md):
  ``None`` / ``sqlite://``            data_dir/timeseries.db
  ``sqlite:///name.db``               relative to data_dir (SQLAlchemy's convention)
  ``sqlite:////abs/path.db``          absolute path
  ``victoriametrics://host[:8428]``   ``victoriametricss://`` or ``?tls=1`` for https
  ``influx2://TOKEN@host[:8086]/ORG/BUCKET``   ``influx2s://`` or ``?tls=1`` for https
  ``influx1://[USER:PASS@]host[:8086]/DATABASE``   ``influx1s://`` or ``?tls=1``
Credentials may be percent-encoded. ``?verify=0`` turns off TLS certificate checks.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final
from urllib.parse import parse_qs, unquote, urlsplit

from campuswatch.collector.tsdb.base import TimeSeriesWriter
from campuswatch.collector.tsdb.influx import Influx1Writer, Influx2Writer
from campuswatch.collector.tsdb.sqlite_store import SqliteStore

DEFAULT_SQLITE_NAME: Final = "timeseries.db"
_DEFAULT_PORTS: Final = {"victoriametrics": 8428, "influx2": 8086, "influx1": 8086}
_TRUE_WORDS: Final = frozenset({"1", "true", "yes", "on"})
# VictoriaMetrics ignores org, bucket and token on /api/v2/write; influxdb-client needs them.
_VM_PLACEHOLDER: Final = "campuswatch"


def _flag(query: dict[str, list[str]], name: str, default: bool) -> bool:
    values = query.get(name)
    return default if not values else values[-1].strip().lower() in _TRUE_WORDS


def writer_from_url(
    url: str | None,
    data_dir: Path,
    *,
    raw_retention_days: float | None = 7.0,
    retention_days: float | None = 400.0,
) -> TimeSeriesWriter:
    """Build the writer a URL names; ValueError says what is wrong with a bad one. The
    retention figures apply to the embedded SQLite store (the others keep their own)."""

    def sqlite(path: Path) -> SqliteStore:
        return SqliteStore(
            path, raw_retention_days=raw_retention_days, retention_days=retention_days
        )

    if url is None or not url.strip():
        return sqlite(data_dir / DEFAULT_SQLITE_NAME)
    url = url.strip()
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as error:
        raise ValueError(f"time-series URL {url!r} is malformed: {error}") from error
    scheme = parts.scheme.lower()
    query = parse_qs(parts.query)

    if scheme == "sqlite":
        if parts.netloc:
            raise ValueError(
                f"time-series URL {url!r}: use sqlite:///relative.db or sqlite:////abs/path.db"
            )
        path_text = parts.path[1:] if parts.path.startswith("/") else parts.path
        if not path_text:
            return sqlite(data_dir / DEFAULT_SQLITE_NAME)
        path = Path(unquote(path_text))
        return sqlite(path if path.is_absolute() else data_dir / path)

    tls = scheme.endswith("s") and scheme.rstrip("s") in _DEFAULT_PORTS
    kind = scheme[:-1] if tls else scheme
    if kind not in _DEFAULT_PORTS:
        raise ValueError(
            f"time-series URL {url!r}: unknown scheme {parts.scheme!r}; expected sqlite, "
            "victoriametrics, influx2 or influx1 (add 's' for https)"
        )
    if not parts.hostname:
        raise ValueError(f"time-series URL {url!r}: a host is required")
    tls = tls or _flag(query, "tls", False)
    verify = _flag(query, "verify", True)
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    base_url = f"{'https' if tls else 'http'}://{host}:{port or _DEFAULT_PORTS[kind]}"
    segments = [unquote(s) for s in parts.path.split("/") if s]

    if kind == "victoriametrics":
        if segments:
            raise ValueError(f"time-series URL {url!r}: victoriametrics:// takes no path")
        return Influx2Writer(
            base_url,
            token=_VM_PLACEHOLDER,
            org=_VM_PLACEHOLDER,
            bucket=_VM_PLACEHOLDER,
            verify_tls=verify,
        )
    if kind == "influx2":
        if len(segments) != 2 or not parts.username:
            raise ValueError(
                f"time-series URL {url!r}: expected influx2://TOKEN@host:port/ORG/BUCKET"
            )
        return Influx2Writer(
            base_url,
            token=unquote(parts.username),
            org=segments[0],
            bucket=segments[1],
            verify_tls=verify,
        )
    if len(segments) != 1:
        raise ValueError(
            f"time-series URL {url!r}: expected influx1://[USER:PASS@]host:port/DATABASE"
        )
    return Influx1Writer(
        base_url,
        segments[0],
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password else None,
        verify_tls=verify,
    )
