"""Guessing what a device is from a few well-known TCP ports and its vendor.

Only a handful of ports are tried, with a plain TCP connect (no banners, no login attempts):
enough to tell a camera from a printer, and mild enough for the weakest embedded device.
"""

from __future__ import annotations

import socket
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Final

from campuswatch.agent.scanner.targets import Pacer
from campuswatch.wire.messages import DeviceType

RTSP: Final = 554
PJLINK: Final = 4352
PRINTER_PORTS: Final = (9100, 631, 515)
PC_PORTS: Final = (3389, 445, 135)
WELL_KNOWN_PORTS: Final = (80, 443, RTSP, *PRINTER_PORTS, PJLINK, *PC_PORTS, 22, 8080)


def guess_device_type(
    open_ports: Iterable[int], vendor_hint: DeviceType | None
) -> DeviceType | None:
    """Ports speak louder than vendors: an Epson answering PJLink is a projector.

    The wire has no "printer" type (the asset register treats printers as ``other``), so a
    printer port gives ``other`` — still better than nothing for the facilities manager.
    """
    ports = set(open_ports)
    if RTSP in ports:
        return "camera"
    if PJLINK in ports:
        return "projector"
    if ports & set(PRINTER_PORTS):
        return "other"
    if vendor_hint is not None:
        return vendor_hint
    if ports & set(PC_PORTS):
        return "pc"
    return None


def is_open(address: str, port: int, timeout_s: float) -> bool:
    try:
        with socket.create_connection((address, port), timeout=timeout_s):
            return True
    except OSError:
        return False


def check_ports(
    addresses: Sequence[str],
    ports: Sequence[int] = WELL_KNOWN_PORTS,
    *,
    rate_pps: float = 50.0,
    timeout_s: float = 1.0,
    workers: int = 16,
) -> dict[str, list[int]]:
    """Open ports per address; connection attempts start no faster than ``rate_pps``."""
    pacer = Pacer(rate_pps)
    jobs = [(address, port) for address in addresses for port in ports]
    results: dict[str, list[int]] = {address: [] for address in addresses}
    with ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="portcheck") as pool:
        futures = []
        for address, port in jobs:
            pacer.wait()
            futures.append((address, port, pool.submit(is_open, address, port, timeout_s)))
        for address, port, future in futures:
            if future.result():
                results[address].append(port)
    return {address: sorted(found) for address, found in results.items()}
