"""Alert noise: the demo scenario through a simulated school day, counted as a SOC sees it.

The demo's fleet (same seed, schools, devices and register as ``campuswatch demo``) runs
on the simulator's in-memory transport with a hand-driven clock, and every message goes
through the collector's own ingest path (``Ingestor.process``: decoding, register, shipped
rules, alert manager) with the simulated receive time; the collector's housekeeping tick
runs every 10 simulated seconds. No broker and no sleeping, so a day takes minutes.

Printed: alerts opened per 100 devices per simulated day (a run of up to 24 simulated hours
is one school day, from the scenario's time of day, 09:50; longer runs are divided by their
days), duplicate pairs (one rule and one
device with two alerts open at the same time), superseded pairs (a milder and a more severe
alert of one family, rule tag ``campuswatch.family.<name>``, open together for one device),
alerts that closed by themselves within 10 minutes (nobody could have acted on them), and
a per-rule count. Target (issue 14 item 5): no duplicate or superseded pair.

    .venv/bin/python benchmarks/alert_noise.py --hours 10
"""

from __future__ import annotations

import argparse
import itertools
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from ingest import driven_ingestor
from sqlalchemy import select

from campuswatch.collector.alerting import Alerting
from campuswatch.collector.alerts.models import Alert
from campuswatch.collector.alerts.policy import AlertPolicy
from campuswatch.collector.db.engine import make_engine, session_factory, upgrade
from campuswatch.collector.db.models import Site
from campuswatch.collector.demo import DEMO_SCENARIO, DISTRICT, seed_register
from campuswatch.firmware_sim.engine import Simulator
from campuswatch.firmware_sim.fleet import build_fleet
from campuswatch.firmware_sim.scenario import load_scenario
from campuswatch.firmware_sim.schoolday import SimClock
from campuswatch.firmware_sim.transport import MemoryTransport
from campuswatch.wire.ids import utc_now
from campuswatch.wire.mqtt import ReceivedMessage

FAMILY_TAG = "campuswatch.family."
TICK_S = 10.0
SHORT_LIVED = timedelta(minutes=10)
LEVELS = ("info", "low", "medium", "high", "critical")


@dataclass(frozen=True)
class Opened:
    id: int
    rule: str
    title: str
    level: str
    site: str
    device: str | None
    family: str | None
    start: datetime
    end: datetime
    still_open: bool


def school_day_after(now: datetime, template: datetime | None) -> datetime:
    """The scenario's time of day on the first weekday starting after ``now``.

    Not the scenario's own date: the simulator's state messages carry the real time, and
    the collector refuses a message stamped ahead of its receive time, so simulated time
    must run ahead of the real clock.
    """
    local = (template or datetime.fromisoformat("2025-03-04T09:50:00+07:00")).timetz()
    zone = local.tzinfo
    day = now.astimezone(zone).date()
    while True:
        candidate = datetime.combine(day, local)
        if candidate > now and candidate.weekday() < 5:
            return candidate
        day += timedelta(days=1)


def run_day(work: Path, *, schools: int, devices: int, seed: int, hours: float) -> list[Opened]:
    url = f"sqlite:///{work / 'register.sqlite'}"
    upgrade(url)
    sessions = session_factory(make_engine(url))
    with sessions() as session, session.begin():
        session.add(Site(id="sim", level="province", name="Tỉnh mô phỏng"))
        session.add(Site(id=DISTRICT, parent_id="sim", level="district", name="Huyện mô phỏng"))
        for n in range(1, schools + 1):
            session.add(
                Site(id=f"{DISTRICT}-s{n:02d}", parent_id=DISTRICT, level="school", name=f"S{n}")
            )
        seed_register(session, schools=schools, devices=devices, seed=seed)

    scenario = load_scenario(DEMO_SCENARIO)
    start = school_day_after(utc_now(), scenario.start)
    clock = SimClock(start, manual=True)

    def sim_now() -> datetime:
        return start + timedelta(seconds=clock.elapsed_s())

    alerting = Alerting(
        sessions,
        rules_dir=None,
        forwarding_config=None,
        collector_id="noise",
        # The collector's defaults (AlertPolicy), on the simulated clock.
        policy=AlertPolicy(),
        clock=sim_now,
    )
    ingestor = driven_ingestor(sessions, work, alerting, clock=sim_now)
    alerting.restore_state()
    transport = MemoryTransport()
    simulator = Simulator(
        build_fleet(seed=seed, schools=schools, devices=devices, site_prefix=DISTRICT),
        transport,
        clock,
        seed=seed,
        scenario=scenario,
        wall_clock=sim_now,
    )
    simulator.start()
    mids = itertools.count(1)
    delivered = 0
    end_s = hours * 3600
    while clock.elapsed_s() < end_s:
        simulator.run_for(TICK_S, step_s=TICK_S)
        fresh = transport.published[delivered:]
        delivered = len(transport.published)
        now = sim_now()
        if fresh:
            batch = [
                (ReceivedMessage(p.topic, p.payload, 1, p.retain, next(mids)), now) for p in fresh
            ]
            for offset in range(0, len(batch), 500):
                ingestor.process(batch[offset : offset + 500])
        alerting.tick(now)
        if int(clock.elapsed_s()) % 3600 == 0:
            print(f"  {clock.elapsed_s() / 3600:.0f} h simulated", file=sys.stderr, flush=True)
    finished = sim_now()
    with sessions() as session:
        rows = list(session.scalars(select(Alert).order_by(Alert.id)))
        return [
            Opened(
                row.id,
                row.rule_id,
                row.rule_title,
                row.level,
                row.site_id,
                row.device_id,
                next(
                    (t[len(FAMILY_TAG) :] for t in row.tags or () if t.startswith(FAMILY_TAG)), None
                ),
                row.opened_at,
                row.resolved_at or finished,
                row.resolved_at is None,
            )
            for row in rows
        ]


def family_of(tags: list[str]) -> str | None:
    return next((tag[len(FAMILY_TAG) :] for tag in tags if tag.startswith(FAMILY_TAG)), None)


def overlapping(a: Opened, b: Opened) -> bool:
    return a.start < b.end and b.start < a.end


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--schools", type=int, default=3)
    parser.add_argument("--devices", type=int, default=300)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--hours", type=float, default=10.0, help="simulated hours (one day)")
    args = parser.parse_args()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="alert-noise-") as tmp:
        alerts = run_day(
            Path(tmp), schools=args.schools, devices=args.devices, seed=args.seed, hours=args.hours
        )
    took = time.perf_counter() - started
    days = args.hours / 24 if args.hours > 24 else 1.0
    pairs = list(itertools.combinations(alerts, 2))
    duplicates = [
        (a, b)
        for a, b in pairs
        if (a.rule, a.site, a.device) == (b.rule, b.site, b.device) and overlapping(a, b)
    ]
    superseded = [
        (a, b)
        for a, b in pairs
        if a.family is not None
        and a.family == b.family
        and a.rule != b.rule
        and (a.site, a.device) == (b.site, b.device)
        and overlapping(a, b)
    ]
    short = [a for a in alerts if a.end - a.start < SHORT_LIVED]
    print(
        f"demo scenario, {args.schools} schools, {args.devices} devices, seed {args.seed}, "
        f"{args.hours:g} simulated hours from the scenario's time of day ({took:.0f} s real)"
    )
    print(f"alerts opened: {len(alerts)}")
    print(f"alerts per 100 devices per day: {len(alerts) * 100 / args.devices / days:.1f}")
    print(f"duplicate pairs (same rule and device open together): {len(duplicates)}")
    print(f"superseded pairs (milder and severe of one family open together): {len(superseded)}")
    print(f"closed by themselves within {SHORT_LIVED}: {len(short)}")
    print("per rule (opened, still open at the end):")
    by_rule = Counter((a.title, a.level) for a in alerts)
    still_open = Counter((a.title, a.level) for a in alerts if a.still_open)
    for (title, level), count in sorted(
        by_rule.items(), key=lambda item: (-LEVELS.index(item[0][1]), -item[1])
    ):
        print(f"  {count:4d}  {still_open[(title, level)]:4d}  {level:8s} {title}")


if __name__ == "__main__":
    main()
