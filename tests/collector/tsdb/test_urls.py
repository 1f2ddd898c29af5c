from __future__ import annotations

from pathlib import Path

import pytest

from campuswatch.collector.tsdb.influx import Influx1Writer, Influx2Writer
from campuswatch.collector.tsdb.sqlite_store import SqliteStore
from campuswatch.collector.tsdb.urls import writer_from_url


@pytest.mark.parametrize(
    ("url", "relative"),
    [(None, "timeseries.db"), ("sqlite://", "timeseries.db"), ("sqlite:///sub/ts.db", "sub/ts.db")],
)
def test_sqlite_paths_relative_to_data_dir(url: str | None, relative: str, tmp_path: Path) -> None:
    writer = writer_from_url(url, tmp_path)
    assert isinstance(writer, SqliteStore)
    assert writer.path == tmp_path / relative
    writer.close()


def test_sqlite_absolute_path(tmp_path: Path) -> None:
    writer = writer_from_url(f"sqlite:///{tmp_path}/abs.db", Path("/nonexistent"))
    assert isinstance(writer, SqliteStore)
    assert writer.path == tmp_path / "abs.db"
    writer.close()


def test_influx2_url_parts(tmp_path: Path) -> None:
    writer = writer_from_url("influx2s://my%2Ftoken@db.example:9999/my org/metrics", tmp_path)
    assert isinstance(writer, Influx2Writer)
    assert writer._target == "https://db.example:9999 (bucket 'metrics')"
    assert writer._org == "my org"
    writer.close()


def test_victoriametrics_default_port_and_tls_flag(tmp_path: Path) -> None:
    writer = writer_from_url("victoriametrics://vm.local?tls=1", tmp_path)
    assert isinstance(writer, Influx2Writer)
    assert writer._target.startswith("https://vm.local:8428 ")
    writer.close()


def test_influx1_with_credentials(tmp_path: Path) -> None:
    writer = writer_from_url("influx1://admin:p%40ss@127.0.0.1:8086/campus", tmp_path)
    assert isinstance(writer, Influx1Writer)
    assert writer._params == {"db": "campus", "precision": "ms", "u": "admin", "p": "p@ss"}
    writer.close()


@pytest.mark.parametrize(
    ("url", "complaint"),
    [
        ("mysql://x/y", "unknown scheme"),
        ("influx2://host:8086/org/bucket", "TOKEN"),
        ("influx2://tok@host:8086/org", "TOKEN"),
        ("influx1://host:8086", "DATABASE"),
        ("influx1://host:notaport/db", "malformed"),
        ("victoriametrics:///", "host"),
        ("victoriametrics://host/path", "no path"),
        ("sqlite://host/file.db", "sqlite:///"),
    ],
)
def test_bad_urls_say_what_is_wrong(url: str, complaint: str, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=complaint):
        writer_from_url(url, tmp_path)
