"""Scanner logic without raw sockets: OUI tables, pacing, subnet limits, parsing, messages."""

from __future__ import annotations

import ipaddress
import threading
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from campuswatch.agent.probes import ProbeContext
from campuswatch.agent.scanner.capture import Sighting, clean_hostname, sighting_from_packet
from campuswatch.agent.scanner.classify import guess_device_type
from campuswatch.agent.scanner.oui import OuiTable, default_table, normalise_mac
from campuswatch.agent.scanner.probe import DiscoveryProbe
from campuswatch.agent.scanner.scan import (
    MAX_HOSTS_PER_MESSAGE,
    ScanError,
    ScanOptions,
    ScanResult,
    merge_sightings,
    run_scan,
    to_messages,
)
from campuswatch.agent.scanner.targets import Pacer, SweepPlan, TargetError, plan_sweep
from campuswatch.agent.settings import AgentSettings
from campuswatch.wire.codec import WireRejection, decode_message, encode_message
from campuswatch.wire.messages import DiscoveredHost, DiscoveryMessage, EventMessage
from campuswatch.wire.topics import build_topic

IEEE_SAMPLE = (
    "OUI/MA-L                                                    Organization\r\n"
    "company_id                                                  Organization\r\n"
    "\r\n"
    "44-19-B6   (hex)\t\tHangzhou Hikvision Digital Technology Co.,Ltd.\r\n"
    "4419B6     (base 16)\t\tHangzhou Hikvision Digital Technology Co.,Ltd.\r\n"
    "\t\t\t\tNo.469,Jianghui Road\r\n"
    "\r\n"
    "00-26-AB   (hex)\t\tSeiko Epson Corporation\r\n"
    "0026AB     (base 16)\t\tSeiko Epson Corporation\r\n"
    "zz-26-AB   (hex)\t\tNot a prefix\r\n"
    "AA-BB-CC   (hex)\t\t\r\n"
)


def test_ieee_oui_txt_is_parsed(tmp_path: Path) -> None:
    path = tmp_path / "oui.txt"
    path.write_text(IEEE_SAMPLE, encoding="utf-8")
    table = OuiTable()
    assert table.load(path) == 2
    vendor = table.lookup("44:19:B6:12:34:56")
    assert vendor is not None and vendor.name.startswith("Hangzhou Hikvision")
    assert vendor.hint is None
    assert table.lookup("00-26-ab-00-00-01") is not None
    assert table.lookup("aabbcc000001") is None


def test_compact_table_keeps_hints_and_ignores_junk(tmp_path: Path) -> None:
    path = tmp_path / "subset.tsv"
    path.write_text(
        "# comment\n4419B6\tHikvision\tcamera\n0026AB\tEpson\n"
        "XYZ123\tBad\n001122\t\n304455\tOdd\tdishwasher\n",
        encoding="utf-8",
    )
    table = OuiTable()
    assert table.load(path) == 3
    assert table.lookup("44:19:b6:00:00:01").hint == "camera"  # type: ignore[union-attr]
    assert table.lookup("00:26:ab:00:00:01").hint is None  # type: ignore[union-attr]
    assert table.lookup("30:44:55:00:00:01").hint is None  # type: ignore[union-attr]


def test_shipped_table_knows_school_vendors() -> None:
    table = default_table()
    expected = {
        "44:19:b6:00:00:01": "Hikvision",
        "00:26:ab:00:00:01": "Epson",
        "c0:56:e3:00:00:01": "Hikvision",
    }
    for mac, name in expected.items():
        vendor = table.lookup(mac)
        assert vendor is not None and name.lower() in vendor.name.lower(), mac


def test_missing_oui_file_adds_nothing(tmp_path: Path) -> None:
    assert OuiTable().load(tmp_path / "absent.txt") == 0


def test_locally_administered_and_malformed_macs_have_no_vendor() -> None:
    table = OuiTable()
    table.load(Path(__file__).parents[3] / "agent/scanner/oui_schools.tsv")
    assert table.lookup("46:19:b6:00:00:01") is None  # Hikvision OUI with the local bit set
    assert table.lookup("not a mac") is None
    assert normalise_mac("4419.b612.3456") == "44:19:b6:12:34:56"
    assert normalise_mac("44:19:b6:12:34") is None
    assert normalise_mac("44:19:b6:12:34:5g") is None


_SMALL_TABLE = OuiTable()
_SMALL_TABLE.load(Path(__file__).parents[3] / "agent/scanner/oui_schools.tsv")


@settings(deadline=None)
@given(st.text(max_size=40))
def test_mac_lookup_never_crashes(value: str) -> None:
    _SMALL_TABLE.lookup(value)


def test_pacer_spaces_events_without_bursting_after_a_stall() -> None:
    now = [100.0]
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        now[0] += seconds

    pacer = Pacer(50.0, clock=lambda: now[0], sleep=sleep)
    assert pacer.wait() == 0.0
    assert pacer.wait() == pytest.approx(0.02)
    assert pacer.wait() == pytest.approx(0.02)
    now[0] += 5.0  # the process was stalled; the next sends must not come in a burst
    assert pacer.wait() == 0.0
    assert pacer.wait() == pytest.approx(0.02)
    assert sum(slept) == pytest.approx(0.06)


def test_sweep_plan_arithmetic() -> None:
    plan = plan_sweep("10.213.5.77/24", 50)
    assert str(plan.network) == "10.213.5.0/24"
    assert len(plan.targets) == 254
    assert plan.interval_s == pytest.approx(0.02)
    assert plan.estimated_seconds() == pytest.approx(253 * 0.02)
    assert plan.estimated_seconds(passes=2) == pytest.approx(507 * 0.02)
    assert len(plan_sweep("10.0.0.0/20").targets) == 4094
    assert [str(a) for a in plan_sweep("10.0.0.4/31").targets] == ["10.0.0.4", "10.0.0.5"]


@pytest.mark.parametrize(
    ("cidr", "rate", "force", "message"),
    [
        ("10.0.0.0/19", 50, False, "limited to /20"),
        ("8.8.8.0/24", 50, False, "not a private"),
        ("fd00::/64", 50, True, "IPv4"),
        ("10.0.0.0/24", 0, False, "rate"),
        ("10.0.0.0/24", float("nan"), False, "rate"),
        ("10.0.0.0/24", 5000, False, "rate"),
        ("banana", 50, False, "not a subnet"),
        ("127.0.0.0/24", 50, True, "cannot be swept"),
    ],
)
def test_subnets_and_rates_refused(cidr: str, rate: float, force: bool, message: str) -> None:
    with pytest.raises(TargetError, match=message):
        plan_sweep(cidr, rate, force=force)


def test_force_allows_large_subnets() -> None:
    assert len(plan_sweep("10.0.0.0/19", force=True).targets) == 8190


def test_dhcp_and_arp_packets_become_sightings() -> None:
    from scapy.layers.dhcp import BOOTP, DHCP
    from scapy.layers.inet import IP, UDP
    from scapy.layers.l2 import ARP, Ether

    request = Ether(
        bytes(
            Ether(src="00:26:ab:00:00:01", dst="ff:ff:ff:ff:ff:ff")
            / IP(src="0.0.0.0", dst="255.255.255.255")
            / UDP(sport=68, dport=67)
            / BOOTP(op=1, chaddr=bytes.fromhex("0026ab000001"))
            / DHCP(
                options=[
                    ("message-type", "request"),
                    ("hostname", b"EPSON-3F\x01"),
                    ("requested_addr", "10.213.1.9"),
                    "end",
                ]
            )
        )
    )
    assert sighting_from_packet(request) == Sighting(
        "00:26:ab:00:00:01", "10.213.1.9", "dhcp_passive", "EPSON-3F"
    )
    hashed = sighting_from_packet(request, "hash")
    assert hashed is not None and hashed.hostname is not None
    assert hashed.hostname.startswith("sha256:") and "EPSON" not in hashed.hostname
    assert sighting_from_packet(request, "drop").hostname is None  # type: ignore[union-attr]

    ack = (
        Ether()
        / IP()
        / UDP(sport=67, dport=68)
        / BOOTP(op=2, yiaddr="10.213.1.10", chaddr=bytes.fromhex("4419b6000001"))
        / DHCP(options=[("message-type", "ack"), "end"])
    )
    assert sighting_from_packet(ack) == Sighting("44:19:b6:00:00:01", "10.213.1.10", "dhcp_passive")

    arp = Ether() / ARP(op=1, hwsrc="44:19:b6:00:00:02", psrc="10.213.1.11", pdst="10.213.1.1")
    assert sighting_from_packet(arp) == Sighting("44:19:b6:00:00:02", "10.213.1.11", "arp_passive")
    probe = Ether() / ARP(op=1, hwsrc="44:19:b6:00:00:02", psrc="0.0.0.0", pdst="10.213.1.11")
    assert sighting_from_packet(probe) is None
    assert sighting_from_packet(Ether() / IP() / UDP()) is None


@settings(deadline=None)
@given(st.sampled_from([b"\x08\x06", b"\x08\x00"]), st.binary(max_size=400))
def test_packet_parsing_never_crashes_on_garbage(ethertype: bytes, body: bytes) -> None:
    """Garbage after a valid Ethernet header (ARP or IPv4), as a sniffer would hand it over."""
    from scapy.layers.l2 import Ether

    sighting_from_packet(Ether(b"\xff" * 6 + b"\x00\x26\xab\x00\x00\x01" + ethertype + body))


def test_clean_hostname() -> None:
    assert clean_hostname(b"\xffproj\x00ector ") == "\ufffdprojector"
    assert clean_hostname(b"") is None
    assert clean_hostname("x" * 300) == "x" * 64


def test_merge_prefers_sweep_keeps_conflicts_and_names_by_mac() -> None:
    network = ipaddress.IPv4Network("10.213.1.0/24")
    merged = merge_sightings(
        [
            Sighting("00:26:ab:00:00:01", "10.213.1.9", "arp_passive"),
            Sighting("00:26:ab:00:00:01", "10.213.1.9", "arp_sweep"),
            Sighting("00:26:ab:00:00:01", None, "dhcp_passive", "EPSON-3F"),
            Sighting("44:19:b6:00:00:01", "10.213.1.9", "arp_sweep"),  # address conflict
            Sighting("44:19:b6:00:00:02", "10.99.0.1", "arp_passive"),  # other subnet
            Sighting("02:00:00:00:00:01", "10.213.1.1", "arp_passive"),  # the scanner itself
        ],
        network,
        frozenset({"02:00:00:00:00:01"}),
    )
    assert merged == [
        Sighting("00:26:ab:00:00:01", "10.213.1.9", "arp_sweep", "EPSON-3F"),
        Sighting("44:19:b6:00:00:01", "10.213.1.9", "arp_sweep"),
    ]


def test_guessing_prefers_ports_over_vendor() -> None:
    assert guess_device_type([80, 554], None) == "camera"
    assert guess_device_type([4352], None) == "projector"
    assert guess_device_type([9100], "camera") == "other"
    assert guess_device_type([], "camera") == "camera"
    assert guess_device_type([3389], None) == "pc"
    assert guess_device_type([80], None) is None


def _fake_sweep(answers: dict[str, str]):  # type: ignore[no-untyped-def]
    def sweep(plan: SweepPlan, *, interface: str | None, retries: int, reply_wait_s: float):  # type: ignore[no-untyped-def]
        return answers

    return sweep


def _no_listen(
    seconds: float, *, interface: str | None, policy: str, stop: threading.Event | None
) -> list[Sighting]:
    return [Sighting("00:26:ab:00:00:01", None, "dhcp_passive", "EPSON-3F")]


def test_run_scan_builds_a_valid_discovery_message() -> None:
    options = ScanOptions(subnet="10.213.1.0/24", port_checks=True, passive_s=1)
    result = run_scan(
        options,
        oui=default_table(),
        sweep=_fake_sweep({"10.213.1.9": "00:26:ab:00:00:01", "10.213.1.20": "44:19:b6:00:00:01"}),
        listen=_no_listen,  # type: ignore[arg-type]
        port_checker=lambda addresses, ports: {"10.213.1.20": [554]},
    )
    (message,) = to_messages(result, site="school-a", device_id="scan-1")
    topic = build_topic("school-a", "scan-1", "discovery")
    decoded = decode_message(topic, encode_message(message)).message
    assert isinstance(decoded, DiscoveryMessage) and decoded.complete
    by_ip = {host.ip: host for host in decoded.hosts}
    assert by_ip["10.213.1.9"].vendor == "Epson"
    assert by_ip["10.213.1.9"].hostname == "EPSON-3F"
    assert by_ip["10.213.1.20"].guessed_type == "camera"
    assert by_ip["10.213.1.20"].open_ports == [554]


def test_discovery_message_validation_rejects_bad_hosts() -> None:
    topic = build_topic("school-a", "scan-1", "discovery")
    good = encode_message(
        DiscoveryMessage(device_id="scan-1", site="school-a", subnet="10.0.0.0/24")
    )
    for bad in (
        good.replace(b'"hosts":[]', b'"hosts":[{"ip":"10.0.0.1","mac":"44-19-B6-00-00-01"}]'),
        good.replace(b'"hosts":[]', b'"hosts":[{"ip":"10.0.0.1","open_ports":[0]}]'),
        good.replace(b'"hosts":[]', b'"hosts":[{"ip":"10.0.0.1","guessed_type":"printer"}]'),
    ):
        assert bad != good
        with pytest.raises(WireRejection) as rejection:
            decode_message(topic, bad)
        assert rejection.value.reason == "schema"


def test_large_sweeps_are_split_and_only_the_last_part_is_complete() -> None:
    hosts = [DiscoveredHost(ip=f"10.0.{i // 250}.{i % 250 + 1}") for i in range(4001)]
    parts = to_messages(ScanResult("10.0.0.0/20", hosts), site="s", device_id="d")
    assert [len(p.hosts) for p in parts] == [MAX_HOSTS_PER_MESSAGE, MAX_HOSTS_PER_MESSAGE, 1]
    assert [p.complete for p in parts] == [False, False, True]
    assert to_messages(ScanResult("10.0.0.0/24"), site="s", device_id="d")[0].hosts == []


def test_probe_turns_a_failed_sweep_into_an_event() -> None:
    def failing(options: ScanOptions) -> ScanResult:
        raise ScanError("cannot open a raw socket")

    context = ProbeContext(device_id="pc-1", site="school-a", settings=AgentSettings())
    probe = DiscoveryProbe(ScanOptions(subnet="10.213.1.0/24"), scan=failing)
    message = probe.collect(context)
    assert isinstance(message, EventMessage) and message.event_type == "discovery.failed"
    assert (probe.name, probe.kind) == ("discovery", "discovery")
    ok = DiscoveryProbe(
        ScanOptions(subnet="10.213.1.0/24"), scan=lambda o: ScanResult("10.213.1.0/24")
    ).collect(context)
    assert isinstance(ok, DiscoveryMessage) and ok.device_id == "pc-1"
