"""Rules engine throughput: messages/s through the shipped pack (target >= 20,000 msg/s).

Run: .venv/bin/python benchmarks/rules_engine.py [--messages N] [--tick-devices N]
Messages are decoded up front so only the engine is measured; the mix imitates a school:
mostly health/net/telemetry, some av, a few hello/state/event, ticks every simulated 30 s.

``--tick-devices N`` then times one tick (absence, ratio, windows, ``for:``) over a district
of N devices, each with a health report and, for 60 % of them, a classroom reading: a
collector ticks every 10 s, so at 100,000 devices this is a share of its core.
"""

from __future__ import annotations

import argparse
import math
import random
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from campuswatch.collector.rules.engine import RuleEngine
from campuswatch.collector.rules.loader import load_rule_pack
from campuswatch.collector.rules.testing import build_message
from campuswatch.wire.codec import DecodedMessage
from campuswatch.wire.topics import Topic

ROOT = Path(__file__).resolve().parents[1]


def make_messages(count: int, sites: int = 20, pcs: int = 50) -> list[DecodedMessage]:
    chooser = random.Random(7)
    start = datetime(2025, 3, 3, 7, 0, tzinfo=UTC)
    bodies = [
        ("health", 30, lambda: {"cpu_pct": chooser.uniform(0, 100)}),
        (
            "net",
            25,
            lambda: {
                "internet_ok": chooser.random() > 0.05,
                "loss_pct": chooser.uniform(0, 20),
                "latency_ms": chooser.uniform(5, 500),
            },
        ),
        (
            "telemetry",
            20,
            lambda: {
                "device_type": "env_sensor",
                "values": {
                    "co2_ppm": chooser.uniform(400, 2000),
                    "temperature_c": chooser.uniform(20, 38),
                },
            },
        ),
        (
            "av",
            15,
            lambda: {
                "status": chooser.choice(["protected", "at_risk"]),
                "products": [
                    {
                        "name": "Defender",
                        "source": "defender",
                        "realtime_protection": chooser.random() > 0.1,
                        "signature_age_hours": chooser.uniform(0, 200),
                    }
                ],
            },
        ),
        ("state", 5, lambda: {"status": chooser.choice(["online", "offline"])}),
        (
            "event",
            5,
            lambda: {"event_type": chooser.choice(["door_opened", "tamper", "probe_failed"])},
        ),
    ]
    kinds = [body for body in bodies for _ in range(body[1])]
    messages = []
    for index in range(count):
        kind, _, body = chooser.choice(kinds)
        site, device = f"site-{chooser.randrange(sites)}", f"pc-{chooser.randrange(pcs)}"
        at = start + timedelta(milliseconds=index * 50)
        data = {"kind": kind, "site": site, "device_id": device, **body()}
        message = build_message(data, at, index + 1)
        messages.append(DecodedMessage(Topic(site, device, kind), message, at, 0.0))
    return messages


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--messages", type=int, default=200_000)
    parser.add_argument("--tick-devices", type=int, default=0, help="time a tick over N devices")
    args = parser.parse_args()
    pack = load_rule_pack(ROOT / "rules")
    engine = RuleEngine(pack, is_registered=lambda site, key: True)
    messages = make_messages(args.messages)
    signals = 0
    began = time.perf_counter()
    next_tick = messages[0].received_at
    for decoded in messages:
        signals += len(engine.process(decoded))
        if decoded.received_at >= next_tick:
            signals += len(engine.evaluate_tick(decoded.received_at))
            next_tick = decoded.received_at + timedelta(seconds=30)
    elapsed = time.perf_counter() - began
    print(
        f"rules: {len(pack)}, messages: {len(messages)}, "
        f"devices: {engine.stats()['devices_tracked']}"
    )
    print(f"signals emitted: {signals} (transitions only)")
    print(f"rate: {len(messages) / elapsed:,.0f} messages/s ({elapsed:.2f} s, ticks included)")
    if args.tick_devices:
        tick_ms = tick_cpu_ms(args.tick_devices)
        print(f"one tick over {args.tick_devices:,} devices: {tick_ms:.0f} ms CPU (best of 5)")


def tick_cpu_ms(devices: int) -> float:
    """CPU of one ``evaluate_tick`` over ``devices`` devices, the best of five."""
    start = datetime(2025, 3, 3, 7, 0, tzinfo=UTC)
    engine = RuleEngine(load_rule_pack(ROOT / "rules"), is_registered=lambda site, key: True)
    for index in range(devices):
        site, device = f"school-{index % 333}", f"dev-{index}"
        at = start + timedelta(milliseconds=index)
        reports: list[dict[str, object]] = [{"kind": "health", "cpu_pct": 5.0}]
        if index % 5 < 3:
            reading = {"co2_ppm": 600.0, "temperature_c": 24.0}
            reports.append({"kind": "telemetry", "device_type": "env_sensor", "values": reading})
        for n, body in enumerate(reports):
            data = {"site": site, "device_id": device, **body}
            message = build_message(data, at, index * 2 + n + 1)
            engine.process(DecodedMessage(Topic(site, device, str(body["kind"])), message, at, 0.0))
    best = math.inf
    for round_ in range(5):
        began = time.process_time()
        engine.evaluate_tick(start + timedelta(seconds=120 + round_))
        best = min(best, time.process_time() - began)
    return best * 1000


if __name__ == "__main__":
    main()
