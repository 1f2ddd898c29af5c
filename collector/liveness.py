"""Which devices are online, with flapping damped and whole-school silence recognised.

One truth: the register (``devices.online``) decides a device's state from its ``state``
messages (by arrival, so a Last Will always takes effect) and this tracker adopts that
verdict (``follow``); what only this tracker can see, a heartbeat timeout or traffic from a
device it had timed out, it decides and the collector writes to the register in the same
pass. Sources: the retained ``state`` message and its Last Will (immediate), and a heartbeat
timeout per device type (a device whose will never fired — power cut at the switch, NAT
state lost — still goes offline when it stops talking). A device that bounces within the flap
window is shown as ``flapping`` rather than reported ten times; a school whose devices all
went silent is shown as the school being unreachable, not as N offline devices.
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Literal

from campuswatch.collector.settings import LivenessSettings

Status = Literal["online", "offline", "flapping", "unknown"]


@dataclass(slots=True)
class DeviceLiveness:
    device_id: str
    site_id: str
    device_type: str
    online: bool | None = None
    reason: str = ""
    last_seen: datetime | None = None
    changed_at: datetime | None = None
    transitions: deque[datetime] = field(default_factory=lambda: deque(maxlen=32))


@dataclass(frozen=True, slots=True)
class LivenessChange:
    device_id: str
    site_id: str
    online: bool
    reason: str
    at: datetime


@dataclass(frozen=True, slots=True)
class SiteLiveness:
    site_id: str
    devices: int
    online: int
    offline: int
    flapping: int
    unknown: int
    unreachable: bool


class LivenessTracker:
    """In-memory view fed by ingest; the database keeps the persistent copy (devices table)."""

    def __init__(self, settings: LivenessSettings) -> None:
        self.settings = settings
        self._devices: dict[str, DeviceLiveness] = {}
        self._lock = threading.Lock()

    def _timeout_for(self, device_type: str) -> timedelta:
        table = self.settings.heartbeat_timeout_s
        return timedelta(seconds=table.get(device_type, table.get("default", 600.0)))

    def _timed_out(
        self, entry: DeviceLiveness, now: datetime, cutoffs: dict[str, datetime]
    ) -> bool:
        """Online, and silent for longer than its type's heartbeat timeout. ``cutoffs`` keeps
        each type's last allowed contact for one pass over every device (100,000 in a
        district: one timedelta per type, not per device)."""
        if not entry.online or entry.last_seen is None:
            return False
        cutoff = cutoffs.get(entry.device_type)
        if cutoff is None:
            cutoff = cutoffs[entry.device_type] = now - self._timeout_for(entry.device_type)
        return entry.last_seen < cutoff

    def observe(
        self,
        device_id: str,
        site_id: str,
        device_type: str | None,
        at: datetime,
        state: bool | None = None,
        reason: str = "",
    ) -> LivenessChange | None:
        """Record traffic (``state`` None) or an explicit state message; return a change."""
        with self._lock:
            entry = self._devices.get(device_id)
            if entry is None:
                entry = DeviceLiveness(device_id, site_id, device_type or "default")
                self._devices[device_id] = entry
            entry.site_id = site_id
            if device_type:
                entry.device_type = device_type
            if (state is None or state) and (entry.last_seen is None or at > entry.last_seen):
                entry.last_seen = at
            target = True if state is None else state
            if entry.online == target:
                return None
            entry.online = target
            entry.reason = reason or ("traffic" if state is None else "state")
            entry.changed_at = at
            entry.transitions.append(at)
            return LivenessChange(device_id, site_id, target, entry.reason, at)

    def heard(self, device_id: str, site_id: str, at: datetime) -> None:
        """The device spoke (its own "online"), which restarts its heartbeat clock; what
        state it is in is the register's to say (``follow``)."""
        with self._lock:
            entry = self._devices.get(device_id)
            if entry is None:
                entry = self._devices[device_id] = DeviceLiveness(device_id, site_id, "default")
            entry.site_id = site_id
            if entry.last_seen is None or at > entry.last_seen:
                entry.last_seen = at

    def follow(
        self,
        device_id: str,
        site_id: str,
        online: bool | None,
        changed_at: datetime | None,
        reason: str,
    ) -> LivenessChange | None:
        """Adopt the register's verdict on a device's state; return a change.

        A verdict older than what this tracker decided since (traffic after a timeout,
        written to the register in a later batch) is not allowed to undo it."""
        if online is None:
            return None
        with self._lock:
            entry = self._devices.get(device_id)
            if entry is None:
                entry = DeviceLiveness(device_id, site_id, "default")
                self._devices[device_id] = entry
            entry.site_id = site_id
            if entry.online == online:
                return None
            if changed_at is None:
                entry.online, entry.reason = online, reason  # no time known: no transition
                return None
            if entry.changed_at is not None and changed_at < entry.changed_at:
                return None
            entry.online = online
            entry.reason = reason
            entry.changed_at = changed_at
            entry.transitions.append(changed_at)
            return LivenessChange(device_id, site_id, online, reason, changed_at)

    def overdue(self, now: datetime) -> list[str]:
        """Devices ``expire`` would time out now: ask the register first whether another
        collector has heard them since (``adopt``)."""
        cutoffs: dict[str, datetime] = {}
        with self._lock:
            return [
                entry.device_id
                for entry in self._devices.values()
                if self._timed_out(entry, now, cutoffs)
            ]

    def expire(self, now: datetime) -> list[LivenessChange]:
        """Mark devices offline whose heartbeat timed out."""
        changes: list[LivenessChange] = []
        cutoffs: dict[str, datetime] = {}
        with self._lock:
            for entry in self._devices.values():
                if self._timed_out(entry, now, cutoffs):
                    entry.online = False
                    entry.reason = "timeout"
                    entry.changed_at = now
                    entry.transitions.append(now)
                    changes.append(
                        LivenessChange(entry.device_id, entry.site_id, False, "timeout", now)
                    )
        return changes

    def status(self, device_id: str, now: datetime) -> Status:
        with self._lock:
            entry = self._devices.get(device_id)
            return "unknown" if entry is None else self._status(entry, now)

    def _status(self, entry: DeviceLiveness, now: datetime) -> Status:
        transitions = entry.transitions
        # Most devices have changed state a few times at most: no need to look at when.
        if len(transitions) > self.settings.flap_threshold:
            since = now - timedelta(seconds=self.settings.flap_window_s)
            if sum(1 for t in transitions if t >= since) > self.settings.flap_threshold:
                return "flapping"
        if entry.online is None:
            return "unknown"
        return "online" if entry.online else "offline"

    def sites(self, now: datetime) -> dict[str, SiteLiveness]:
        return self.summarise_sites(self.by_type(now))

    def by_type(self, now: datetime) -> dict[tuple[str, str, Status], int]:
        """(site, device type, status) → count, for the metrics endpoint."""
        counts: dict[tuple[str, str, Status], int] = {}
        with self._lock:
            for entry in self._devices.values():
                key = (entry.site_id, entry.device_type, self._status(entry, now))
                counts[key] = counts.get(key, 0) + 1
        return counts

    def summarise_sites(
        self, by_type: dict[tuple[str, str, Status], int]
    ) -> dict[str, SiteLiveness]:
        """Each site's counts and whether it is unreachable, from ``by_type``'s counts (the
        metrics endpoint needs both: one pass over the devices, not two)."""
        counts: dict[str, dict[Status, int]] = {}
        for (site_id, _device_type, status), count in by_type.items():
            bucket = counts.setdefault(
                site_id, {"online": 0, "offline": 0, "flapping": 0, "unknown": 0}
            )
            bucket[status] += count
        result = {}
        for site_id, bucket in counts.items():
            known_silent = bucket["offline"] + bucket["flapping"]
            result[site_id] = SiteLiveness(
                site_id,
                sum(bucket.values()),
                bucket["online"],
                bucket["offline"],
                bucket["flapping"],
                bucket["unknown"],
                unreachable=(
                    bucket["online"] == 0
                    and known_silent >= self.settings.site_unreachable_min_devices
                ),
            )
        return result

    def adopt(
        self,
        rows: list[tuple[str, str, str | None, bool | None, datetime | None, datetime | None]],
    ) -> None:
        """Take in what the register says other collectors sharing it have heard (device,
        site, type, online, last_seen, status_changed_at): later contact restarts a device's
        heartbeat clock here too, and a later verdict on its state is adopted. No change is
        returned: the collector that heard the device has already acted on it."""
        with self._lock:
            for device_id, site_id, device_type, online, last_seen, changed_at in rows:
                entry = self._devices.get(device_id)
                if entry is None:
                    entry = DeviceLiveness(device_id, site_id, device_type or "default")
                    self._devices[device_id] = entry
                entry.site_id = site_id
                if device_type:
                    entry.device_type = device_type
                if last_seen is not None and (
                    entry.last_seen is None or last_seen > entry.last_seen
                ):
                    entry.last_seen = last_seen
                if online is None or online == entry.online:
                    continue
                if (
                    changed_at is not None
                    and entry.changed_at is not None
                    and changed_at < entry.changed_at
                ):
                    continue  # this tracker decided since (a timeout the register has yet to see)
                entry.online, entry.reason = online, "register"
                if changed_at is not None:
                    entry.changed_at = changed_at
                    entry.transitions.append(changed_at)

    def load(self, rows: list[tuple[str, str, str | None, bool | None, datetime | None]]) -> None:
        """Seed from the devices table at start-up (device, site, type, online, last_seen)."""
        with self._lock:
            for device_id, site_id, device_type, online, last_seen in rows:
                self._devices[device_id] = DeviceLiveness(
                    device_id, site_id, device_type or "default", online, "restored", last_seen
                )
