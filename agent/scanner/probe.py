"""Discovery as an agent probe, so one designated lab PC per school can sweep on schedule."""

from __future__ import annotations

import logging
from collections.abc import Callable

from campuswatch.agent.probes import ProbeContext
from campuswatch.agent.scanner.scan import (
    MAX_HOSTS_PER_MESSAGE,
    ScanError,
    ScanOptions,
    ScanResult,
    run_scan,
    to_messages,
)
from campuswatch.agent.scanner.targets import TargetError
from campuswatch.wire.messages import EventMessage, Message

log = logging.getLogger(__name__)


class DiscoveryProbe:
    """Runs one sweep per ``collect``; a sweep that cannot run becomes an event, not a crash."""

    name = "discovery"
    kind = "discovery"

    def __init__(
        self, options: ScanOptions, scan: Callable[[ScanOptions], ScanResult] = run_scan
    ) -> None:
        self.options = options
        self._scan = scan

    def collect(self, context: ProbeContext) -> Message:
        try:
            result = self._scan(self.options)
        except (ScanError, TargetError) as exc:
            # An empty discovery would read as "nothing on the network": say it failed instead.
            return EventMessage(
                device_id=context.device_id,
                site=context.site,
                event_type="discovery.failed",
                severity="low",
                message=str(exc)[:4096],
                attributes={"probe": self.name, "subnet": self.options.subnet[:256]},
            )
        messages = to_messages(result, site=context.site, device_id=context.device_id)
        if len(messages) > 1:
            # A probe returns one message; the scan command publishes every part instead.
            log.warning(
                "discovery found %d hosts; sending the first %d, marked incomplete",
                len(result.hosts),
                MAX_HOSTS_PER_MESSAGE,
            )
        return messages[0]
