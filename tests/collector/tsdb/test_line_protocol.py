from __future__ import annotations

from datetime import UTC, datetime, timedelta

from campuswatch.collector.tsdb.influx import Precision, encode_line_protocol, timestamp
from campuswatch.collector.tsdb.points import Point

T = datetime(2024, 1, 2, 3, 4, 5, 678_901, tzinfo=UTC)
T_MS = 1704164645678


def line(point: Point, precision: Precision = "ms") -> str:
    return str(encode_line_protocol([point], precision).decode())


def test_value_types() -> None:
    point = Point("m", {"t": "x"}, {"i": 3, "f": 0.1, "b": True, "n": False, "big": 1e20}, T)
    assert line(point) == f"m,t=x b=true,big=1e+20,f=0.1,i=3i,n=false {T_MS}\n"


def test_float_full_precision() -> None:
    value = 1 / 3
    text = line(Point("m", {}, {"f": value}, T))
    assert float(text.split("=")[1].split(" ")[0]) == value


def test_escaping_of_measurement_tags_and_field_keys() -> None:
    point = Point(
        "my measure,x=1",
        {"tag key,=": "va l,u=e", "b": "back\\slash"},
        {"field key,=": 1.5},
        T,
    )
    assert line(point) == (
        "my\\ measure\\,x=1,b=back\\\\slash,tag\\ key\\,\\==va\\ l\\,u\\=e "
        f"field\\ key\\,\\==1.5 {T_MS}\n"
    )


def test_newlines_never_split_a_line() -> None:
    text = line(Point("m", {"t": "a\nb"}, {"f\n": 1}, T))
    assert text.count("\n") == 1


def test_tags_sorted_and_empty_tags_skipped() -> None:
    point = Point("m", {"z": "1", "a": "2", "empty": "", "": "x"}, {"f": 1}, T)
    assert line(point) == f"m,a=2,z=1 f=1i {T_MS}\n"


def test_point_without_fields_is_left_out() -> None:
    assert encode_line_protocol([Point("m", {}, {}, T)]) == b""
    nan_only = Point("m", {}, {"f": float("nan")}, T)
    assert encode_line_protocol([nan_only, Point("n", {}, {"f": 1}, T)]).startswith(b"n ")


def test_precisions_and_naive_time() -> None:
    assert timestamp(T, "ms") == T_MS
    assert timestamp(T, "ns") == T_MS * 1_000_000 + 901_000
    assert timestamp(T.replace(tzinfo=None), "ms") == T_MS
    before_epoch = datetime(1969, 12, 31, 23, 59, 59, tzinfo=UTC)
    assert timestamp(before_epoch) == -1000
    assert timestamp(T + timedelta(microseconds=999)) == T_MS + 1
