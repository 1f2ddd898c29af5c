"""English msgids for the enumerations the UI shows; templates translate them with ``_``.

``N_`` only marks a string for extraction (the catalogue test finds it); translation
happens at render time in the user's language.
"""

from __future__ import annotations

from typing import Final


def N_(message: str) -> str:
    return message


LIVENESS: Final = {
    "online": N_("online"),
    "offline": N_("offline"),
    "flapping": N_("flapping"),
    "unknown": N_("unknown"),
}
AV_STATUS: Final = {
    "protected": N_("protected"),
    "at_risk": N_("at risk"),
    "no_av": N_("no antivirus"),
    "error": N_("error"),
}
ASSET_STATUS: Final = {
    "in_service": N_("in service"),
    "in_repair": N_("in repair"),
    "lost": N_("lost"),
    "retired": N_("retired"),
}
ALERT_STATE: Final = {
    "firing": N_("firing"),
    "acknowledged": N_("acknowledged"),
    "resolved": N_("resolved"),
}
ALERT_LEVEL: Final = {
    "critical": N_("critical"),
    "high": N_("high"),
    "medium": N_("medium"),
    "low": N_("low"),
    "info": N_("info"),
}
AUDIT_ACTION: Final = {
    "opened": N_("opened"),
    "updated": N_("updated"),
    "acknowledged": N_("acknowledged"),
    "unacknowledged": N_("unacknowledged"),
    "resolved": N_("resolved"),
    "reopened": N_("reopened"),
    "silenced": N_("silenced"),
    "unsilenced": N_("unsilenced"),
    "inhibited": N_("inhibited"),
    "uninhibited": N_("uninhibited"),
    "escalated": N_("escalated"),
    "notified": N_("notified"),
    "commented": N_("commented"),
}
ASSET_KIND: Final = {
    "pc": N_("PC"),
    "server": N_("server"),
    "laptop": N_("laptop"),
    "projector": N_("projector"),
    "interactive_panel": N_("interactive panel"),
    "display": N_("display"),
    "camera": N_("camera"),
    "env_sensor": N_("environment sensor"),
    "access_point": N_("access point"),
    "switch": N_("switch"),
    "router": N_("router"),
    "firewall": N_("firewall"),
    "printer": N_("printer"),
    "smart_plug": N_("smart plug"),
    "access_controller": N_("access controller"),
    "scanner": N_("network scanner"),
    "information_system": N_("information system"),
    "other": N_("other"),
}
ASSET_FIELD: Final = {
    "asset_tag": N_("Asset tag"),
    "kind": N_("Kind"),
    "name": N_("Name"),
    "vendor": N_("Vendor"),
    "model": N_("Model"),
    "serial": N_("Serial number"),
    "macs": N_("MAC addresses"),
    "device_id": N_("Device ID"),
    "os_name": N_("Operating system"),
    "os_version": N_("OS version"),
    "firmware_version": N_("Firmware version"),
    "site_id": N_("Site"),
    "room": N_("Room"),
    "owner": N_("Owner"),
    "status": N_("Status"),
    "registered": N_("Registered"),
    "ignored": N_("Ignored (not school equipment)"),
    "purchase_date": N_("Purchase date"),
    "warranty_end": N_("Warranty end"),
    "security_level": N_("Security level"),
    "protection_plan_approved_on": N_("Protection plan approved on"),
    "notes": N_("Notes"),
    "created": N_("Created"),
    "merged_asset": N_("Merged asset"),
}
LAST_SEEN_FILTER: Final = {
    "1d": N_("seen in the last 24 hours"),
    "stale7": N_("not seen for 7 days"),
    "stale30": N_("not seen for 30 days"),
    "never": N_("never seen"),
}
REVIEW_FILTER: Final = {
    "registered": N_("registered"),
    "discovered": N_("discovered, not yet decided"),
    "to_confirm": N_("to confirm"),
    "unknown": N_("unknown device"),
    "ignored": N_("ignored"),
}
"""Where an asset stands with the facilities manager (``register.review_condition``); the
badge of each row uses the same words (``discovered`` is only a filter)."""
MESSAGE_KIND: Final = {
    "state": N_("state"),
    "hello": N_("identity"),
    "inventory": N_("inventory"),
    "av": N_("antivirus"),
    "net": N_("connectivity"),
    "health": N_("health"),
    "telemetry": N_("telemetry"),
    "event": N_("event"),
    "discovery": N_("discovery"),
}
UPLINK: Final = {
    "fibre": N_("fibre"),
    "4g": N_("4G"),
    "5g": N_("5G"),
    "adsl": N_("ADSL"),
    "satellite": N_("satellite"),
    "other": N_("other"),
    "unknown": N_("unknown"),
}
ROLE: Final = {
    "admin": N_("administrator"),
    "soc": N_("SOC analyst"),
    "facilities": N_("facilities manager"),
    "viewer": N_("viewer"),
}
REPORT_KIND: Final = {
    "week": N_("Week"),
    "month": N_("Month"),
    "quarter": N_("Quarter"),
    "six-month": N_("Six months (plan)"),
    "annual": N_("Annual (plan)"),
    "semester1": N_("Semester 1"),
    "semester2": N_("Semester 2"),
    "school-year": N_("School year"),
    "year": N_("Calendar year"),
}
REPORT_STATE: Final = {
    "on_time": N_("on time"),
    "late": N_("submitted late"),
    "due": N_("due"),
    "overdue": N_("overdue"),
    "upcoming": N_("upcoming"),
    "on_demand": N_("on request"),
    "unscheduled": N_("not scheduled"),
    "no_data": N_("no data (before the install)"),
}
LANGUAGE: Final = {
    "vi": N_("Vietnamese"),
    "en": N_("English"),
}
