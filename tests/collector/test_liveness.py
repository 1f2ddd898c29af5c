from __future__ import annotations

from datetime import UTC, datetime, timedelta

from campuswatch.collector.liveness import LivenessTracker
from campuswatch.collector.settings import LivenessSettings

T0 = datetime(2026, 11, 23, 8, 0, tzinfo=UTC)


def tracker() -> LivenessTracker:
    return LivenessTracker(LivenessSettings())


def test_state_and_will_drive_online_status() -> None:
    live = tracker()
    change = live.observe("pc-1", "s1", "pc", T0, state=True)
    assert change is not None and change.online
    assert live.status("pc-1", T0) == "online"
    change = live.observe("pc-1", "s1", "pc", T0 + timedelta(minutes=1), state=False, reason="will")
    assert change is not None and not change.online and change.reason == "will"
    assert live.status("pc-1", T0 + timedelta(minutes=1)) == "offline"
    assert live.observe("pc-1", "s1", "pc", T0 + timedelta(minutes=2)) is not None


def test_heartbeat_timeout_by_device_type() -> None:
    live = tracker()
    live.observe("pc-1", "s1", "pc", T0)
    live.observe("cam-1", "s1", "camera", T0)
    changes = live.expire(T0 + timedelta(minutes=6))
    assert [c.device_id for c in changes] == ["pc-1"]  # pcs: 5 min, cameras: default 10 min
    assert [c.device_id for c in live.expire(T0 + timedelta(minutes=11))] == ["cam-1"]
    assert live.expire(T0 + timedelta(minutes=12)) == []


def test_bouncing_device_is_flapping_not_ten_alerts() -> None:
    live = tracker()
    for n in range(10):
        live.observe("ap-1", "s1", "access_point", T0 + timedelta(seconds=5 * n), state=n % 2 == 0)
    assert live.status("ap-1", T0 + timedelta(seconds=50)) == "flapping"
    assert live.status("ap-1", T0 + timedelta(minutes=5)) in ("online", "offline")


def test_school_whose_devices_all_went_silent_is_unreachable() -> None:
    live = tracker()
    for n in range(5):
        live.observe(f"pc-{n}", "school-a", "pc", T0)
    live.observe("pc-x", "school-b", "pc", T0 + timedelta(minutes=8))
    live.expire(T0 + timedelta(minutes=10))
    sites = live.sites(T0 + timedelta(minutes=10))
    assert sites["school-a"].unreachable and sites["school-a"].offline == 5
    assert not sites["school-b"].unreachable


def test_the_register_verdict_is_followed_and_an_older_one_undoes_nothing() -> None:
    live = tracker()
    live.heard("pc-1", "s1", T0)
    change = live.follow("pc-1", "s1", True, T0, "connected")
    assert change is not None and change.online and live.status("pc-1", T0) == "online"
    # The will, however old its own time, is what the register now says.
    change = live.follow("pc-1", "s1", False, T0 + timedelta(hours=2), "will")
    assert change is not None and change.reason == "will"
    assert live.status("pc-1", T0 + timedelta(hours=2)) == "offline"
    # Traffic after it (the device is back) wins; a stale verdict read earlier does not.
    assert live.observe("pc-1", "s1", "pc", T0 + timedelta(hours=3)) is not None
    assert live.follow("pc-1", "s1", False, T0 + timedelta(hours=2), "will") is None
    assert live.status("pc-1", T0 + timedelta(hours=3)) == "online"
