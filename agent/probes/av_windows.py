"""Windows antivirus status from Security Center and Microsoft Defender.

Security Center (``root/SecurityCenter2``) is the only place that knows third-party products
(Kaspersky, BKAV, ESET, Avast…), but it says little: one packed ``productState`` per product.
``Get-MpComputerStatus`` says much more, about Defender only. The probe reads both and folds
Defender's details into Security Center's Defender entry so that one product is one entry.
Windows Server has no Security Center; there Defender is all there is.

Everything here treats PowerShell output as untrusted text: a truncated or garbled answer is a
``ProbeError``, never an exception out of ``collect_windows_av``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Any, Final, Literal, TypeVar

import msgspec

from campuswatch.agent.commands import CommandError
from campuswatch.agent.probes import ProbeContext
from campuswatch.wire.messages import AvProduct, ProbeError

PROBE_NAME: Final = "av"
DEFENDER_NAME: Final = "Microsoft Defender Antivirus"
"""One name for Defender on every Windows version, so fleet reports group it as one product.
Security Center calls it "Windows Defender" even on Windows 11."""

NO_SECURITY_CENTER_MARKER: Final = "NO_SECURITY_CENTER"

# The namespace check makes "this is Windows Server" an answer instead of a failure, so a
# server does not report an error on every run while a broken WMI on a workstation still does.
SECURITY_CENTER_SCRIPT: Final = (
    "$ErrorActionPreference = 'Stop'; "
    "if (-not (Get-CimInstance -Namespace root -ClassName __NAMESPACE "
    "-Filter \"Name='SecurityCenter2'\")) "
    f"{{ '{NO_SECURITY_CENTER_MARKER}'; exit 0 }}; "
    "Get-CimInstance -Namespace root/SecurityCenter2 -ClassName AntiVirusProduct | "
    "Select-Object displayName,productState,timestamp,pathToSignedProductExe | "
    "ConvertTo-Json -Compress"
)

# Selecting the properties keeps the output small and free of CIM class metadata; a property
# an older Windows lacks then comes out as null, which the parser treats like a missing key.
DEFENDER_PROPERTIES: Final = (
    "AMServiceEnabled",
    "AntivirusEnabled",
    "RealTimeProtectionEnabled",
    "AntivirusSignatureVersion",
    "AntivirusSignatureLastUpdated",
    "AntivirusSignatureAge",
    "AMEngineVersion",
    "AMProductVersion",
    "AMRunningMode",
    "IsTamperProtected",
    "QuickScanEndTime",
    "FullScanEndTime",
    "DefenderSignaturesOutOfDate",
    "ComputerState",
)
DEFENDER_STATUS_SCRIPT: Final = (
    "$ErrorActionPreference = 'Stop'; "
    f"Get-MpComputerStatus | Select-Object {','.join(DEFENDER_PROPERTIES)} | "
    "ConvertTo-Json -Compress -Depth 2"
)

# Get-MpThreat keeps resolved threats too; IsActive is the ones still on the machine.
THREATS_SCRIPT: Final = (
    "$ErrorActionPreference = 'Stop'; "
    "@(Get-MpThreat | Where-Object { $_.IsActive }).Count | ConvertTo-Json -Compress"
)

SIGNATURE_AGE_NEVER: Final = frozenset({4294967295, 65535})
"""UINT32_MAX / UINT16_MAX: Defender's "never updated", not an age in days."""

EARLIEST_REAL_DATE: Final = datetime(2001, 1, 1, tzinfo=UTC)
"""Defender did not exist before this; earlier dates are FILETIME/DateTime zero placeholders."""

FUTURE_TOLERANCE: Final = timedelta(days=1)
MAX_SHORT_TEXT: Final = 256

ProductMode = Literal["on", "off", "snoozed", "expired", "unknown"]
WireMode = Literal["active", "passive", "edr_block", "disabled", "unknown"]

_STATE_MASK: Final = 0xF000
_SIGNATURE_MASK: Final = 0x00F0
_SIGNATURES_OUT_OF_DATE_BIT: Final = 0x0010
_OWNER_MASK: Final = 0x0F00
_OWNER_MICROSOFT: Final = 0x0100
_MAX_PRODUCT_STATE: Final = 0xFFFFFF
_Parsed = TypeVar("_Parsed")
_STATE_NIBBLE_MODES: Final[dict[int, ProductMode]] = {
    0x0: "off",
    0x1: "on",
    0x2: "snoozed",
    0x3: "expired",
}

# "\/Date(1700000000000)\/" after JSON unescaping; an offset suffix is display-only in the
# Microsoft format (the number is already UTC milliseconds).
_MS_JSON_DATE: Final = re.compile(r"^/Date\((-?\d+)(?:[+-]\d{4})?\)/$")
_PLACEHOLDER_VERSION: Final = re.compile(r"0+(?:\.0+)*")


class ProductState(msgspec.Struct, frozen=True):
    """The decoded bit fields of a Security Center ``productState``.

    ``enabled`` and ``signatures_up_to_date`` are None for bit patterns Windows does not
    document, so that "unknown" never reads as "off" downstream.
    """

    enabled: bool | None
    mode: ProductMode
    signatures_up_to_date: bool | None
    owner_microsoft: bool
    raw: str


class AvParseError(ValueError):
    """PowerShell printed something that is not the JSON our script asks for."""


def decode_product_state(state: int) -> ProductState:
    """Decode the 24-bit ``productState`` by its bit fields, never by a table of known values.

    Tables of known values break on the first product they do not list; the bit layout is
    what every product writes, including ones released after this code.
    """
    if isinstance(state, bool) or not isinstance(state, int):
        raise ValueError(f"productState must be an integer, not {type(state).__name__}")
    if state < 0 or state > _MAX_PRODUCT_STATE:
        raise ValueError(f"productState {state} is outside 0..0xFFFFFF")
    mode = _STATE_NIBBLE_MODES.get((state & _STATE_MASK) >> 12, "unknown")
    signature_bits = state & _SIGNATURE_MASK
    signatures_up_to_date: bool | None
    if signature_bits & _SIGNATURES_OUT_OF_DATE_BIT:
        signatures_up_to_date = False
    elif signature_bits == 0:
        signatures_up_to_date = True
    else:
        signatures_up_to_date = None
    return ProductState(
        enabled=None if mode == "unknown" else mode == "on",
        mode=mode,
        signatures_up_to_date=signatures_up_to_date,
        owner_microsoft=(state & _OWNER_MASK) == _OWNER_MICROSOFT,
        raw=f"0x{state:06x}",
    )


# --- Security Center -----------------------------------------------------------------------


def parse_security_center(json_text: str, now: datetime) -> list[AvProduct]:
    """Products registered with Security Center; [] when none (or on Windows Server).

    ConvertTo-Json prints one product as a bare object and none as nothing or ``null``.
    Raises ``AvParseError`` when the output is not that shape.
    """
    _require_aware(now)
    text = _clean_output(json_text)
    if text == NO_SECURITY_CENTER_MARKER:
        return []
    document = _load_json(text, "Security Center")
    if document is None:
        return []
    entries = document if isinstance(document, list) else [document]
    products = []
    for entry in entries:
        if not isinstance(entry, dict):
            raise AvParseError(f"Security Center entry is {type(entry).__name__}, not an object")
        products.append(_security_center_product(entry, now))
    return products


def _security_center_product(entry: Mapping[str, Any], now: datetime) -> AvProduct:
    name = _text(entry.get("displayName")) or "unnamed product"
    state = _product_state(entry.get("productState"))
    reported_at = _rfc1123_time(entry.get("timestamp"), now)
    if state is None:
        return AvProduct(name=name, source="security_center", last_update=reported_at)
    return AvProduct(
        name=name,
        source="security_center",
        enabled=state.enabled,
        running=_running_from_state(state.mode),
        realtime_protection=None if state.mode == "unknown" else state.mode == "on",
        signatures_up_to_date=state.signatures_up_to_date,
        mode=_wire_mode_from_state(state.mode),
        last_update=reported_at,
        raw_state=state.raw,
    )


def _running_from_state(mode: ProductMode) -> bool | None:
    """A product can only report "on" or "snoozed" while its service runs; "off" and
    "expired" say nothing about the process (passive Defender reads "off" yet runs)."""
    return True if mode in ("on", "snoozed") else None


def _wire_mode_from_state(mode: ProductMode) -> WireMode:
    # Snoozed (paused by a user) and expired (licence lapsed) both mean Security Center does
    # not count the product as protecting; raw_state keeps the distinction for the collector.
    if mode == "on":
        return "active"
    if mode == "unknown":
        return "unknown"
    return "disabled"


def _product_state(value: object) -> ProductState | None:
    number = _integer(value)
    if number is None:
        return None
    try:
        return decode_product_state(number)
    except ValueError:
        return None


def _rfc1123_time(value: object, now: datetime) -> datetime | None:
    """The time the product last reported to Security Center ("Mon, 18 Nov 2024 02:13:05 GMT")."""
    text = _text(value)
    if not text:
        return None
    try:
        parsed = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if parsed.tzinfo is None:  # "-0000" means UTC with an unknown local zone (RFC 2822)
        parsed = parsed.replace(tzinfo=UTC)
    return _plausible(parsed.astimezone(UTC), now)


# --- Defender ------------------------------------------------------------------------------


def parse_defender_status(
    json_text: str, now: datetime, max_signature_age_hours: float
) -> AvProduct:
    """Defender's own view (``Get-MpComputerStatus``); raises ``AvParseError`` on garbage.

    Passive mode (another product is primary) is ``mode="passive"``, not disabled.
    """
    _require_aware(now)
    document = _load_json(_clean_output(json_text), "Get-MpComputerStatus")
    if not isinstance(document, dict):
        raise AvParseError(f"Get-MpComputerStatus printed {type(document).__name__}, not an object")
    status: dict[str, Any] = document
    enabled = _flag(status.get("AntivirusEnabled"))
    signature_time, signature_age_hours = _signature_age(status, now)
    out_of_date = _flag(status.get("DefenderSignaturesOutOfDate"))
    # Defender's own flag stays false for signatures that never arrived or are 400 days
    # old, so it can only say "out of date"; "up to date" also needs a known age within
    # the configured maximum, as for every other product.
    signatures_up_to_date: bool | None
    if out_of_date is True or _signatures_never_updated(status):
        signatures_up_to_date = False
    elif signature_age_hours is not None:
        signatures_up_to_date = signature_age_hours <= max_signature_age_hours
    elif out_of_date is False:
        signatures_up_to_date = False  # the flag alone proves nothing without an age
    else:
        signatures_up_to_date = None
    return AvProduct(
        name=DEFENDER_NAME,
        source="defender",
        enabled=enabled,
        running=_flag(status.get("AMServiceEnabled")),
        realtime_protection=_flag(status.get("RealTimeProtectionEnabled")),
        signatures_up_to_date=signatures_up_to_date,
        signature_version=_version(status.get("AntivirusSignatureVersion")),
        signature_time=signature_time,
        signature_age_hours=signature_age_hours,
        engine_version=_version(status.get("AMEngineVersion")),
        product_version=_version(status.get("AMProductVersion")),
        mode=_defender_mode(status.get("AMRunningMode"), enabled),
        tamper_protection=_flag(status.get("IsTamperProtected")),
        last_quick_scan=_powershell_time(status.get("QuickScanEndTime"), now),
        last_full_scan=_powershell_time(status.get("FullScanEndTime"), now),
    )


def _signatures_never_updated(status: Mapping[str, Any]) -> bool:
    return _integer(status.get("AntivirusSignatureAge")) in SIGNATURE_AGE_NEVER


def _signature_age(
    status: Mapping[str, Any], now: datetime
) -> tuple[datetime | None, float | None]:
    """(time of the signatures, their age in hours), both None when they were never updated.

    The timestamp gives hours; ``AntivirusSignatureAge`` only whole days, so it is the fallback.
    """
    if _signatures_never_updated(status):
        return None, None
    updated = _powershell_time(status.get("AntivirusSignatureLastUpdated"), now)
    if updated is not None:
        return updated, max(0.0, (now - updated).total_seconds() / 3600)
    age_days = _integer(status.get("AntivirusSignatureAge"))
    if age_days is None or not 0 <= age_days < max(SIGNATURE_AGE_NEVER):
        return None, None
    return None, float(age_days * 24)


def _defender_mode(value: object, antivirus_enabled: bool | None) -> WireMode:
    running_mode = (_text(value) or "").casefold()
    if "passive" in running_mode:  # "Passive Mode", "SxS Passive Mode"
        return "passive"
    if "edr" in running_mode:  # "EDR Block Mode"
        return "edr_block"
    if "not running" in running_mode:
        return "disabled"
    if running_mode not in ("normal", ""):
        return "unknown"
    # "Normal", or no AMRunningMode at all (1607 and older, which had no passive mode): the
    # engine's mode is then whatever AntivirusEnabled says.
    if antivirus_enabled is None:
        return "active" if running_mode else "unknown"
    return "active" if antivirus_enabled else "disabled"


def parse_threat_detections(json_text: str) -> int:
    """Count of active threats printed by ``THREATS_SCRIPT`` (a bare number, or ``{"Count": n}``
    from the Measure-Object variant); raises ``AvParseError`` on anything else."""
    text = _clean_output(json_text)
    document = _load_json(text, "Get-MpThreat")
    if isinstance(document, dict):
        document = document.get("Count")
    count = _integer(document)
    if count is None or count < 0:
        raise AvParseError(f"threat count is not a non-negative integer: {text[:80]!r}")
    return count


# --- collection ----------------------------------------------------------------------------


def collect_windows_av(
    context: ProbeContext, now: datetime
) -> tuple[list[AvProduct], list[ProbeError]]:
    """Run the PowerShell queries and merge them; every failure is a ``ProbeError``."""
    errors: list[ProbeError] = []
    max_age = context.settings.av.max_signature_age_hours
    center_products = _run_and_parse(
        context,
        SECURITY_CENTER_SCRIPT,
        "security center",
        lambda text: parse_security_center(text, now),
        errors,
    )
    defender = _run_and_parse(
        context,
        DEFENDER_STATUS_SCRIPT,
        "defender",
        lambda text: parse_defender_status(text, now, max_age),
        errors,
    )
    if defender is not None:
        threats = _run_and_parse(
            context, THREATS_SCRIPT, "defender threats", parse_threat_detections, errors
        )
        if threats is not None:
            defender = msgspec.structs.replace(defender, threats_found=threats)
    return merge_defender(center_products or [], defender), errors


def merge_defender(center_products: list[AvProduct], defender: AvProduct | None) -> list[AvProduct]:
    """Fold Defender's details into Security Center's Defender entry (one product, not two).

    Defender's own fields win: Security Center shows passive Defender as "off", which is the
    very confusion the wire's ``mode`` exists to avoid. Security Center's raw state is kept.
    """
    if defender is None:
        return list(center_products)
    merged: list[AvProduct] = []
    folded = False
    for product in center_products:
        if not folded and _is_defender_entry(product):
            merged.append(_overlay(product, defender))
            folded = True
        else:
            merged.append(product)
    if not folded:
        merged.append(defender)
    return merged


def _is_defender_entry(product: AvProduct) -> bool:
    """Microsoft's only antivirus in Security Center is Defender; the owner bits say so even
    when the display name is localised. The name is the fallback for an unreadable state."""
    if product.raw_state is not None:
        return decode_product_state(int(product.raw_state, 16)).owner_microsoft
    return product.name.casefold() in ("windows defender", DEFENDER_NAME.casefold())


def _overlay(center: AvProduct, defender: AvProduct) -> AvProduct:
    fields = {name: getattr(center, name) for name in AvProduct.__struct_fields__}
    fields.update(
        (name, getattr(defender, name))
        for name in AvProduct.__struct_fields__
        if getattr(defender, name) is not None
    )
    if defender.mode == "unknown" and center.mode is not None:
        # Defender's "unknown" is no answer (neither AMRunningMode nor AntivirusEnabled came
        # back), so Security Center's decoded state stands.
        fields["mode"] = center.mode
    return AvProduct(**fields)


def _run_and_parse(
    context: ProbeContext,
    script: str,
    what: str,
    parse: Callable[[str], _Parsed],
    errors: list[ProbeError],
) -> _Parsed | None:
    argv = [context.settings.av.powershell, "-NoProfile", "-NonInteractive", "-Command", script]
    try:
        result = context.run(argv, timeout_s=context.settings.av.command_timeout_s)
    except CommandError as exc:
        errors.append(_probe_error(exc.reason, f"{what}: {exc.detail}"))
        return None
    try:
        return parse(result.stdout)
    except ValueError as exc:  # AvParseError, and anything int()/json raise on odd input
        errors.append(_probe_error("parse", f"{what}: {exc}"))
        return None


def _probe_error(
    reason: Literal["timeout", "not_found", "parse", "permission", "failed"], detail: str
) -> ProbeError:
    return ProbeError(probe=PROBE_NAME, reason=reason, detail=detail[:4096])


# --- value helpers -------------------------------------------------------------------------


def _require_aware(now: datetime) -> None:
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError("now must carry a time zone")


def _clean_output(text: str) -> str:
    return text.lstrip("\ufeff").strip()


def _load_json(text: str, what: str) -> Any:
    if not text:
        return None
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as exc:  # ValueError also covers over-long integers
        raise AvParseError(f"{what} output is not JSON ({exc}): {text[:80]!r}") from None


def _text(value: object) -> str | None:
    if not isinstance(value, str):
        return None
    stripped = value.strip()
    return stripped[:MAX_SHORT_TEXT] if stripped else None


def _version(value: object) -> str | None:
    """A version string, or None for Defender's "0.0.0.0": it prints that when no engine or
    signatures are loaded (not running, never updated), and a fleet report must not list it
    as a version any more than a 1601 placeholder as a date."""
    text = _text(value)
    if text is None or _PLACEHOLDER_VERSION.fullmatch(text):
        return None
    return text


def _flag(value: object) -> bool | None:
    return value if isinstance(value, bool) else None


def _integer(value: object) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and re.fullmatch(r"\s*-?\d{1,20}\s*", value):
        return int(value)
    return None


def _powershell_time(value: object, now: datetime) -> datetime | None:
    """A DateTime as ConvertTo-Json prints it: ``/Date(ms)/`` in Windows PowerShell 5.1,
    ISO 8601 in PowerShell 7, or 5.1's ``{"value": …}`` wrapper for extended DateTimes."""
    if isinstance(value, dict):
        value = value.get("value")
    text = _text(value)
    if text is None:
        return None
    parsed: datetime | None
    match = _MS_JSON_DATE.match(text)
    if match:
        milliseconds = int(match.group(1))
        try:
            parsed = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=milliseconds)
        except OverflowError:
            return None
    else:
        try:
            parsed = datetime.fromisoformat(text)
        except ValueError:
            return None
        if parsed.tzinfo is None:
            # PowerShell prints DateTimes of unspecified kind without an offset; they are the
            # local time of this machine, which is also where the agent runs.
            parsed = parsed.astimezone()
    return _plausible(parsed.astimezone(UTC), now)


def _plausible(moment: datetime, now: datetime) -> datetime | None:
    """Drop placeholder dates (year 1 / 1601 / 1970) and dates from a badly wrong clock."""
    if moment < EARLIEST_REAL_DATE or moment > now + FUTURE_TOLERANCE:
        return None
    return moment
