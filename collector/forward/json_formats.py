"""Alert notifications as JSON documents: Elastic Common Schema and OCSF Detection Finding.

Both are plain dicts (JSON-ready: strings, numbers, lists) so a destination only has to
``json.dumps`` them. Severity numbers agree with CEF so one SOC sees the same value in every
format.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any, Final

from campuswatch.collector.forward import PRODUCT, PRODUCT_VERSION, VENDOR
from campuswatch.collector.forward.cef import epoch_ms, normalise_ip, normalise_mac
from campuswatch.collector.signals import (
    CEF_SEVERITY,
    AlertEventType,
    AlertNotification,
    Level,
    notification_in,
)

ECS_VERSION: Final = "8.11.0"
OCSF_VERSION: Final = "1.1.0"

OCSF_CATEGORY_FINDINGS: Final = 2
OCSF_CLASS_DETECTION_FINDING: Final = 2004
OCSF_ACTIVITY: Final[dict[AlertEventType, tuple[int, str]]] = {
    "opened": (1, "Create"),
    "updated": (2, "Update"),
    "repeated": (2, "Update"),
    "escalated": (2, "Update"),
    "acknowledged": (2, "Update"),
    "reopened": (2, "Update"),
    "resolved": (3, "Close"),
}
OCSF_SEVERITY: Final[dict[Level, tuple[int, str]]] = {
    "info": (1, "Informational"),
    "low": (2, "Low"),
    "medium": (3, "Medium"),
    "high": (4, "High"),
    "critical": (5, "Critical"),
}
# Detection Finding status_id (OCSF 1.1): 1 New, 2 In Progress, 3 Suppressed, 4 Resolved.
OCSF_STATUS: Final[dict[str, tuple[int, str]]] = {
    "firing": (1, "New"),
    "acknowledged": (2, "In Progress"),
    "silenced": (3, "Suppressed"),
    "resolved": (4, "Resolved"),
}
_LABEL_KEY_UNSAFE: Final = re.compile(r"[^A-Za-z0-9_]")


def iso_utc(moment: datetime) -> str:
    """RFC 3339 in UTC with milliseconds and ``Z``, as Elasticsearch's date type expects."""
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _identity_labels(n: AlertNotification) -> dict[str, str]:
    identity = {
        "school_id": n.school_id,
        "district_id": n.district_id,
        "province_id": n.province_id,
        "site_id": n.site_id,
        "fingerprint": n.fingerprint,
        "state": n.state,
        "alert_id": str(n.alert_id),
    }
    return {key: value for key, value in identity.items() if value}


def _labels(n: AlertNotification) -> dict[str, str]:
    # ECS label keys must not contain dots (they would become object paths); the alert's
    # identity wins over a rule label of the same name.
    merged = {_LABEL_KEY_UNSAFE.sub("_", key): str(value) for key, value in n.labels.items()}
    merged.update(_identity_labels(n))
    return merged


def _drop_empty(document: dict[str, Any]) -> dict[str, Any]:
    """Remove None, empty strings, lists and objects, recursively; SIEMs index "" as a value."""
    cleaned: dict[str, Any] = {}
    for key, value in document.items():
        if isinstance(value, dict):
            value = _drop_empty(value)
        if value is None or value == "" or value == [] or value == {}:
            continue
        cleaned[key] = value
    return cleaned


def render_ecs(
    n: AlertNotification,
    *,
    vendor: str = VENDOR,
    product: str = PRODUCT,
    version: str = PRODUCT_VERSION,
    language: str = "en",
) -> dict[str, Any]:
    """The notification as one ECS document (``event.kind: alert``).

    Title, message and description in ``language`` (the destination's setting).
    """
    n = notification_in(n, language)
    ip = normalise_ip(n.ip)
    mac = normalise_mac(n.mac)
    document: dict[str, Any] = {
        "@timestamp": iso_utc(n.at),
        "ecs": {"version": ECS_VERSION},
        "message": n.summary,
        "tags": [tag for tag in n.tags if tag],
        "labels": _labels(n),
        "event": {
            "kind": "alert",
            "category": ["host"],
            "type": ["info"],
            "action": n.event,
            "id": n.event_id,
            "severity": CEF_SEVERITY.get(n.level, 5),
            "created": iso_utc(n.at),
            "start": iso_utc(n.first_seen),
            # Last observed while open (repeats move it), the end once resolved.
            "end": iso_utc(n.last_seen),
            "dataset": "campuswatch.alert",
            "module": "campuswatch",
            "provider": n.collector_id,
            "reason": n.note,
            "url": n.url,
        },
        "rule": {
            "id": n.rule_id,
            "name": n.rule_title,
            "description": n.description,
            "ruleset": "campuswatch",
        },
        "host": {
            "id": n.device_id,
            "name": n.hostname,
            "hostname": n.hostname,
            "ip": [ip] if ip else [],
            # ECS recommends RFC 7042 notation: upper-case octets joined by hyphens.
            "mac": [mac.replace(":", "-")] if mac else [],
        },
        "observer": {
            "name": n.collector_id,
            "hostname": n.collector_id,
            "vendor": vendor,
            "product": product,
            "version": version,
            "type": "monitoring",
        },
        "user": {"name": n.actor},
        # Custom fields under the product's own name, as ECS asks for non-ECS data.
        "campuswatch": {
            "alert": {
                "id": n.alert_id,
                "level": n.level,
                "state": n.state,
                "fingerprint": n.fingerprint,
                "occurrences": n.occurrences,
                "first_seen": iso_utc(n.first_seen),
                "last_seen": iso_utc(n.last_seen),
                "runbook_en": n.runbook_en,
                "runbook_vi": n.runbook_vi,
            },
            "site_id": n.site_id,
            "school_id": n.school_id,
            "district_id": n.district_id,
            "province_id": n.province_id,
        },
    }
    return _drop_empty(document)


def render_ocsf(
    n: AlertNotification,
    *,
    vendor: str = VENDOR,
    product: str = PRODUCT,
    version: str = PRODUCT_VERSION,
    language: str = "en",
) -> dict[str, Any]:
    """The notification as one OCSF 1.1.0 Detection Finding (class_uid 2004).

    Title, message and description in ``language`` (the destination's setting).
    """
    n = notification_in(n, language)
    activity_id, activity_name = OCSF_ACTIVITY.get(n.event, (99, "Other"))
    severity_id, severity_name = OCSF_SEVERITY.get(n.level, (0, "Unknown"))
    status_id, status_name = OCSF_STATUS.get(n.state, (0, "Unknown"))
    ip = normalise_ip(n.ip)
    mac = normalise_mac(n.mac)
    identity = _identity_labels(n)
    # An unregistered host seen on the LAN may be known by its MAC alone: then that is its uid
    # (OCSF's device needs one of ip, uid, name, hostname; a MAC does not count).
    device_uid = n.device_id or mac
    device: dict[str, Any] | None = None
    if device_uid or n.hostname or ip:
        device = {
            "type_id": 0,  # required by the device object; the alert does not say what kind
            "type": "Unknown",
            "uid": device_uid,
            "hostname": n.hostname,
            "name": n.hostname,
            "ip": ip,
            "mac": mac,
        }
    actor = {"user": {"name": n.actor}} if n.actor else None
    # device and actor are the host profile's attributes: declared when used, so a consumer
    # validating against the profiles in metadata accepts them.
    profiles = ["host"] if device or actor else []
    if device_uid or n.hostname:
        resource = {"type": "device", "uid": device_uid, "name": n.hostname}
    else:
        resource = {"type": "site", "uid": n.site_id}
    document: dict[str, Any] = {
        "class_uid": OCSF_CLASS_DETECTION_FINDING,
        "class_name": "Detection Finding",
        "category_uid": OCSF_CATEGORY_FINDINGS,
        "category_name": "Findings",
        "activity_id": activity_id,
        "activity_name": activity_name,
        "type_uid": OCSF_CLASS_DETECTION_FINDING * 100 + activity_id,
        "type_name": f"Detection Finding: {activity_name}",
        "severity_id": severity_id,
        "severity": severity_name,
        "status_id": status_id,
        "status": status_name,
        "time": epoch_ms(n.at),
        "message": n.summary,
        "metadata": {
            "version": OCSF_VERSION,
            "profiles": profiles,
            "uid": n.event_id,
            "correlation_uid": n.fingerprint,
            "product": {"name": product, "vendor_name": vendor, "version": version},
            "labels": [f"{key}:{value}" for key, value in identity.items()],
        },
        "finding_info": {
            "uid": n.fingerprint,
            "title": n.rule_title or n.rule_id,
            "desc": n.description or n.summary,
            "created_time": epoch_ms(n.first_seen),
            "first_seen_time": epoch_ms(n.first_seen),
            "last_seen_time": epoch_ms(n.last_seen),
            "modified_time": epoch_ms(n.at),
            "types": [tag for tag in n.tags if tag],
            "src_url": n.url,
            "analytic": {"uid": n.rule_id, "name": n.rule_title, "type_id": 1, "type": "Rule"},
        },
        "device": device,
        "resources": [_drop_empty(resource)],
        "count": n.occurrences,
        "actor": actor,
        "comment": n.note,
        "unmapped": {
            **identity,
            "level": n.level,
            "event": n.event,
            "runbook_en": n.runbook_en,
            "runbook_vi": n.runbook_vi,
            "labels": dict(n.labels),
        },
    }
    return _drop_empty(document)
