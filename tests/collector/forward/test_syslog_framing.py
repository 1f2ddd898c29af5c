from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from campuswatch.collector.forward.syslog import (
    UTF8_BOM,
    SyslogDestination,
    format_rfc5424,
    octet_counted,
    truncate_message,
)
from tests.collector.forward.cef_parser import parse_cef
from tests.collector.forward.samples import av_disabled

RFC5424 = re.compile(
    rb"<(?P<pri>\d{1,3})>1 (?P<ts>\S+) (?P<host>\S+) (?P<app>\S+) (?P<procid>\S+) "
    rb"(?P<msgid>\S+) (?P<sd>-|\[.*?\]) (?P<msg>.*)",
    re.DOTALL,
)


def test_header_fields_and_priority() -> None:
    ict = timezone(timedelta(hours=7))
    message = format_rfc5424(
        "CEF:0|x",
        facility=20,
        severity=3,
        timestamp=datetime(2025, 11, 24, 9, 15, 30, 123456, tzinfo=ict),
        hostname="collector 1",
        app_name="campuswatch",
        procid="42",
        msgid="opened",
    )
    match = RFC5424.fullmatch(message)
    assert match is not None
    assert match["pri"] == b"163"  # local4 (20) * 8 + error (3)
    assert match["ts"] == b"2025-11-24T02:15:30.123Z"
    assert match["host"] == b"collector_1"
    assert match["msgid"] == b"opened"
    assert match["sd"] == b"-"
    assert match["msg"] == b"CEF:0|x"


def test_bom_only_when_asked() -> None:
    args = {
        "facility": 20, "severity": 6, "timestamp": datetime.now(UTC), "hostname": "h",
        "app_name": "a", "procid": None, "msgid": None,
    }  # fmt: skip
    assert UTF8_BOM not in format_rfc5424("Xin chào", **args)  # type: ignore[arg-type]
    with_bom = format_rfc5424("Xin chào", utf8_bom=True, **args)  # type: ignore[arg-type]
    assert with_bom.endswith(UTF8_BOM + "Xin chào".encode())


def test_destination_renders_cef_with_syslog_severity_of_the_level() -> None:
    destination = SyslogDestination("127.0.0.1", 1, transport="udp", hostname="col-1")
    message = destination.render(av_disabled(level="critical"))
    match = RFC5424.fullmatch(message)
    assert match is not None
    assert match["pri"] == str(20 * 8 + 2).encode()
    event = parse_cef(match["msg"].decode("utf-8"))
    assert event.extension["externalId"] == "4711"
    destination.close()


def test_octet_counting_counts_bytes_not_characters() -> None:
    framed = octet_counted("ệ".encode())
    assert framed == b"3 " + "ệ".encode()


def test_long_udp_message_is_cut_without_breaking_utf8_or_an_escape() -> None:
    destination = SyslogDestination("127.0.0.1", 1, transport="udp", max_datagram_bytes=1000)
    long_summary = "Cảnh báo\\" * 200
    message = destination.render(av_disabled(summary=long_summary))
    assert len(message) <= 1000
    text = message.decode("utf-8")  # no partial character
    body = text.split(" - ", 1)[1]
    event = parse_cef(body)  # no dangling escape
    assert long_summary.startswith(event.extension["msg"])
    assert destination.truncated_total == 1


@given(st.text(st.characters(exclude_categories=["Cs"]), max_size=200), st.integers(1, 400))
def test_truncation_always_yields_valid_utf8(text: str, limit: int) -> None:
    data = text.encode("utf-8")
    cut = truncate_message(data, limit)
    assert len(cut) <= limit
    assert data.startswith(cut)
    cut.decode("utf-8")
    assert (len(cut) - len(cut.rstrip(b"\\"))) % 2 == 0 or len(cut) == len(data)


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"transport": "sctp"}, "transport"),
        ({"facility": "local9"}, "facility"),
        ({"max_datagram_bytes": 100}, "max_datagram_bytes"),
    ],
)
def test_bad_settings_are_refused(kwargs: dict[str, object], error: str) -> None:
    with pytest.raises(ValueError, match=error):
        SyslogDestination("127.0.0.1", 514, **kwargs)  # type: ignore[arg-type]
