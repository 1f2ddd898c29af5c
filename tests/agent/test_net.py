"""Net probe: ping and route parsers on recorded outputs, then checks against local servers."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Callable, Iterator, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from msgspec.structs import asdict

from campuswatch.agent.commands import CommandError, CommandResult
from campuswatch.agent.probes import ProbeContext
from campuswatch.agent.probes import net as net_module
from campuswatch.agent.probes.net import (
    MAX_STUCK_RESOLVERS,
    NetProbe,
    _median,
    check_http_target,
    parse_ping_output,
    parse_proc_net_route,
    parse_windows_routes,
    ping_argv,
    resolve_with_timeout,
)
from campuswatch.agent.settings import AgentSettings, NetSettings
from campuswatch.wire import NetMessage, decode_message, encode_message

CASES = Path(__file__).parent / "testcases" / "net"
SITE, DEVICE = "school-a", "lab-pc-01"


def expected(input_file: Path) -> Any:
    stem = input_file.name.rsplit(".", 1)[0]
    return json.loads((input_file.parent / f"{stem}.expected.json").read_text(encoding="utf-8"))


def recorded(name: str) -> str:
    return (CASES / name).read_text(encoding="utf-8")


# --- parsers -----------------------------------------------------------------------------------

PING_CASES = sorted(CASES.glob("ping-*.txt"))


@pytest.mark.parametrize("path", PING_CASES, ids=lambda p: p.stem)
def test_ping_output(path: Path) -> None:
    summary = parse_ping_output(path.read_text(encoding="utf-8"))
    assert (asdict(summary) if summary else None) == expected(path)


def test_ping_cases_cover_every_format() -> None:
    names = {path.stem for path in PING_CASES}
    assert {"ping-iputils-ok", "ping-busybox", "ping-windows-en", "ping-windows-de"} <= names


def test_linux_route_picks_lowest_metric_gateway_route() -> None:
    path = CASES / "route-linux.txt"
    route = parse_proc_net_route(path.read_text(encoding="utf-8"))
    assert route is not None and asdict(route) == expected(path)


def test_linux_route_without_default_or_with_garbage() -> None:
    header = "Iface\tDestination\tGateway\tFlags\tRefCnt\tUse\tMetric\tMask\n"
    assert (
        parse_proc_net_route(header + "eth0\t0000000A\t00000000\t0001\t0\t0\t0\t00FFFFFF\n") is None
    )
    assert parse_proc_net_route(header + "eth0\tzz\tyy\txx\t0\t0\tq\t0\n") is None
    assert parse_proc_net_route("") is None


def test_windows_route_single_object_and_list() -> None:
    path = CASES / "route-windows.json"
    route = parse_windows_routes(path.read_text(encoding="utf-8"))
    assert route is not None and asdict(route) == expected(path)
    single = parse_windows_routes('{"NextHop":"192.168.1.1","InterfaceAlias":"Wi-Fi"}')
    assert single is not None and single.gateway == "192.168.1.1"
    assert parse_windows_routes("") is None


def test_ping_argv_per_platform() -> None:
    assert ping_argv("linux", "10.0.0.1", 4, 2.0) == [
        "ping",
        "-c",
        "4",
        "-W",
        "2",
        "-n",
        "10.0.0.1",
    ]
    assert ping_argv("windows", "10.0.0.1", 3, 1.5) == ["ping", "-n", "3", "-w", "1500", "10.0.0.1"]


# --- local HTTP server -------------------------------------------------------------------------


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        if self.path.startswith("/moved"):
            self.send_response(302)
            self.send_header("Location", "http://127.0.0.1:9/never-followed")
        else:
            self.send_response(204)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass  # keep test output clean


@pytest.fixture
def http_server() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def test_http_target_ok_with_latency(http_server: str) -> None:
    check = check_http_target(f"{http_server}/generate_204", timeout_s=5)
    assert check.ok and check.status_code == 204 and check.error is None
    assert check.latency_ms is not None and check.latency_ms >= 0


def test_http_redirect_is_reachable_and_not_followed(http_server: str) -> None:
    check = check_http_target(f"{http_server}/moved", timeout_s=5)
    assert check.ok and check.status_code == 302


def test_http_target_closed_port(closed_port: int) -> None:
    check = check_http_target(f"http://127.0.0.1:{closed_port}/", timeout_s=5)
    assert not check.ok and check.latency_ms is None
    assert check.error is not None and "refused" in check.error.lower()


def test_https_against_plain_http_reports_tls_error(http_server: str) -> None:
    check = check_http_target(http_server.replace("http://", "https://") + "/", timeout_s=5)
    assert not check.ok and check.error is not None and check.error.startswith("tls:")


@pytest.mark.parametrize(
    "url", ["ftp://127.0.0.1/", "no url at all", "http://", "http://[::1/", "http://host:port/"]
)
def test_invalid_urls_are_reported_not_raised(url: str) -> None:
    check = check_http_target(url, timeout_s=1)
    assert not check.ok and check.error is not None and "invalid url" in check.error


def test_credentials_never_appear_in_the_reported_url(closed_port: int) -> None:
    check = check_http_target(f"http://admin:secret@127.0.0.1:{closed_port}/x", timeout_s=2)
    assert "secret" not in check.url and check.url == f"http://127.0.0.1:{closed_port}/x"


# --- DNS ---------------------------------------------------------------------------------------


def test_dns_localhost_resolves() -> None:
    check = resolve_with_timeout("localhost", timeout_s=5)
    assert check.ok and check.resolve_ms is not None and check.error is None


def test_dns_failure_is_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(*args: object, **kwargs: object) -> object:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", fail)
    check = resolve_with_timeout("school.example", timeout_s=5)
    assert not check.ok and check.error == "Name or service not known"


def test_hung_resolver_times_out_and_stuck_threads_are_capped(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    release = threading.Event()

    def hang(*args: object, **kwargs: object) -> object:
        release.wait()
        raise socket.gaierror(socket.EAI_AGAIN, "released")

    monkeypatch.setattr(socket, "getaddrinfo", hang)
    try:
        for _ in range(MAX_STUCK_RESOLVERS):
            check = resolve_with_timeout("hung.example", timeout_s=0.01)
            assert not check.ok and check.error is not None and "no answer" in check.error
        capped = resolve_with_timeout("hung.example", timeout_s=0.01)
        assert capped.error == "resolver hung on earlier lookups"
    finally:
        release.set()
        for thread in threading.enumerate():
            if thread.name.startswith("dns-"):
                thread.join()
    assert net_module._stuck_resolvers == 0  # released threads give their slot back


# --- the probe ---------------------------------------------------------------------------------

Responder = Callable[[Sequence[str]], CommandResult]


def ok(argv: Sequence[str], stdout: str, returncode: int = 0, stderr: str = "") -> CommandResult:
    return CommandResult(tuple(argv), returncode, stdout, stderr)


def make_context(
    respond: Responder, targets: list[str], dns_names: list[str] | None = None
) -> tuple[ProbeContext, list[list[str]]]:
    calls: list[list[str]] = []

    def run(argv: Sequence[str], *, timeout_s: float, check: bool = True) -> CommandResult:
        calls.append(list(argv))
        return respond(argv)

    settings = AgentSettings(
        net=NetSettings(
            uplink_type="fibre",
            dns_names=["localhost"] if dns_names is None else dns_names,
            http_targets=targets,
            ping_count=4,
            timeout_s=5,
        )
    )
    return ProbeContext(device_id=DEVICE, site=SITE, settings=settings, run=run), calls


def linux_root(tmp_path: Path, gateway_hex: str = "0100000A") -> Path:
    (tmp_path / "proc" / "net").mkdir(parents=True)
    (tmp_path / "proc" / "net" / "route").write_text(
        "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n"
        f"eth0\t00000000\t{gateway_hex}\t0003\t0\t0\t0\t00000000\t0\t0\t0\n"
    )
    return tmp_path


def assert_valid_on_wire(message: NetMessage) -> None:
    decoded = decode_message(f"cw/v1/{SITE}/{DEVICE}/net", encode_message(message)).message
    assert decoded == message


def test_probe_with_recorded_ping_and_local_targets(
    tmp_path: Path, http_server: str, closed_port: int
) -> None:
    targets = [f"{http_server}/a", f"{http_server}/b", f"http://127.0.0.1:{closed_port}/"]
    context, calls = make_context(lambda argv: ok(argv, recorded("ping-iputils-ok.txt")), targets)

    message = NetProbe(root=linux_root(tmp_path), platform="linux").collect(context)

    assert_valid_on_wire(message)
    assert calls == [["ping", "-c", "4", "-W", "5", "-n", "10.0.0.1"]]
    assert message.gateway is not None
    assert (message.gateway.address, message.gateway.reachable) == ("10.0.0.1", True)
    assert (message.gateway.rtt_ms, message.gateway.loss_pct, message.loss_pct) == (0.47, 25, 25)
    assert [t.ok for t in message.targets] == [True, True, False]
    good = sorted(t.latency_ms for t in message.targets if t.latency_ms is not None)
    assert message.latency_ms == pytest.approx((good[0] + good[1]) / 2, abs=0.001)
    assert message.internet_ok is True and message.uplink_type == "fibre"
    assert [d.name for d in message.dns] == ["localhost"] and message.dns[0].ok
    assert message.errors == []


def test_all_targets_down_means_no_internet(tmp_path: Path, closed_port: int) -> None:
    context, _ = make_context(
        lambda argv: ok(argv, recorded("ping-iputils-down.txt"), 1),
        [f"http://127.0.0.1:{closed_port}/"],
    )
    message = NetProbe(root=linux_root(tmp_path), platform="linux").collect(context)
    assert_valid_on_wire(message)
    assert message.internet_ok is False and message.latency_ms is None
    assert message.gateway is not None and message.gateway.reachable is False
    assert message.loss_pct == 100


def test_no_targets_leaves_internet_unknown(tmp_path: Path) -> None:
    context, _ = make_context(lambda argv: ok(argv, recorded("ping-busybox.txt")), [], [])
    message = NetProbe(root=linux_root(tmp_path), platform="linux").collect(context)
    assert message.internet_ok is None and message.targets == [] and message.dns == []


def test_busybox_ping_is_retried_without_numeric_flag(tmp_path: Path) -> None:
    def busybox(argv: Sequence[str]) -> CommandResult:
        if "-n" in argv:
            return ok(argv, "", 1, "ping: unrecognized option: n\n")
        return ok(argv, recorded("ping-busybox.txt"))

    context, calls = make_context(busybox, [])
    message = NetProbe(root=linux_root(tmp_path), platform="linux").collect(context)
    assert len(calls) == 2 and "-n" not in calls[1]
    assert message.gateway is not None and message.gateway.rtt_ms == 2.06


@pytest.mark.parametrize(
    "failure",
    [
        CommandError("not_found", "ping is not installed"),
        ok(["ping"], "", 2, "ping: socket: Operation not permitted\n"),
    ],
    ids=["missing", "not-permitted"],
)
def test_without_usable_ping_tcp_tells_reachability(
    tmp_path: Path, failure: CommandError | CommandResult
) -> None:
    def respond(argv: Sequence[str]) -> CommandResult:
        if isinstance(failure, CommandError):
            raise failure
        return failure

    # Gateway 127.0.0.1: port 53 either answers or refuses; both prove the host is there.
    context, _ = make_context(respond, [])
    message = NetProbe(root=linux_root(tmp_path, "0100007F"), platform="linux").collect(context)
    assert_valid_on_wire(message)
    assert message.gateway is not None
    assert (message.gateway.address, message.gateway.reachable) == ("127.0.0.1", True)
    assert message.gateway.rtt_ms is None and message.loss_pct is None
    assert message.errors == []


def test_ping_timeout_is_reported_and_tcp_still_used(tmp_path: Path) -> None:
    def hung(argv: Sequence[str]) -> CommandResult:
        raise CommandError("timeout", "ping did not finish in 26 s")

    context, _ = make_context(hung, [])
    message = NetProbe(root=linux_root(tmp_path, "0100007F"), platform="linux").collect(context)
    assert message.gateway is not None and message.gateway.reachable is True
    assert [(e.probe, e.reason) for e in message.errors] == [("net.ping", "timeout")]


def test_no_default_route(tmp_path: Path) -> None:
    root = linux_root(tmp_path)
    (root / "proc" / "net" / "route").write_text("Iface\tDestination\tGateway\n")
    context, calls = make_context(lambda argv: ok(argv, ""), [])
    message = NetProbe(root=root, platform="linux").collect(context)
    assert_valid_on_wire(message)
    assert message.gateway is None and calls == []
    assert [(e.probe, e.reason) for e in message.errors] == [("net.route", "not_found")]


def test_unreadable_route_table_is_an_error(tmp_path: Path) -> None:
    context, _ = make_context(lambda argv: ok(argv, ""), [])
    message = NetProbe(root=tmp_path, platform="linux").collect(context)
    assert message.gateway is None
    assert [(e.probe, e.reason) for e in message.errors] == [("net.route", "not_found")]


def test_windows_route_and_ping(tmp_path: Path) -> None:
    def windows(argv: Sequence[str]) -> CommandResult:
        if argv[0] == "powershell.exe":
            return ok(argv, recorded("route-windows.json"))
        return ok(argv, recorded("ping-windows-en.txt").replace("192.168.1.1", "10.20.0.1"))

    context, calls = make_context(windows, [])
    message = NetProbe(platform="windows").collect(context)
    assert_valid_on_wire(message)
    assert calls[1] == ["ping", "-n", "4", "-w", "5000", "10.20.0.1"]
    assert message.gateway is not None
    assert (message.gateway.address, message.gateway.rtt_ms, message.loss_pct) == (
        "10.20.0.1",
        2.0,
        25.0,
    )


def test_live_probe_on_this_machine(tmp_path: Path, http_server: str) -> None:
    """The real ping (or its TCP fallback) and resolver, aimed at this machine only."""
    settings = AgentSettings(
        net=NetSettings(
            dns_names=["localhost"], http_targets=[http_server], ping_count=1, timeout_s=2
        )
    )
    context = ProbeContext(device_id=DEVICE, site=SITE, settings=settings)
    root = linux_root(tmp_path, "0100007F")
    message = NetProbe(root=root, platform="linux").collect(context)
    assert_valid_on_wire(message)
    assert message.internet_ok is True and message.dns[0].ok
    assert message.gateway is not None and message.gateway.reachable is True


@pytest.mark.parametrize(
    "values", [[5.0], [3.0, 1.0], [4.0, 1.0, 9.0], [2.5, 7.0, 1.0, 8.0], [1.0, 1.0, 2.0, 2.0, 9.0]]
)
def test_median_matches_statistics(values: list[float]) -> None:
    import statistics

    assert _median(values) == statistics.median(values)
