"""The collector's process collects reference cycles less often than Python's default.

Python looks for cycles among new objects every 700 allocations. One ingest batch of 500
messages allocates far more, so its short-lived objects were promoted to the older
generations, and whole-heap collections over a district's state (100,000 devices' rule and
liveness records) ran every few seconds: a quarter of the collector's CPU in
``benchmarks/district_load.py --in-process`` (docs/scale.md)."""

from __future__ import annotations

import gc

from tests.collector.conftest import CollectorFactory


def test_a_running_collector_uses_the_young_generation_threshold_of_its_settings(
    collector_factory: CollectorFactory,
) -> None:
    before = gc.get_threshold()
    try:
        collector_factory(gc_young_threshold=12_345)
        assert gc.get_threshold() == (12_345, before[1], before[2])
    finally:
        gc.set_threshold(*before)


def test_by_default_young_objects_are_collected_every_10_000_allocations(
    collector_factory: CollectorFactory,
) -> None:
    before = gc.get_threshold()
    try:
        collector_factory()
        assert gc.get_threshold()[0] == 10_000
    finally:
        gc.set_threshold(*before)
