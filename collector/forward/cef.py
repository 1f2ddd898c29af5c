"""ArcSight Common Event Format (CEF:0) for alert notifications.

SIEMs keep only the extension keys their CEF dictionary knows; anything CampusWatch-specific
therefore travels in the labelled custom strings ``cs1``…``cs6`` instead of invented keys.
Free text (``msg``) goes last so that a truncated UDP datagram loses prose, not identity.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from datetime import datetime
from typing import Final

from campuswatch.collector.forward import PRODUCT, PRODUCT_VERSION, VENDOR
from campuswatch.collector.signals import CEF_SEVERITY, AlertNotification, notification_in

EXTENSION_KEY: Final = re.compile(r"[A-Za-z0-9]+")
# Control characters other than CR/LF have no CEF escape; a SIEM's line reader would choke on
# them (NUL ends C strings, VT/FF split lines in some relays), so they become spaces.
_OTHER_CONTROLS: Final = re.compile(r"[\x00-\x09\x0b\x0c\x0e-\x1f\x7f]")
_MAC: Final = re.compile(r"[0-9A-Fa-f]{2}([:-]?)(?:[0-9A-Fa-f]{2}\1){4}[0-9A-Fa-f]{2}")

CUSTOM_STRING_LABELS: Final = (
    ("cs1", "schoolId"),
    ("cs2", "districtId"),
    ("cs3", "provinceId"),
    ("cs4", "siteId"),
    ("cs5", "fingerprint"),
    ("cs6", "state"),
)


def escape_header(value: str) -> str:
    """Header fields: backslash and pipe escaped; line breaks become spaces (no escape exists)."""
    value = _OTHER_CONTROLS.sub(" ", value)
    value = value.replace("\\", "\\\\").replace("|", "\\|")
    return value.replace("\r\n", " ").replace("\r", " ").replace("\n", " ")


def escape_extension_value(value: str) -> str:
    """Extension values: backslash, equals sign and line breaks escaped; pipes stay as they are."""
    value = _OTHER_CONTROLS.sub(" ", value)
    value = value.replace("\\", "\\\\").replace("=", "\\=")
    return value.replace("\r", "\\r").replace("\n", "\\n")


def epoch_ms(moment: datetime) -> int:
    """Milliseconds since the epoch, the one CEF time format every SIEM accepts without a zone."""
    return int(moment.timestamp() * 1000)


def normalise_ip(value: str | None) -> str | None:
    if not value:
        return None
    try:
        return str(ipaddress.ip_address(value.strip()))
    except ValueError:
        return None


def normalise_mac(value: str | None) -> str | None:
    """``AA:BB:CC:DD:EE:FF`` (the CEF ``smac`` format), or None for anything not a MAC."""
    if not value or not _MAC.fullmatch(value.strip()):
        return None
    digits = re.sub(r"[:-]", "", value.strip()).upper()
    return ":".join(digits[i : i + 2] for i in range(0, 12, 2))


def extension_fields(n: AlertNotification) -> list[tuple[str, str]]:
    """The (key, raw value) pairs of the extension, in output order, empty values left out."""
    fields: list[tuple[str, str | int | None]] = [
        ("rt", epoch_ms(n.at)),
        ("start", epoch_ms(n.first_seen)),
        ("end", epoch_ms(n.last_seen)),
        ("externalId", str(n.alert_id)),
        ("act", n.event),
        ("outcome", n.state),
        ("cnt", n.occurrences),
        ("dvchost", n.collector_id),
        ("deviceExternalId", n.device_id),
        ("shost", n.hostname),
        ("dhost", n.hostname),
        ("src", normalise_ip(n.ip)),
        ("smac", normalise_mac(n.mac)),
        ("suser", n.actor),
        ("cat", ",".join(tag for tag in n.tags if tag)),
    ]
    custom_values = (n.school_id, n.district_id, n.province_id, n.site_id, n.fingerprint, n.state)
    for (key, label), value in zip(CUSTOM_STRING_LABELS, custom_values, strict=True):
        if value:
            fields.append((key, value))
            fields.append((f"{key}Label", label))
    fields += [("request", n.url), ("reason", n.note), ("msg", n.summary)]
    return [(key, str(value)) for key, value in fields if value is not None and value != ""]


def render_extension(fields: Iterable[tuple[str, str]]) -> str:
    parts: list[str] = []
    for key, value in fields:
        if not EXTENSION_KEY.fullmatch(key):
            raise ValueError(f"CEF extension key {key!r} is not alphanumeric")
        parts.append(f"{key}={escape_extension_value(value)}")
    return " ".join(parts)


def render_cef(
    n: AlertNotification,
    *,
    vendor: str = VENDOR,
    product: str = PRODUCT,
    version: str = PRODUCT_VERSION,
    language: str = "en",
) -> str:
    """One CEF line (no trailing newline): ``CEF:0|Vendor|Product|Version|Sig|Name|Sev|Ext``.

    Name and ``msg`` are in ``language`` (the destination's setting).
    """
    n = notification_in(n, language)
    header = [vendor, product, version, n.rule_id, n.rule_title or n.rule_id]
    severity = CEF_SEVERITY.get(n.level, 5)
    escaped = "|".join(escape_header(field) for field in header)
    return f"CEF:0|{escaped}|{severity}|{render_extension(extension_fields(n))}"
