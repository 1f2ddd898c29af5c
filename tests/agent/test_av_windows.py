"""Windows AV probe against recorded PowerShell output (Telegraf ``testcases/`` style).

Each folder under ``testcases/av_windows/`` is one machine: ``securitycenter``, ``defender`` and
``threats`` outputs as ``<name>.json`` (stdout) or ``<name>.error`` (first line the
``CommandError`` reason, the rest its detail), and ``expected.json`` with the products and
errors ``collect_windows_av`` must return. After a deliberate behaviour change:
``python -m tests.agent.test_av_windows --regenerate``, then read every diff by hand.
"""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from campuswatch.agent.commands import CommandError, CommandResult, FailureReason
from campuswatch.agent.probes import ProbeContext
from campuswatch.agent.probes.av_windows import (
    DEFENDER_NAME,
    DEFENDER_STATUS_SCRIPT,
    SECURITY_CENTER_SCRIPT,
    THREATS_SCRIPT,
    AvParseError,
    collect_windows_av,
    decode_product_state,
    merge_defender,
    parse_defender_status,
    parse_security_center,
    parse_threat_detections,
)
from campuswatch.agent.settings import AgentSettings
from campuswatch.wire.messages import AvProduct, ProbeError

CASES_DIR = Path(__file__).parent / "testcases" / "av_windows"
NOW = datetime(2024, 11, 18, 3, 0, 0, tzinfo=UTC)
"""The moment every recorded case is evaluated at; the recordings were made around it."""
RECORDING_FOR_SCRIPT = {
    SECURITY_CENTER_SCRIPT: "securitycenter",
    DEFENDER_STATUS_SCRIPT: "defender",
    THREATS_SCRIPT: "threats",
}
CASE_NAMES = sorted(path.name for path in CASES_DIR.iterdir() if path.is_dir())


class RecordedPowerShell:
    """A CommandRunner that answers each of the probe's scripts from a case folder."""

    def __init__(self, case_dir: Path, settings: AgentSettings) -> None:
        self.case_dir = case_dir
        self.settings = settings
        self.scripts_run: list[str] = []

    def __call__(
        self, argv: Sequence[str], *, timeout_s: float, check: bool = True
    ) -> CommandResult:
        assert list(argv[:-1]) == [
            self.settings.av.powershell,
            "-NoProfile",
            "-NonInteractive",
            "-Command",
        ]
        assert timeout_s == self.settings.av.command_timeout_s
        script = argv[-1]
        self.scripts_run.append(script)
        recording = self.case_dir / RECORDING_FOR_SCRIPT[script]
        stdout_file = recording.with_suffix(".json")
        error_file = recording.with_suffix(".error")
        if stdout_file.exists():
            stdout = stdout_file.read_text(encoding="utf-8")
            return CommandResult(tuple(argv), 0, stdout, "")
        if error_file.exists():
            reason, _, detail = error_file.read_text(encoding="utf-8").partition("\n")
            raise CommandError(_failure_reason(reason.strip()), detail.strip())
        raise AssertionError(f"{self.case_dir.name}: no recording for {recording.name}")


def _failure_reason(text: str) -> FailureReason:
    reasons: dict[str, FailureReason] = {
        "timeout": "timeout",
        "not_found": "not_found",
        "permission": "permission",
        "failed": "failed",
    }
    return reasons[text]


def run_case(case_dir: Path) -> dict[str, Any]:
    settings = AgentSettings()
    context = ProbeContext(device_id="pc-01", site="thcs-demo", settings=settings)
    context.run = RecordedPowerShell(case_dir, settings)
    products, errors = collect_windows_av(context, NOW)
    return {
        "products": msgspec.to_builtins(products),
        "errors": msgspec.to_builtins(errors),
    }


def _error_key(error: dict[str, Any]) -> tuple[str, str, str]:
    """Errors compare by probe, reason and the part that failed, not by the wording of the
    JSON library's message, which changes between Python versions."""
    return error["probe"], error["reason"], error["detail"].split(":", 1)[0]


@pytest.mark.parametrize("case_name", CASE_NAMES)
def test_recorded_case(case_name: str) -> None:
    case_dir = CASES_DIR / case_name
    expected = json.loads((case_dir / "expected.json").read_text(encoding="utf-8"))
    actual = run_case(case_dir)
    assert actual["products"] == expected["products"]
    assert [_error_key(e) for e in actual["errors"]] == [_error_key(e) for e in expected["errors"]]
    # What the probe returns must also pass the wire's own validation (lengths, ranges, zones).
    msgspec.convert(actual["products"], list[AvProduct])
    msgspec.convert(actual["errors"], list[ProbeError])


def test_there_are_enough_recorded_cases() -> None:
    assert len(CASE_NAMES) >= 8


# --- productState bits ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("state", "mode", "enabled", "signatures_up_to_date", "owner_microsoft"),
    [
        (0x061100, "on", True, True, True),  # Defender on
        (0x060100, "off", False, True, True),  # Defender off / passive
        (0x061110, "on", True, False, True),  # Defender on, signatures old
        (0x041000, "on", True, True, False),  # third party on
        (0x041010, "on", True, False, False),
        (0x042000, "snoozed", False, True, False),
        (0x043010, "expired", False, False, False),
        (0x040000, "off", False, True, False),
        (0x000000, "off", False, True, False),
        (0x1F1010, "on", True, False, False),  # provider byte 0x1F: in no table
        (0x0F4000, "unknown", None, True, False),  # state nibble 4 is undocumented
        (0x0FF0F0, "unknown", None, False, False),
        (0x001020, "on", True, None, False),  # signature bits other than 0x10
        (0xFFFFFF, "unknown", None, False, False),
    ],
)
def test_decode_product_state_bits(
    state: int,
    mode: str,
    enabled: bool | None,
    signatures_up_to_date: bool | None,
    owner_microsoft: bool,
) -> None:
    decoded = decode_product_state(state)
    assert decoded.mode == mode
    assert decoded.enabled is enabled
    assert decoded.signatures_up_to_date is signatures_up_to_date
    assert decoded.owner_microsoft is owner_microsoft
    assert decoded.raw == f"0x{state:06x}"


@given(st.integers(min_value=0, max_value=0xFFFFFF))
def test_any_24_bit_state_decodes_consistently(state: int) -> None:
    decoded = decode_product_state(state)
    assert int(decoded.raw, 16) == state
    assert (decoded.mode == "on") == (state & 0xF000 == 0x1000)
    assert (decoded.enabled is None) == (decoded.mode == "unknown")
    assert (decoded.signatures_up_to_date is False) == bool(state & 0x10)
    assert decoded.owner_microsoft == (state & 0x0F00 == 0x0100)


@given(st.one_of(st.integers(max_value=-1), st.integers(min_value=0x1000000)))
def test_out_of_range_state_is_rejected(state: int) -> None:
    with pytest.raises(ValueError, match="outside"):
        decode_product_state(state)


def test_bool_is_not_a_product_state() -> None:
    with pytest.raises(ValueError):
        decode_product_state(True)


# --- Security Center parsing ---------------------------------------------------------------


def test_security_center_single_object_and_empty_outputs() -> None:
    single = '{"displayName":"Bkav Pro","productState":266240}'
    assert [p.name for p in parse_security_center(single, NOW)] == ["Bkav Pro"]
    assert parse_security_center("", NOW) == []
    assert parse_security_center("null\r\n", NOW) == []
    assert parse_security_center("\ufeff[]", NOW) == []


def test_security_center_entry_with_unreadable_state_keeps_the_name_only() -> None:
    text = '[{"displayName":"X AV","productState":"banana"},{"productState":99999999}]'
    first, second = parse_security_center(text, NOW)
    assert first == AvProduct(name="X AV", source="security_center")
    assert second.name == "unnamed product"
    assert second.enabled is None and second.raw_state is None


def test_security_center_timestamp_variants() -> None:
    def last_update(timestamp: object) -> datetime | None:
        entry = json.dumps({"displayName": "A", "productState": 266240, "timestamp": timestamp})
        moment: datetime | None = parse_security_center(entry, NOW)[0].last_update
        return moment

    assert last_update("Mon, 18 Nov 2024 02:13:05 GMT") == datetime(
        2024, 11, 18, 2, 13, 5, tzinfo=UTC
    )
    assert last_update("Mon, 18 Nov 2024 09:13:05 +0700") == datetime(
        2024, 11, 18, 2, 13, 5, tzinfo=UTC
    )
    assert last_update("not a date") is None
    assert last_update(None) is None
    assert last_update("Mon, 18 Nov 2030 02:13:05 GMT") is None  # clock far in the future


@pytest.mark.parametrize(
    "garbage", ["[{", "<html>", '"just a string"', "42", "[1, 2]", "{" * 5000, "\x00\x01"]
)
def test_security_center_garbage_raises_parse_error(garbage: str) -> None:
    with pytest.raises(AvParseError):
        parse_security_center(garbage, NOW)


def test_naive_now_is_refused() -> None:
    with pytest.raises(ValueError, match="zone"):
        parse_security_center("", datetime(2024, 11, 18))


# --- Defender parsing ----------------------------------------------------------------------

BASE_STATUS: dict[str, Any] = {
    "AMServiceEnabled": True,
    "AntivirusEnabled": True,
    "RealTimeProtectionEnabled": True,
    "AntivirusSignatureVersion": "1.421.1487.0",
    "AntivirusSignatureLastUpdated": "/Date(1731894751000)/",  # 2024-11-18 01:52:31 UTC
    "AntivirusSignatureAge": 0,
    "AMRunningMode": "Normal",
    "DefenderSignaturesOutOfDate": False,
}


def _defender(max_age_hours: float = 72.0, **changes: Any) -> AvProduct:
    status = {k: v for k, v in {**BASE_STATUS, **changes}.items() if v is not ...}
    return parse_defender_status(json.dumps(status), NOW, max_age_hours)


@pytest.mark.parametrize(
    ("running_mode", "antivirus_enabled", "mode"),
    [
        ("Normal", True, "active"),
        ("Normal", False, "disabled"),
        ("Passive Mode", False, "passive"),
        ("Passive Mode", True, "passive"),
        ("SxS Passive Mode", False, "passive"),
        ("EDR Block Mode", True, "edr_block"),
        ("Not running", False, "disabled"),
        ("Some Future Mode", True, "unknown"),
        (..., True, "active"),  # Windows 10 1607: no AMRunningMode, no passive mode yet
        (..., False, "disabled"),
        (..., ..., "unknown"),
    ],
)
def test_defender_mode(running_mode: Any, antivirus_enabled: Any, mode: str) -> None:
    product = _defender(AMRunningMode=running_mode, AntivirusEnabled=antivirus_enabled)
    assert product.mode == mode


@pytest.mark.parametrize("never", [4294967295, 65535])
def test_signature_age_sentinel_means_never(never: int) -> None:
    product = _defender(
        AntivirusSignatureAge=never,
        AntivirusSignatureLastUpdated="/Date(-62135596800000)/",
        DefenderSignaturesOutOfDate=...,
    )
    assert product.signature_age_hours is None
    assert product.signature_time is None
    assert product.signatures_up_to_date is False


def test_signature_age_falls_back_to_days_then_threshold() -> None:
    product = _defender(
        AntivirusSignatureLastUpdated=..., AntivirusSignatureAge=4, DefenderSignaturesOutOfDate=...
    )
    assert product.signature_age_hours == 96.0
    assert product.signatures_up_to_date is False
    assert (
        _defender(
            100.0,
            AntivirusSignatureLastUpdated=...,
            AntivirusSignatureAge=4,
            DefenderSignaturesOutOfDate=...,
        ).signatures_up_to_date
        is True
    )


def test_defender_out_of_date_flag_wins_over_age() -> None:
    assert _defender(DefenderSignaturesOutOfDate=True).signatures_up_to_date is False
    fresh_by_age = _defender(DefenderSignaturesOutOfDate=...)
    assert fresh_by_age.signatures_up_to_date is True
    assert fresh_by_age.signature_age_hours == pytest.approx(1 + 7.0 / 60 + 29.0 / 3600)


@pytest.mark.parametrize(
    ("printed", "expected"),
    [
        ("/Date(1731894751000)/", datetime(2024, 11, 18, 1, 52, 31, tzinfo=UTC)),
        ("/Date(1731894751000+0700)/", datetime(2024, 11, 18, 1, 52, 31, tzinfo=UTC)),
        (
            {"value": "/Date(1731894751000)/", "DisplayHint": 2},
            datetime(2024, 11, 18, 1, 52, 31, tzinfo=UTC),
        ),
        (
            "2024-11-18T08:52:31.1234567+07:00",
            datetime(2024, 11, 18, 1, 52, 31, 123456, tzinfo=UTC),
        ),
        ("2024-11-18T01:52:31Z", datetime(2024, 11, 18, 1, 52, 31, tzinfo=UTC)),
        ("/Date(-11644473600000)/", None),  # FILETIME zero: never scanned
        ("/Date(99999999999999999999)/", None),
        ("18/11/2024 08:52:31", None),  # a locale-formatted string is not guessed at
        (None, None),
        (12345, None),
    ],
)
def test_powershell_dates(printed: Any, expected: datetime | None) -> None:
    assert _defender(QuickScanEndTime=printed).last_quick_scan == expected


def test_offsetless_iso_date_is_local_time_of_the_machine() -> None:
    product = _defender(FullScanEndTime="2024-11-17T10:00:00")
    local = datetime(2024, 11, 17, 10, 0, 0).astimezone()
    assert product.last_full_scan == local.astimezone(UTC)


def test_defender_wrong_types_become_unknown_not_crash() -> None:
    product = _defender(
        AntivirusEnabled="yes",
        AMServiceEnabled=1,
        AntivirusSignatureVersion=5,
        IsTamperProtected=None,
        AMRunningMode=["Normal"],
    )
    assert product.enabled is None and product.running is None
    assert product.signature_version is None and product.tamper_protection is None
    assert product.mode == "unknown"


@pytest.mark.parametrize("garbage", ["", "null", "[]", "[{}]", '{"AMServiceEnabled": tru', "5"])
def test_defender_garbage_raises_parse_error(garbage: str) -> None:
    with pytest.raises(AvParseError):
        parse_defender_status(garbage, NOW, 72.0)


@pytest.mark.parametrize(
    ("printed", "count"), [("0\r\n", 0), ("3", 3), ('{"Count":2}', 2), ("\ufeff1", 1)]
)
def test_threat_count(printed: str, count: int) -> None:
    assert parse_threat_detections(printed) == count


@pytest.mark.parametrize("garbage", ["", "-1", '"many"', "[1]", '{"Count":null}', "1.5", "true"])
def test_threat_count_garbage(garbage: str) -> None:
    with pytest.raises(AvParseError):
        parse_threat_detections(garbage)


@given(st.text(max_size=200))
def test_parsers_only_ever_raise_parse_errors(text: str) -> None:
    parsers: list[Callable[[], object]] = [
        lambda: parse_security_center(text, NOW),
        lambda: parse_defender_status(text, NOW, 72.0),
        lambda: parse_threat_detections(text),
    ]
    for parse in parsers:
        with contextlib.suppress(AvParseError):
            parse()


@given(
    st.dictionaries(
        st.sampled_from(sorted({*BASE_STATUS, "QuickScanEndTime", "IsTamperProtected"})),
        st.one_of(
            st.none(),
            st.booleans(),
            st.integers(),
            st.floats(),
            st.text(max_size=40),
            st.lists(st.integers(), max_size=2),
        ),
    )
)
def test_defender_any_field_values_parse(status: dict[str, Any]) -> None:
    product = parse_defender_status(json.dumps(status), NOW, 72.0)
    msgspec.convert(msgspec.to_builtins(product), AvProduct)  # still valid on the wire


# --- merging -------------------------------------------------------------------------------


def test_merge_without_defender_entry_appends_defender() -> None:
    kaspersky = AvProduct(name="Kaspersky", source="security_center", raw_state="0x041000")
    defender = AvProduct(name=DEFENDER_NAME, source="defender", mode="passive")
    assert merge_defender([kaspersky], defender) == [kaspersky, defender]
    assert merge_defender([kaspersky], None) == [kaspersky]


def test_merge_keeps_security_center_facts_defender_lacks() -> None:
    reported = datetime(2024, 11, 18, 1, 0, tzinfo=timezone(timedelta(0)))
    center = AvProduct(
        name="Windows Defender",
        source="security_center",
        enabled=False,
        signatures_up_to_date=True,
        mode="disabled",
        raw_state="0x060100",
        last_update=reported,
    )
    defender = AvProduct(name=DEFENDER_NAME, source="defender", mode="passive", enabled=True)
    (merged,) = merge_defender([center], defender)
    assert merged.name == DEFENDER_NAME and merged.source == "defender"
    assert merged.mode == "passive" and merged.enabled is True
    assert merged.signatures_up_to_date is True
    assert merged.raw_state == "0x060100" and merged.last_update == reported


def test_threats_not_queried_when_defender_status_failed() -> None:
    settings = AgentSettings()
    runner = RecordedPowerShell(CASES_DIR / "powershell_timeout", settings)
    context = ProbeContext(device_id="pc-01", site="thcs-demo", settings=settings, run=runner)
    products, errors = collect_windows_av(context, NOW)
    assert products == []
    assert [e.reason for e in errors] == ["timeout", "timeout"]
    assert THREATS_SCRIPT not in runner.scripts_run


def regenerate() -> None:
    for name in CASE_NAMES:
        result = run_case(CASES_DIR / name)
        text = json.dumps(result, indent=2, ensure_ascii=False) + "\n"
        (CASES_DIR / name / "expected.json").write_text(text, encoding="utf-8")
        print(f"wrote {name}/expected.json")


if __name__ == "__main__":
    if sys.argv[1:] != ["--regenerate"]:
        sys.exit("usage: python -m tests.agent.test_av_windows --regenerate")
    regenerate()


def test_defender_up_to_date_flag_does_not_hide_old_signatures() -> None:
    """Issue 14: Defender's own flag said fine for 400-day-old signatures."""
    old = _defender(
        AntivirusSignatureLastUpdated=...,
        AntivirusSignatureAge=400,
        DefenderSignaturesOutOfDate=False,
    )
    assert old.signature_age_hours == 400 * 24.0
    assert old.signatures_up_to_date is False


@pytest.mark.parametrize("never", [4294967295, 65535])
def test_defender_up_to_date_flag_does_not_hide_missing_signatures(never: int) -> None:
    missing = _defender(
        AntivirusSignatureAge=never,
        AntivirusSignatureLastUpdated="/Date(-62135596800000)/",
        DefenderSignaturesOutOfDate=False,
    )
    assert missing.signature_age_hours is None
    assert missing.signatures_up_to_date is False
