"""Packets on the wire (scapy): the ARP sweep and passive ARP/DHCP listening.

Everything that needs raw sockets is here; ``sighting_from_packet`` is pure so that DHCP and
ARP parsing can be tested with packets built in memory.
"""

from __future__ import annotations

import hashlib
import ipaddress
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final, Literal

from campuswatch.agent.scanner.oui import normalise_mac
from campuswatch.agent.scanner.targets import Pacer, SweepPlan

log = logging.getLogger(__name__)

Method = Literal["arp_sweep", "arp_passive", "dhcp_passive"]
HostnamePolicy = Literal["keep", "hash", "drop"]
BROADCAST: Final = "ff:ff:ff:ff:ff:ff"
_UNSPECIFIED: Final = "0.0.0.0"


class CaptureError(RuntimeError):
    """Raw sockets are unavailable (not root / no CAP_NET_RAW) or the interface is wrong."""


@dataclass(frozen=True, slots=True)
class Sighting:
    mac: str
    ip: str | None
    method: Method
    hostname: str | None = None


def clean_hostname(raw: object, policy: HostnamePolicy = "keep") -> str | None:
    """A DHCP host name made safe to store; hashed or dropped where names are personal data.

    Phones often announce their owner's name ("Lans-iPhone"); ``hash`` keeps a stable token
    that still tells two devices apart without storing the name.
    """
    if policy == "drop" or raw is None:
        return None
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
    text = "".join(ch for ch in text if ch.isprintable()).strip().strip("\x00")[:64]
    if not text:
        return None
    if policy == "hash":
        return "sha256:" + hashlib.sha256(text.lower().encode()).hexdigest()[:16]
    return text


def _ipv4(value: object) -> str | None:
    try:
        address = ipaddress.IPv4Address(str(value))
    except ValueError:
        return None
    return None if address.is_unspecified or address.is_multicast else str(address)


def sighting_from_packet(packet: Any, policy: HostnamePolicy = "keep") -> Sighting | None:
    """One ARP or DHCP packet → who sent it (MAC, IP, host name); None for anything else."""
    from scapy.layers.dhcp import BOOTP, DHCP
    from scapy.layers.l2 import ARP

    try:
        if packet.haslayer(ARP):
            arp = packet[ARP]
            mac, ip = normalise_mac(str(arp.hwsrc)), _ipv4(arp.psrc)
            if mac is None or ip is None or mac == BROADCAST:
                return None  # ARP probes (RFC 5227) come from 0.0.0.0: nothing to record yet
            return Sighting(mac, ip, "arp_passive")
        if packet.haslayer(BOOTP) and packet.haslayer(DHCP):
            bootp = packet[BOOTP]
            chaddr = bytes(bootp.chaddr or b"")[:6]
            mac = normalise_mac(chaddr.hex()) if len(chaddr) == 6 else None
            if mac is None:
                return None
            options: dict[str, Any] = {}
            for option in packet[DHCP].options:
                if isinstance(option, tuple) and len(option) >= 2:
                    options.setdefault(str(option[0]), option[1])
            if bootp.op == 2:  # a server's offer/ack: the address it hands out
                ip = _ipv4(bootp.yiaddr)
            else:
                ip = _ipv4(options.get("requested_addr")) or _ipv4(bootp.ciaddr)
            hostname = clean_hostname(options.get("hostname"), policy)
            return Sighting(mac, ip, "dhcp_passive", hostname)
    except (AttributeError, IndexError, TypeError, ValueError) as exc:
        log.debug("ignoring malformed packet: %s", exc)
    return None


def _interface_for(plan: SweepPlan, interface: str | None) -> tuple[str, str, str]:
    """(interface, its MAC, the source address to put in our ARP requests)."""
    from scapy.arch import get_if_addr, get_if_hwaddr
    from scapy.config import conf

    if interface is None:
        routed = conf.route.route(str(plan.targets[0]))
        interface = str(routed[0])
        source = str(routed[1])
    else:
        source = str(get_if_addr(interface))
    try:
        mac = str(get_if_hwaddr(interface))
    except (OSError, ValueError) as exc:
        raise CaptureError(f"interface {interface!r} is not usable: {exc}") from None
    if source == _UNSPECIFIED or ipaddress.IPv4Address(source) not in plan.network:
        # Replies to a source outside the subnet would be routed, not sent back on the link.
        log.warning("%s has no address in %s; replies may not come back", interface, plan.network)
    return interface, mac, source


def _raw_socket_error(exc: OSError) -> CaptureError:
    return CaptureError(
        f"cannot open a raw socket ({exc.strerror or exc}); run as root or "
        "give the Python binary CAP_NET_RAW"
    )


def arp_sweep(
    plan: SweepPlan,
    *,
    interface: str | None = None,
    retries: int = 1,
    reply_wait_s: float = 2.0,
    clock: Callable[[], float] = time.monotonic,
) -> dict[str, str]:
    """ARP-request every target at ``plan.rate_pps``; return ``{ip: mac}`` of those answering."""
    from scapy.config import conf
    from scapy.layers.l2 import ARP, Ether
    from scapy.sendrecv import AsyncSniffer

    if not plan.targets:
        return {}
    interface, own_mac, source = _interface_for(plan, interface)
    wanted = {str(address) for address in plan.targets} - {source}
    answers: dict[str, str] = {}
    lock = threading.Lock()

    def record(packet: Any) -> None:
        arp = packet[ARP]
        mac, ip = normalise_mac(str(arp.hwsrc)), str(arp.psrc)
        if mac is not None and ip in wanted:
            with lock:
                answers.setdefault(ip, mac)

    # Sockets are opened here, not in the sniffer's thread, so a missing privilege fails at
    # once and the listener is in place before the first request leaves.
    try:
        listener = conf.L2listen(iface=interface)
        sender = conf.L2socket(iface=interface)
    except OSError as exc:
        raise _raw_socket_error(exc) from None
    sniffer = AsyncSniffer(
        opened_socket=listener,
        store=False,
        prn=record,
        lfilter=lambda p: p.haslayer(ARP) and p[ARP].op == 2,
    )
    sniffer.start()
    pacer = Pacer(plan.rate_pps, clock=clock)
    try:
        for attempt in range(1 + max(0, retries)):
            with lock:
                pending = [
                    ip for ip in sorted(wanted, key=ipaddress.IPv4Address) if ip not in answers
                ]
            if not pending:
                break
            if attempt:
                log.debug("ARP retry %d for %d silent address(es)", attempt, len(pending))
            for ip in pending:
                pacer.wait()
                sender.send(
                    Ether(dst=BROADCAST, src=own_mac)
                    / ARP(op=1, hwsrc=own_mac, psrc=source, pdst=ip)
                )
            time.sleep(reply_wait_s)
    finally:
        sender.close()
        sniffer.stop(join=True)
        listener.close()
    return answers


def listen_passive(
    seconds: float,
    *,
    interface: str | None = None,
    policy: HostnamePolicy = "keep",
    stop: threading.Event | None = None,
) -> list[Sighting]:
    """Record ARP and DHCP senders for ``seconds``; sends nothing."""
    from scapy.config import conf
    from scapy.layers.dhcp import BOOTP
    from scapy.layers.l2 import ARP
    from scapy.sendrecv import AsyncSniffer

    sightings: list[Sighting] = []
    lock = threading.Lock()

    def record(packet: Any) -> None:
        found = sighting_from_packet(packet, policy)
        if found is not None:
            with lock:
                sightings.append(found)

    try:
        listener = conf.L2listen(iface=interface)
    except OSError as exc:
        raise _raw_socket_error(exc) from None
    sniffer = AsyncSniffer(
        opened_socket=listener,
        store=False,
        prn=record,
        lfilter=lambda p: p.haslayer(ARP) or p.haslayer(BOOTP),
    )
    sniffer.start()
    try:
        (stop or threading.Event()).wait(seconds)
    finally:
        sniffer.stop(join=True)
        listener.close()
    with lock:
        return list(sightings)
