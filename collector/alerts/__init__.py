"""The alert lifecycle: dedup, silences, inhibition, grouping, acknowledgement, escalation.

Kept free of imports so ``campuswatch.collector.db.models`` can register the alert tables
on the shared metadata without an import cycle.
"""
