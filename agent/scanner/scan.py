"""One discovery sweep: ARP sweep (+ optional passive listening and port checks) → hosts.

The steps that touch the network are passed in, so the merging, vendor lookup and message
building are tested without raw sockets; the real ones live in ``capture`` and ``classify``.
"""

from __future__ import annotations

import ipaddress
import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, Protocol

from campuswatch.agent.scanner.capture import (
    CaptureError,
    HostnamePolicy,
    Method,
    Sighting,
    arp_sweep,
    listen_passive,
)
from campuswatch.agent.scanner.classify import WELL_KNOWN_PORTS, check_ports, guess_device_type
from campuswatch.agent.scanner.oui import OuiTable, default_table, normalise_mac
from campuswatch.agent.scanner.targets import DEFAULT_RATE_PPS, SweepPlan, plan_sweep
from campuswatch.wire.messages import DiscoveredHost, DiscoveryMessage

log = logging.getLogger(__name__)

# ~150 bytes a host on the wire: 2,000 hosts stay well inside the 512 KiB message limit.
MAX_HOSTS_PER_MESSAGE: Final = 2000
_METHOD_RANK: Final[dict[Method, int]] = {"arp_sweep": 0, "arp_passive": 1, "dhcp_passive": 2}


class ScanError(RuntimeError):
    """The sweep could not run at all (privileges, interface); the message says why."""


@dataclass(frozen=True, slots=True)
class ScanOptions:
    subnet: str
    rate_pps: float = DEFAULT_RATE_PPS
    force: bool = False
    interface: str | None = None
    port_checks: bool = False
    ports: tuple[int, ...] = WELL_KNOWN_PORTS
    passive_s: float = 0.0
    retries: int = 1
    reply_wait_s: float = 2.0
    oui_file: Path | None = None
    hostnames: HostnamePolicy = "hash"
    """DHCP names often carry a person's name ("Lans-iPhone"): hashed unless asked."""


@dataclass(slots=True)
class ScanResult:
    subnet: str
    hosts: list[DiscoveredHost] = field(default_factory=list)
    complete: bool = True
    problems: list[str] = field(default_factory=list)


class Sweeper(Protocol):
    def __call__(
        self, plan: SweepPlan, *, interface: str | None, retries: int, reply_wait_s: float
    ) -> dict[str, str]: ...


class Listener(Protocol):
    def __call__(
        self,
        seconds: float,
        *,
        interface: str | None,
        policy: HostnamePolicy,
        stop: threading.Event | None,
    ) -> list[Sighting]: ...


PortChecker = Callable[[Sequence[str], Sequence[int]], dict[str, list[int]]]


def local_macs() -> frozenset[str]:
    """This machine's own MACs: the passive listener hears our own sweep, which is not news."""
    import psutil

    found: set[str] = set()
    for addresses in psutil.net_if_addrs().values():
        for address in addresses:
            if address.family == psutil.AF_LINK:
                mac = normalise_mac(address.address)
                if mac is not None:
                    found.add(mac)
    return frozenset(found)


def merge_sightings(
    sightings: Sequence[Sighting],
    network: ipaddress.IPv4Network,
    exclude_macs: frozenset[str] = frozenset(),
) -> list[Sighting]:
    """One entry per (IP, MAC) inside ``network``, best method first, host names by MAC.

    An IP seen with two MACs stays two entries: that is an address conflict or ARP spoofing,
    and the collector should see both rather than whichever answered last.
    """
    names: dict[str, str] = {}
    for sighting in sightings:
        if sighting.hostname:
            names.setdefault(sighting.mac, sighting.hostname)
    best: dict[tuple[str, str], Sighting] = {}
    for sighting in sightings:
        if sighting.ip is None or ipaddress.IPv4Address(sighting.ip) not in network:
            continue
        if sighting.mac in exclude_macs:
            continue
        key = (sighting.ip, sighting.mac)
        known = best.get(key)
        if known is None or _METHOD_RANK[sighting.method] < _METHOD_RANK[known.method]:
            best[key] = sighting
    merged = [Sighting(s.mac, s.ip, s.method, names.get(s.mac)) for s in best.values()]
    return sorted(merged, key=lambda s: (ipaddress.IPv4Address(s.ip or "0.0.0.0"), s.mac))


def describe_hosts(
    sightings: Sequence[Sighting], oui: OuiTable, open_ports: dict[str, list[int]]
) -> list[DiscoveredHost]:
    hosts: list[DiscoveredHost] = []
    for sighting in sightings:
        assert sighting.ip is not None  # merge_sightings keeps only addressed sightings
        vendor = oui.lookup(sighting.mac)
        ports = open_ports.get(sighting.ip, [])
        hosts.append(
            DiscoveredHost(
                ip=sighting.ip,
                mac=sighting.mac,
                vendor=vendor.name if vendor else None,
                hostname=sighting.hostname,
                open_ports=ports,
                guessed_type=guess_device_type(ports, vendor.hint if vendor else None),
                method=sighting.method,
            )
        )
    return hosts


def run_scan(
    options: ScanOptions,
    *,
    oui: OuiTable | None = None,
    sweep: Sweeper = arp_sweep,
    listen: Listener = listen_passive,
    port_checker: PortChecker | None = None,
) -> ScanResult:
    """Sweep, listen, look up, check ports. Raises ``TargetError`` / ``ScanError`` up front."""
    plan = plan_sweep(options.subnet, options.rate_pps, force=options.force)
    result = ScanResult(subnet=str(plan.network))
    sightings: list[Sighting] = []
    passive: list[Sighting] = []
    listener_error: list[str] = []
    listener_thread: threading.Thread | None = None
    if options.passive_s > 0:

        def run_listener() -> None:
            try:
                passive.extend(
                    listen(
                        options.passive_s,
                        interface=options.interface,
                        policy=options.hostnames,
                        stop=None,
                    )
                )
            except CaptureError as exc:
                listener_error.append(str(exc))

        listener_thread = threading.Thread(target=run_listener, name="scan-passive", daemon=True)
        listener_thread.start()
    try:
        answers = sweep(
            plan,
            interface=options.interface,
            retries=options.retries,
            reply_wait_s=options.reply_wait_s,
        )
    except CaptureError as exc:
        raise ScanError(str(exc)) from None
    finally:
        if listener_thread is not None:
            listener_thread.join()
    sightings += [Sighting(mac, ip, "arp_sweep") for ip, mac in answers.items()]
    sightings += passive
    if listener_error:
        result.problems += listener_error
    merged = merge_sightings(sightings, plan.network, local_macs())
    open_ports: dict[str, list[int]] = {}
    if options.port_checks and merged:
        addresses = sorted({s.ip for s in merged if s.ip}, key=ipaddress.IPv4Address)
        checker = port_checker or (
            lambda targets, ports: check_ports(targets, ports, rate_pps=options.rate_pps)
        )
        open_ports = checker(addresses, options.ports)
    table = oui if oui is not None else default_table(options.oui_file)
    result.hosts = describe_hosts(merged, table, open_ports)
    return result


def to_messages(result: ScanResult, *, site: str, device_id: str) -> list[DiscoveryMessage]:
    """One message per sweep; a very large sweep is split, only the last saying ``complete``."""
    chunks = [
        result.hosts[start : start + MAX_HOSTS_PER_MESSAGE]
        for start in range(0, len(result.hosts), MAX_HOSTS_PER_MESSAGE)
    ] or [[]]
    return [
        DiscoveryMessage(
            device_id=device_id,
            site=site,
            subnet=result.subnet,
            hosts=chunk,
            complete=result.complete and index == len(chunks) - 1,
        )
        for index, chunk in enumerate(chunks)
    ]
