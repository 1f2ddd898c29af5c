"""Which addresses a sweep may probe, and how fast.

A sweep is polite by construction: the subnet size is capped (a /20 is 4,094 hosts, ~80 s at
the default 50 packets/s) and packets are paced evenly rather than sent in a burst that a
school's cheap switch or a camera's tiny network stack may drop or choke on.
"""

from __future__ import annotations

import ipaddress
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

DEFAULT_RATE_PPS: Final = 50.0
MAX_RATE_PPS: Final = 1000.0
LARGEST_PREFIX: Final = 20
"""Subnets larger than this (a smaller prefix length) need ``force``."""


class TargetError(ValueError):
    """A subnet or rate the scanner refuses; the message says why and what to do."""


@dataclass(frozen=True, slots=True)
class SweepPlan:
    network: ipaddress.IPv4Network
    targets: tuple[ipaddress.IPv4Address, ...]
    rate_pps: float

    @property
    def interval_s(self) -> float:
        return 1.0 / self.rate_pps

    def estimated_seconds(self, passes: int = 1) -> float:
        """Time spent sending: the first packet leaves at once, each next one an interval later."""
        packets = len(self.targets) * max(1, passes)
        return max(0, packets - 1) * self.interval_s


def plan_sweep(cidr: str, rate_pps: float = DEFAULT_RATE_PPS, *, force: bool = False) -> SweepPlan:
    try:
        network = ipaddress.ip_network(cidr.strip(), strict=False)
    except ValueError:
        raise TargetError(f"{cidr[:60]!r} is not a subnet such as 10.1.2.0/24") from None
    if not isinstance(network, ipaddress.IPv4Network):
        raise TargetError("ARP discovery works on IPv4 subnets only")
    if not math.isfinite(rate_pps) or not 0 < rate_pps <= MAX_RATE_PPS:
        raise TargetError(f"rate must be between 0 and {MAX_RATE_PPS:g} packets per second")
    if network.prefixlen < LARGEST_PREFIX and not force:
        raise TargetError(
            f"{network} has {network.num_addresses - 2} addresses; sweeps are limited to "
            f"/{LARGEST_PREFIX} or smaller (use --force if you really mean it)"
        )
    if not (network.is_private or network.is_link_local) and not force:
        raise TargetError(f"{network} is not a private network; use --force to sweep it anyway")
    if network.is_loopback or network.is_multicast:
        raise TargetError(f"{network} cannot be swept with ARP")
    hosts = tuple(network.hosts()) if network.prefixlen < 31 else tuple(network)
    return SweepPlan(network, hosts, rate_pps)


@dataclass(slots=True)
class Pacer:
    """Spaces events ``1/rate`` apart on a monotonic clock; a late start is not caught up.

    Catching up after a stall (a busy laptop, a swapped-out process) would send a burst, the
    very thing pacing exists to avoid.
    """

    rate_per_s: float
    clock: Callable[[], float] = time.monotonic
    sleep: Callable[[float], None] = time.sleep
    _next_at: float | None = field(default=None, init=False)

    def wait(self) -> float:
        """Block until the next event may happen; return how long it slept."""
        now = self.clock()
        if self._next_at is None or now >= self._next_at:
            self._next_at = now + 1.0 / self.rate_per_s
            return 0.0
        delay = self._next_at - now
        self.sleep(delay)
        self._next_at += 1.0 / self.rate_per_s
        return delay
