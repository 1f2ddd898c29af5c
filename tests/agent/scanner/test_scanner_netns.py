"""The real scanner, raw sockets and all, inside network namespaces this test builds.

Topology (nothing touches the host's own network; the 10.213.N.0/24 addresses exist only
inside the namespaces): a scanner namespace holding a bridge, and two "device" namespaces
joined to it by veth pairs — a Hikvision-OUI camera with an RTSP listener on 554, and an
Epson-OUI device that announces a DHCP host name.
"""

from __future__ import annotations

import json
import secrets
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from campuswatch.wire.codec import decode_message
from campuswatch.wire.messages import DiscoveryMessage
from campuswatch.wire.topics import build_topic
from tests.support import required

required.module("scapy", "the scanner extra: pip install -e '.[dev]' (or 'campuswatch[scanner]')")
pytestmark = pytest.mark.e2e

IP = shutil.which("ip") or "/usr/sbin/ip"
CAMERA_MAC = "44:19:b6:10:20:30"
PROJECTOR_MAC = "00:26:ab:10:20:31"
ROOT = Path(__file__).resolve().parents[3]

LISTEN_554 = """
import socket, sys, time
server = socket.socket()
server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
server.bind((sys.argv[1], 554))
server.listen(16)
print("listening", flush=True)
while True:
    connection, _ = server.accept()
    connection.close()
"""

DHCP_CHATTER = """
import sys, time
from scapy.all import BOOTP, DHCP, IP, UDP, Ether, sendp
mac, address = sys.argv[1], sys.argv[2]
packet = (Ether(src=mac, dst="ff:ff:ff:ff:ff:ff") / IP(src="0.0.0.0", dst="255.255.255.255")
          / UDP(sport=68, dport=67) / BOOTP(op=1, chaddr=bytes.fromhex(mac.replace(":", "")))
          / DHCP(options=[("message-type", "request"), ("hostname", b"EPSON-ROOM-3F"),
                          ("requested_addr", address), "end"]))
while True:
    sendp(packet, iface="eth0", verbose=False)
    time.sleep(0.3)  # the device's own rhythm of requests: scenario, not a wait
"""


@dataclass
class Lab:
    prefix: str
    subnet: str
    scanner_ns: str
    camera_ip: str
    projector_ip: str
    namespaces: list[str] = field(default_factory=list)
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def run(self, namespace: str, *args: str) -> None:
        subprocess.run([IP, "netns", "exec", namespace, *args], check=True, capture_output=True)

    def start(self, namespace: str, *args: str) -> subprocess.Popen[bytes]:
        process = subprocess.Popen(
            [IP, "netns", "exec", namespace, *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        self.processes.append(process)
        return process


def _add_host(lab: Lab, name: str, mac: str, address: str, port: str) -> str:
    namespace = f"{lab.prefix}-{name}"
    subprocess.run([IP, "netns", "add", namespace], check=True, capture_output=True)
    lab.namespaces.append(namespace)
    # Created inside the scanner namespace, peer moved straight into the host namespace.
    lab.run(lab.scanner_ns, IP, "link", "add", port, "type", "veth", "peer", "name", "eth0",
            "netns", namespace)  # fmt: skip
    lab.run(lab.scanner_ns, IP, "link", "set", port, "master", "br0", "up")
    lab.run(namespace, IP, "link", "set", "lo", "up")
    lab.run(namespace, IP, "link", "set", "eth0", "address", mac)
    lab.run(namespace, IP, "addr", "add", f"{address}/24", "dev", "eth0")
    lab.run(namespace, IP, "link", "set", "eth0", "up")
    return namespace


@pytest.fixture
def lab() -> Iterator[Lab]:
    required.root("network namespaces need root")
    required.program("ip", "iproute2")
    prefix = f"cw-scan-{secrets.token_hex(3)}"
    probe = subprocess.run([IP, "netns", "add", f"{prefix}-s"], capture_output=True, text=True)
    if probe.returncode != 0:
        required.missing(
            f"cannot create network namespaces here: {probe.stderr.strip()}",
            "run the suite as root on a machine (or a container with CAP_SYS_ADMIN) that allows it",
        )
    third = secrets.randbelow(250) + 1
    lab = Lab(
        prefix=prefix,
        subnet=f"10.213.{third}.0/24",
        scanner_ns=f"{prefix}-s",
        camera_ip=f"10.213.{third}.10",
        projector_ip=f"10.213.{third}.20",
        namespaces=[f"{prefix}-s"],
    )
    try:
        lab.run(lab.scanner_ns, IP, "link", "set", "lo", "up")
        lab.run(lab.scanner_ns, IP, "link", "add", "br0", "type", "bridge")
        lab.run(lab.scanner_ns, IP, "addr", "add", f"10.213.{third}.1/24", "dev", "br0")
        lab.run(lab.scanner_ns, IP, "link", "set", "br0", "up")
        _add_host(lab, "cam", CAMERA_MAC, lab.camera_ip, "vcam")
        _add_host(lab, "proj", PROJECTOR_MAC, lab.projector_ip, "vproj")
        yield lab
    finally:
        for process in lab.processes:
            process.kill()
            process.wait()
        for namespace in reversed(lab.namespaces):
            subprocess.run([IP, "netns", "del", namespace], capture_output=True, check=False)


def test_scanner_finds_hosts_with_vendor_type_and_dhcp_name(lab: Lab) -> None:
    listener = lab.start(f"{lab.prefix}-cam", sys.executable, "-c", LISTEN_554, lab.camera_ip)
    assert listener.stdout is not None and listener.stdout.readline() == b"listening\n"
    lab.start(
        f"{lab.prefix}-proj", sys.executable, "-c", DHCP_CHATTER, PROJECTOR_MAC, lab.projector_ip
    )
    scan = subprocess.run(
        [IP, "netns", "exec", lab.scanner_ns, sys.executable, "-m", "campuswatch.agent.scanner",
         "--subnet", lab.subnet, "--site", "school-a", "--device-id", "scan-1", "--interface",
         "br0", "--rate", "500", "--ports", "--passive", "4", "--hostnames", "keep", "--once",
         "--json"],
        capture_output=True, text=True, timeout=240, cwd=ROOT, check=False,
    )  # fmt: skip
    assert scan.returncode == 0, scan.stderr
    lines = [line for line in scan.stdout.splitlines() if line.startswith("{")]
    assert len(lines) == 1, scan.stdout
    topic = build_topic("school-a", "scan-1", "discovery")
    message = decode_message(topic, lines[0].encode()).message
    assert isinstance(message, DiscoveryMessage) and message.complete
    by_mac = {host.mac: host for host in message.hosts}
    assert set(by_mac) == {CAMERA_MAC, PROJECTOR_MAC}, message.hosts  # not the scanner itself

    camera = by_mac[CAMERA_MAC]
    assert camera.ip == lab.camera_ip and camera.method == "arp_sweep"
    assert camera.vendor is not None and "hikvision" in camera.vendor.lower()
    assert camera.open_ports == [554] and camera.guessed_type == "camera"

    projector = by_mac[PROJECTOR_MAC]
    assert projector.ip == lab.projector_ip
    assert projector.vendor is not None and "epson" in projector.vendor.lower()
    assert projector.hostname == "EPSON-ROOM-3F"
    assert projector.open_ports == []
    assert json.loads(lines[0])["subnet"] == lab.subnet


def test_scanner_refuses_a_huge_subnet_without_sending(lab: Lab) -> None:
    scan = subprocess.run(
        [IP, "netns", "exec", lab.scanner_ns, sys.executable, "-m", "campuswatch.agent.scanner",
         "--subnet", "10.213.0.0/16", "--site", "school-a", "--once", "--json"],
        capture_output=True, text=True, timeout=120, cwd=ROOT, check=False,
    )  # fmt: skip
    assert scan.returncode == 2
    assert "/20" in scan.stderr and scan.stdout == ""
