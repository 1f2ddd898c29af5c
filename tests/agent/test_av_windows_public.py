"""The Windows AV parser against outputs of real PCs published by others (issue 18 item 6).

Each folder under ``testcases/av_windows_public/`` is one machine: ``securitycenter.json`` and/or
``defender.json`` (only what the source showed), ``SOURCE.md`` naming the source and
the changes, and ``expected.json``. The README there gives the productState bit layout and its
sources. After a deliberate behaviour change:
``python -m tests.agent.test_av_windows_public --regenerate``, then read every diff by hand.
"""

from __future__ import annotations

import json
import re
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec
import pytest

from campuswatch.agent.probes.av import av_status, product_protects
from campuswatch.agent.probes.av_windows import (
    DEFENDER_NAME,
    merge_defender,
    parse_defender_status,
    parse_security_center,
)
from campuswatch.wire.messages import AvProduct

CASES_DIR = Path(__file__).parent / "testcases" / "av_windows_public"
CASE_NAMES = sorted(path.name for path in CASES_DIR.iterdir() if path.is_dir())
NOW = datetime(2026, 1, 1, tzinfo=UTC)
"""After every recording (the latest source is from December 2025)."""
MAX_SIGNATURE_AGE_HOURS = 72.0


def parse_case(case_dir: Path) -> list[AvProduct]:
    """What the probe makes of this machine: Security Center, then Defender's own status
    folded in, each where the source showed it (a source showing only Defender's status is
    read like a machine whose Security Center listed nothing)."""
    center_file = case_dir / "securitycenter.json"
    products = []
    if center_file.exists():
        products = parse_security_center(center_file.read_text(encoding="utf-8"), NOW)
    defender_file = case_dir / "defender.json"
    if defender_file.exists():
        defender = parse_defender_status(
            defender_file.read_text(encoding="utf-8"), NOW, MAX_SIGNATURE_AGE_HOURS
        )
        products = merge_defender(products, defender)
    return products


def _by_name(products: list[AvProduct]) -> dict[str, AvProduct]:
    return {product.name: product for product in products}


def test_there_are_public_recordings_of_several_vendors() -> None:
    third_party = {
        product.name
        for name in CASE_NAMES
        for product in parse_case(CASES_DIR / name)
        if product.source == "security_center" and product.name != "Windows Defender"
    }
    assert len(third_party) >= 8, third_party


@pytest.mark.parametrize("case_name", CASE_NAMES)
def test_every_recording_names_its_source(case_name: str) -> None:
    source = (CASES_DIR / case_name / "SOURCE.md").read_text(encoding="utf-8")
    assert re.search(r"^source: \S", source, re.MULTILINE)
    assert re.search(r"^os: \S", source, re.MULTILINE)
    assert "## What was changed" in source
    assert "## The public output, verbatim" in source


@pytest.mark.parametrize("case_name", CASE_NAMES)
def test_public_recording(case_name: str) -> None:
    case_dir = CASES_DIR / case_name
    expected = json.loads((case_dir / "expected.json").read_text(encoding="utf-8"))
    products = parse_case(case_dir)
    assert msgspec.to_builtins(products) == expected["products"]
    # What the parser returns must also pass the wire's own validation.
    msgspec.convert(msgspec.to_builtins(products), list[AvProduct])


# --- the decisions, per product, spelled out against the bit layout ---------------------


@pytest.mark.parametrize(
    ("case_name", "vendor", "raw_state"),
    [
        ("win11_22621_huorong_defender_off", "火绒安全软件", "0x041000"),
        ("win10_sophos_defender_off", "Sophos Anti-Virus", "0x051000"),
        ("trendmicro_sophoshome_defender_off", "Trend Micro Antivirus+", "0x041000"),
        ("trendmicro_sophoshome_defender_off", "Sophos Home", "0x051000"),
        ("win10_19045_bitdefender_defender_off", "Bitdefender Antivirus", "0x041000"),
        ("sentinelone_defender_off", "Sentinel Agent", "0x041000"),
        ("kaspersky_endpoint_10_on", "Kaspersky Endpoint Security 10 für Windows", "0x041000"),
    ],
)
def test_third_party_product_on_and_up_to_date_protects(
    case_name: str, vendor: str, raw_state: str
) -> None:
    """State nibble 0x1 (on), signature nibble 0x0 (up to date), owner nibble 0x0 (not
    Microsoft): the product is the machine's protection."""
    products = parse_case(CASES_DIR / case_name)
    product = _by_name(products)[vendor]
    assert product.source == "security_center"
    assert product.raw_state == raw_state
    assert product.enabled is True
    assert product.running is True
    assert product.realtime_protection is True
    assert product.signatures_up_to_date is True
    assert product.mode == "active"
    assert product_protects(product)
    assert av_status(products, []) == "protected"


@pytest.mark.parametrize(
    "case_name",
    [
        "win11_22621_huorong_defender_off",
        "win10_sophos_defender_off",
        "trendmicro_sophoshome_defender_off",
        "win10_19045_bitdefender_defender_off",
        "sentinelone_defender_off",
    ],
)
def test_defender_standing_down_beside_a_third_party_product(case_name: str) -> None:
    """0x060100 beside another product: Defender is reported (one entry, not dropped), is not
    the protection, and the machine is not "no AV" either."""
    products = parse_case(CASES_DIR / case_name)
    defenders = [p for p in products if p.name in ("Windows Defender", DEFENDER_NAME)]
    assert len(defenders) == 1
    defender = defenders[0]
    assert defender.raw_state == "0x060100"
    assert defender.enabled is False
    assert defender.realtime_protection is False
    assert defender.mode == "disabled"  # Security Center's "off"; passive or not, not protecting
    assert not product_protects(defender)
    assert [p for p in products if product_protects(p)] != [defender]
    assert av_status(products, []) == "protected"


def test_partial_defender_status_keeps_security_centers_mode() -> None:
    """The source showed only ``RealTimeProtectionEnabled : False`` of Get-MpComputerStatus.

    That says nothing about the engine's mode, so Security Center's "off" must stand; it used
    to be replaced by Defender's "unknown" (no AMRunningMode, no AntivirusEnabled)."""
    products = parse_case(CASES_DIR / "win11_22621_huorong_defender_off")
    defender = _by_name(products)[DEFENDER_NAME]
    assert defender.source == "defender"
    assert defender.realtime_protection is False
    assert defender.mode == "disabled"
    assert defender.enabled is False
    assert defender.signatures_up_to_date is True  # Security Center's signature nibble 0x0


def test_third_party_without_timestamp_has_no_last_update() -> None:
    products = parse_case(CASES_DIR / "win10_19045_bitdefender_defender_off")
    assert all(product.last_update is None for product in products)


def test_timestamps_are_read_as_utc() -> None:
    products = _by_name(parse_case(CASES_DIR / "win10_sophos_defender_off"))
    assert products["Sophos Anti-Virus"].last_update == datetime(
        2021, 11, 16, 17, 29, 40, tzinfo=UTC
    )


def test_snoozed_defender_alone_is_at_risk() -> None:
    """401664 = 0x062100: state nibble 0x2, snoozed (temporarily off, still running)."""
    (defender,) = parse_case(CASES_DIR / "win10_19042_defender_snoozed")
    assert defender.raw_state == "0x062100"
    assert defender.enabled is False
    assert defender.running is True
    assert defender.realtime_protection is False
    assert defender.signatures_up_to_date is True
    assert defender.mode == "disabled"
    assert av_status([defender], []) == "at_risk"


def test_third_party_on_with_out_of_date_signatures_does_not_protect() -> None:
    """266256 = 0x041010 (ESET NOD32): on, but signature nibble 0x1. Real-time scanning with
    stale signatures is not counted as protection, and the product still says it is on."""
    (eset,) = parse_case(CASES_DIR / "eset_nod32_signatures_out_of_date")
    assert eset.raw_state == "0x041010"
    assert eset.enabled is True
    assert eset.realtime_protection is True
    assert eset.signatures_up_to_date is False
    assert eset.mode == "active"
    assert not product_protects(eset)
    assert av_status([eset], []) == "at_risk"


def test_passive_defender_does_not_cover_for_a_third_party_product_with_stale_signatures() -> None:
    """Two public recordings side by side (not one machine): a real passive Defender, which
    says AntivirusEnabled True, must not turn the stale ESET's "at risk" into "protected"."""
    products = parse_case(CASES_DIR / "eset_nod32_signatures_out_of_date") + parse_case(
        CASES_DIR / "runner_image_defender_passive_mode"
    )
    assert [p for p in products if product_protects(p)] == []
    assert av_status(products, []) == "at_risk"


def test_passive_defender_reporting_antivirus_enabled_is_not_protection() -> None:
    """A real ``AMRunningMode : Passive Mode`` listing: the engine and its service say they are
    enabled, yet passive Defender does not remediate, so it is not the machine's protection."""
    (defender,) = parse_case(CASES_DIR / "runner_image_defender_passive_mode")
    assert defender.name == DEFENDER_NAME
    assert defender.mode == "passive"
    assert defender.enabled is True
    assert defender.running is True
    assert defender.signatures_up_to_date is True  # AntivirusSignatureAge 0 days
    assert defender.engine_version == "1.1.18700.4"
    assert not product_protects(defender)
    assert av_status([defender], []) == "at_risk"


def test_defender_not_running_beside_kaspersky() -> None:
    """Defender stood down for Kaspersky Standard (Windows 11): ``Not running``, service off,
    signatures never loaded (age 65535), and Defender's placeholders are not reported as
    versions: AMEngineVersion prints 0.0.0.0 when no engine is loaded."""
    (defender,) = parse_case(CASES_DIR / "win11_kaspersky_standard_defender_not_running")
    assert defender.mode == "disabled"
    assert defender.enabled is False
    assert defender.running is False
    assert defender.realtime_protection is None  # not in the stored copy of the output
    assert defender.signatures_up_to_date is False
    assert defender.signature_age_hours is None
    assert defender.signature_version is None
    assert defender.product_version == "4.18.24090.11"
    assert defender.engine_version is None
    assert not product_protects(defender)


def regenerate() -> None:
    for name in CASE_NAMES:
        products: Any = msgspec.to_builtins(parse_case(CASES_DIR / name))
        text = json.dumps({"products": products}, indent=2, ensure_ascii=False) + "\n"
        (CASES_DIR / name / "expected.json").write_text(text, encoding="utf-8")
        print(f"wrote {name}/expected.json")


if __name__ == "__main__":
    if sys.argv[1:] != ["--regenerate"]:
        sys.exit("usage: python -m tests.agent.test_av_windows_public --regenerate")
    regenerate()
