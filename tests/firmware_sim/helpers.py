"""Running a fleet on the in-memory transport with a hand-driven clock (no broker, no sleeping)."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any

from campuswatch.firmware_sim.engine import Simulator
from campuswatch.firmware_sim.fleet import build_fleet
from campuswatch.firmware_sim.scenario import Scenario
from campuswatch.firmware_sim.schoolday import SimClock
from campuswatch.firmware_sim.transport import MemoryTransport
from campuswatch.wire.codec import decode_message

TUESDAY_MORNING = datetime.fromisoformat("2025-03-04T09:30:00+07:00")


def memory_simulator(
    *,
    seed: int = 1,
    schools: int = 2,
    devices: int = 60,
    scenario: Scenario | None = None,
    start: datetime = TUESDAY_MORNING,
) -> tuple[Simulator, MemoryTransport]:
    clock = SimClock(start, manual=True)
    transport = MemoryTransport()
    # The device clock follows the simulated one, so timestamps inside bodies repeat too.
    simulator = Simulator(
        build_fleet(seed=seed, schools=schools, devices=devices),
        transport,
        clock,
        seed=seed,
        scenario=scenario,
        wall_clock=lambda: start + timedelta(seconds=clock.elapsed_s()),
    )
    simulator.start()
    return simulator, transport


def bodies(transport: MemoryTransport) -> list[tuple[str, dict[str, Any]]]:
    """(topic, body without id/ts) of every message, each checked by the wire decoder."""
    found = []
    for published in transport.published:
        decode_message(
            published.topic,
            published.payload,
            received_at=datetime.now().astimezone() + timedelta(days=3650),
        )
        body = json.loads(published.payload)
        body.pop("id")
        body.pop("ts")
        found.append((published.topic, body))
    return found


def of_kind(transport: MemoryTransport, kind: str) -> list[dict[str, Any]]:
    return [json.loads(p.payload) for p in transport.published if p.topic.endswith(f"/{kind}")]
