"""Alert manager: CPU of a batch that opens alerts in groups already holding open alerts.

When a district's PCs first report stale signatures, every ingest batch opens a few alerts
in each of many schools' groups (one group per rule and school), and those groups already
hold the alerts earlier batches opened. A batch must ask each group it touched whether it
has news for the SOC; this times that path on an embedded register:

    .venv/bin/python benchmarks/alert_groups.py [--schools 100] [--batches 100]

Printed: CPU milliseconds per batch of one new alert at each of 30 schools, over the second
half of the batches (groups then hold half to all of their alerts). Compare runs of two
commits back to back; the machine's own speed drifts by more than small changes.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from campuswatch.collector.alerts.manager import AlertManager
from campuswatch.collector.alerts.policy import AlertPolicy
from campuswatch.collector.db.engine import make_engine, session_factory, upgrade
from campuswatch.collector.db.models import Site
from campuswatch.collector.signals import AlertSignal

T0 = datetime(2026, 12, 4, 8, tzinfo=UTC)
PER_BATCH = 30


def stale_signatures(device: str, site: str, at: datetime) -> AlertSignal:
    rule = "av-signatures-outdated"
    return AlertSignal(
        rule_id=rule,
        rule_title="Antivirus signatures outdated",
        level="medium",
        status="firing",
        fingerprint=f"{rule}|{site}|{device}",
        site_id=site,
        device_id=device,
        summary=f"signatures on {device} are 9 days old",
        at=at,
        labels={},
        tags=(),
        evidence=(),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--schools", type=int, default=100)
    parser.add_argument("--batches", type=int, default=100)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        url = f"sqlite:///{Path(folder) / 'register.db'}"
        upgrade(url)
        engine = make_engine(url)
        sessions = session_factory(engine)
        with sessions() as session:
            session.add_all(
                Site(id=f"school-{n}", level="school", name=f"School {n}")
                for n in range(args.schools)
            )
            session.commit()
        manager = AlertManager(sessions, settings=AlertPolicy(), clock=lambda: T0)
        measured_from = args.batches // 2
        cpu_s = 0.0
        for number in range(args.batches):
            at = T0 + timedelta(seconds=number)
            batch = [
                stale_signatures(f"pc-{number}", f"school-{(number * 7 + k) % args.schools}", at)
                for k in range(PER_BATCH)
            ]
            began = time.process_time()
            manager.process(batch, at)
            if number >= measured_from:
                cpu_s += time.process_time() - began
        engine.dispose()
    measured = args.batches - measured_from
    print(
        f"{cpu_s * 1000 / measured:.1f} ms CPU per batch of {PER_BATCH} new alerts "
        f"({args.schools} schools' groups, batches {measured_from + 1}-{args.batches})"
    )


if __name__ == "__main__":
    main()
