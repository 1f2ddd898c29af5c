"""Forwarding alerts to the SOC: renderers (CEF, ECS, OCSF), destinations, durable outbox.

An alert transition and its outbox rows commit in one transaction (``Outbox.enqueue``);
a ``Forwarder`` thread per destination delivers them at least once, each destination
independently, so a dead SIEM never slows ingest or the other destinations.
"""

from __future__ import annotations

from typing import Final

from campuswatch import __version__

VENDOR: Final = "CampusWatch"
PRODUCT: Final = "CampusWatch Collector"
PRODUCT_VERSION: Final = __version__
