from __future__ import annotations

import re
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from campuswatch.collector.forward.cef import (
    escape_extension_value,
    escape_header,
    normalise_mac,
    render_cef,
)
from campuswatch.collector.signals import CEF_SEVERITY, LEVELS
from tests.collector.forward.cef_parser import CefSyntaxError, parse_cef
from tests.collector.forward.samples import OPENED_AT, av_disabled

TESTCASES = Path(__file__).parent / "testcases"


def test_av_disabled_alert_matches_the_recorded_line() -> None:
    expected = (TESTCASES / "av_disabled_opened.cef").read_text(encoding="utf-8").rstrip("\n")
    assert render_cef(av_disabled(), version="0.1.0") == expected


def test_av_disabled_alert_fields_as_a_siem_reads_them() -> None:
    event = parse_cef(render_cef(av_disabled(), version="9.9"))
    assert event.header == {
        "version": "0",
        "vendor": "CampusWatch",
        "product": "CampusWatch Collector",
        "product_version": "9.9",
        "signature": "av.realtime_off",
        "name": "Antivirus real-time protection disabled",
        "severity": "8",
    }
    ext = event.extension
    assert ext["rt"] == str(int(OPENED_AT.timestamp() * 1000)) == "1763950530123"
    assert ext["start"] == "1763950200000"
    assert ext["end"] == "1763950500000"
    assert ext["act"] == "opened"
    assert ext["externalId"] == "4711"
    assert ext["deviceExternalId"] == "pc-lab1-07"
    assert ext["shost"] == ext["dhost"] == "PC-LAB1-07"
    assert ext["src"] == "10.20.1.57"
    assert ext["smac"] == "00:1A:2B:3C:4D:5E"
    assert ext["dvchost"] == "collector-cau-giay"
    assert ext["cnt"] == "3"
    assert ext["cat"] == "antivirus,windows"
    assert ext["msg"] == "Bảo vệ thời gian thực của Windows Defender đã tắt trên PC-LAB1-07"
    assert event.custom_strings() == {
        "schoolId": "thcs-nguyen-du-cau-giay",
        "districtId": "cau-giay",
        "provinceId": "ha-noi",
        "siteId": "thcs-ndc-lab1",
        "fingerprint": "av.realtime_off:thcs-ndc:pc-lab1-07",
        "state": "firing",
    }


def test_every_extension_key_is_standard_or_a_labelled_custom_string() -> None:
    standard = {
        "rt", "start", "end", "externalId", "act", "outcome", "cnt", "dvchost",
        "deviceExternalId", "shost", "dhost", "src", "smac", "suser", "cat", "request",
        "reason", "msg",
    }  # fmt: skip
    n = av_disabled(event="acknowledged", actor="soc.hanoi", note="ticket 42", url="https://x/a/1")
    ext = parse_cef(render_cef(n)).extension
    for key in ext:
        assert re.fullmatch(r"[A-Za-z0-9]+", key)
        custom = re.fullmatch(r"(cs[1-6])(Label)?", key)
        assert key in standard or custom, key
        if custom and not custom.group(2):
            assert f"{key}Label" in ext
    assert ext["suser"] == "soc.hanoi"
    assert ext["reason"] == "ticket 42"
    assert ext["request"] == "https://x/a/1"


@pytest.mark.parametrize("level", LEVELS)
def test_severity_follows_the_shared_table(level: str) -> None:
    event = parse_cef(render_cef(av_disabled(level=level)))
    assert event.header["severity"] == str(CEF_SEVERITY[level])  # type: ignore[index]


@pytest.mark.parametrize(
    ("text", "header", "value"),
    [
        ("a|b", r"a\|b", "a|b"),
        ("C:\\Windows\\", r"C:\\Windows\\", r"C:\\Windows\\"),
        ("k=v", "k=v", r"k\=v"),
        ("line1\nline2", "line1 line2", r"line1\nline2"),
        ("cr\r\nlf", "cr lf", r"cr\r\nlf"),
        ("tab\there\x00", "tab here ", "tab here "),
        ("\\|=", r"\\\|=", r"\\|\="),
        ("Trường THCS Nguyễn Du", "Trường THCS Nguyễn Du", "Trường THCS Nguyễn Du"),
    ],
)
def test_escaping_rules(text: str, header: str, value: str) -> None:
    assert escape_header(text) == header
    assert escape_extension_value(text) == value


def test_hostile_values_survive_the_round_trip_through_an_independent_parser() -> None:
    n = av_disabled(
        rule_id="rule|with\\pipe",
        rule_title="Tên | có \\ gạch\nxuống dòng",
        summary="msg=trick act=resolved \\ done | ok\nnext line",
        hostname="host name=evil",
        school_id="trường\\=|",
        actor="a b=c",
        event="acknowledged",
    )
    event = parse_cef(render_cef(n))
    assert event.header["signature"] == "rule|with\\pipe"
    assert event.header["name"] == "Tên | có \\ gạch xuống dòng"
    assert event.extension["msg"] == "msg=trick act=resolved \\ done | ok\nnext line"
    assert event.extension["act"] == "acknowledged"
    assert event.extension["shost"] == "host name=evil"
    assert event.extension["suser"] == "a b=c"
    assert event.custom_strings()["schoolId"] == "trường\\=|"


def test_the_independent_parser_does_catch_broken_escaping() -> None:
    # Guards the guard: a line rendered without escaping must fail to parse or differ.
    with pytest.raises(CefSyntaxError):
        parse_cef("CEF:0|V|P|1|sig|name|5|msg=a=b")
    with pytest.raises(CefSyntaxError):
        parse_cef("CEF:0|V|P|1|sig|name|5|msg=a\\x")


def test_missing_and_malformed_values_are_left_out() -> None:
    n = av_disabled(
        hostname=None, ip="not-an-ip", mac="zz:zz", device_id=None, tags=(), school_id=None
    )
    ext = parse_cef(render_cef(n)).extension
    for key in ("shost", "dhost", "src", "smac", "deviceExternalId", "cat", "cs1", "cs1Label"):
        assert key not in ext
    assert ext["cs2Label"] == "districtId"


def test_ipv6_is_kept_and_mac_forms_normalised() -> None:
    assert parse_cef(render_cef(av_disabled(ip="fe80::1"))).extension["src"] == "fe80::1"
    assert normalise_mac("001a2b3c4d5e") == "00:1A:2B:3C:4D:5E"
    assert normalise_mac("00:1a:2b:3c:4d:5e") == "00:1A:2B:3C:4D:5E"
    assert normalise_mac("00:1a-2b:3c:4d:5e") is None


def test_the_free_text_comes_last_so_truncation_cuts_prose_first() -> None:
    line = render_cef(av_disabled())
    assert line.rsplit(" msg=", 1)[1].startswith("Bảo vệ")
    assert "cs6Label=state" in line.rsplit(" msg=", 1)[0]


_text = st.text(st.characters(exclude_categories=["Cs"]), max_size=40)


@given(summary=_text, title=_text, hostname=_text, actor=_text)
def test_any_text_round_trips(summary: str, title: str, hostname: str, actor: str) -> None:
    def controls_to_space(value: str) -> str:
        return re.sub(r"[\x00-\x09\x0b\x0c\x0e-\x1f\x7f]", " ", value)

    n = av_disabled(summary=summary, rule_title=title, hostname=hostname, actor=actor)
    event = parse_cef(render_cef(n))
    expected_title = re.sub(r"\r\n|\r|\n", " ", controls_to_space(title)) if title else n.rule_id
    assert event.header["name"] == expected_title
    for key, value in (("msg", summary), ("shost", hostname), ("suser", actor)):
        if value:
            assert event.extension[key] == controls_to_space(value)
        else:
            assert key not in event.extension
