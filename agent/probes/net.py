"""Connectivity seen from this PC: default gateway (ping), DNS resolution, HTTP(S) targets.

The system ``ping`` is used rather than raw ICMP sockets because the agent must not need
extra privileges; when ping is missing or not allowed, a TCP connect still tells whether
the gateway answers.
"""

from __future__ import annotations

import http.client
import re
import socket
import ssl
import struct
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Final, TypeVar
from urllib.parse import urlsplit, urlunsplit

import msgspec
import psutil

from campuswatch.agent.commands import CommandError
from campuswatch.agent.probes import ProbeContext
from campuswatch.agent.probes.inventory import PlatformName, current_platform, error_from_exception
from campuswatch.agent.probes.inventory_linux import short_text
from campuswatch.wire.messages import DnsCheck, GatewayCheck, NetMessage, ProbeError, TargetCheck

T = TypeVar("T")

RTF_UP: Final = 0x1
RTF_GATEWAY: Final = 0x2
GATEWAY_TCP_PORTS: Final = (53, 80)
# A hung resolver thread cannot be killed; beyond this many stuck ones no new lookups start,
# so a broken DNS server cannot make the agent pile up threads every minute.
MAX_STUCK_RESOLVERS: Final = 4
WINDOWS_ROUTE_SCRIPT: Final = (
    "Get-NetRoute -AddressFamily IPv4 -DestinationPrefix '0.0.0.0/0' -ErrorAction SilentlyContinue"
    " | Sort-Object RouteMetric | Select-Object NextHop,InterfaceAlias,RouteMetric"
    " | ConvertTo-Json -Compress"
)


class DefaultRoute(msgspec.Struct, frozen=True):
    interface: str
    gateway: str


class PingSummary(msgspec.Struct, frozen=True):
    transmitted: int
    received: int
    loss_pct: float
    rtt_avg_ms: float | None


def parse_proc_net_route(text: str) -> DefaultRoute | None:
    """The lowest-metric default route that is up and goes through a gateway."""
    best: tuple[int, DefaultRoute] | None = None
    for line in text.splitlines()[1:]:
        columns = line.split()
        if len(columns) < 7:
            continue
        interface, destination, gateway_hex, flags_hex, metric = (
            columns[0],
            columns[1],
            columns[2],
            columns[3],
            columns[6],
        )
        try:
            flags = int(flags_hex, 16)
            # The kernel prints the address as a little-endian 32-bit number.
            gateway = socket.inet_ntoa(struct.pack("<I", int(gateway_hex, 16)))
            is_default = int(destination, 16) == 0
            metric_value = int(metric)
        except (ValueError, struct.error, OSError):
            continue
        if not is_default or flags & (RTF_UP | RTF_GATEWAY) != RTF_UP | RTF_GATEWAY:
            continue
        if best is None or metric_value < best[0]:
            best = (metric_value, DefaultRoute(interface, gateway))
    return best[1] if best else None


def parse_windows_routes(json_text: str) -> DefaultRoute | None:
    """Get-NetRoute output (one object or a list), lowest RouteMetric with a real next hop."""
    # Loaded here: a Linux PC never keeps the Windows parsers (and json) resident.
    from campuswatch.agent.probes.inventory_windows import load_json_objects

    candidates: list[tuple[float, DefaultRoute]] = []
    for route in load_json_objects(json_text):
        next_hop, alias = route.get("NextHop"), route.get("InterfaceAlias")
        if not isinstance(next_hop, str) or not isinstance(alias, str):
            continue
        if next_hop in ("", "0.0.0.0"):
            continue
        metric = route.get("RouteMetric")
        rank = float(metric) if isinstance(metric, int | float) else float("inf")
        candidates.append((rank, DefaultRoute(alias, next_hop)))
    return min(candidates, key=lambda item: item[0])[1] if candidates else None


def _number(text: str) -> float:
    # Some locales print "0,045"; thousands separators never occur in ping times.
    return float(text.replace(",", "."))


_UNIX_COUNTS = re.compile(r"(\d+) packets transmitted, (\d+) (?:packets )?received")
_UNIX_LOSS = re.compile(r"([\d.,]+)% packet loss")
_UNIX_RTT = re.compile(r"=\s*([\d.,]+)/([\d.,]+)/([\d.,]+)")
# Windows summaries are translated, but their shape is not: "<word> = 4, <word> = 4,
# <word> = 0 (0% <word>)" and "<word> = 1ms, <word> = 3ms, <word> = 2ms" (min, max, avg).
_WINDOWS_COUNTS = re.compile(r"=\s*(\d+),[^=\n]*=\s*(\d+),[^=\n]*=\s*(\d+)\s*\(\s*(\d+)\s*%")
_WINDOWS_RTT = re.compile(
    r"=\s*([\d.,]+)\s*ms,[^=\n]*=\s*([\d.,]+)\s*ms,[^=\n]*=\s*([\d.,]+)\s*ms", re.IGNORECASE
)


def parse_ping_output(text: str) -> PingSummary | None:
    """Summary of iputils, busybox or Windows ping output; None if there is no summary."""
    if match := _UNIX_COUNTS.search(text):
        transmitted, received = int(match.group(1)), int(match.group(2))
        loss_match = _UNIX_LOSS.search(text)
        if loss_match:
            loss = _number(loss_match.group(1))
        else:
            loss = 100.0 * (transmitted - received) / transmitted if transmitted else 100.0
        rtt = _UNIX_RTT.search(text)
        return PingSummary(
            transmitted, received, min(loss, 100.0), _number(rtt.group(2)) if rtt else None
        )
    if match := _WINDOWS_COUNTS.search(text):
        transmitted, received = int(match.group(1)), int(match.group(2))
        # Windows counts "Destination host unreachable" (sent by a router) as received;
        # only replies carrying a TTL came from the target itself.
        replies = len(re.findall(r"TTL=\d+", text, re.IGNORECASE))
        if replies < received:
            received = replies
        loss = 100.0 * (transmitted - received) / transmitted if transmitted else 100.0
        rtt = _WINDOWS_RTT.search(text)
        rtt_avg = _number(rtt.group(3)) if rtt and received else None
        return PingSummary(transmitted, received, loss, rtt_avg)
    return None


def ping_argv(platform: PlatformName, address: str, count: int, timeout_s: float) -> list[str]:
    if platform == "windows":
        return ["ping", "-n", str(count), "-w", str(max(1, round(timeout_s * 1000))), address]
    return ["ping", "-c", str(count), "-W", str(max(1, round(timeout_s))), "-n", address]


def tcp_reachable(address: str, ports: tuple[int, ...], timeout_s: float) -> bool:
    """True if the host answers on any port, including with a refusal (RST is an answer)."""
    for port in ports:
        try:
            with socket.create_connection((address, port), timeout=timeout_s):
                return True
        except ConnectionRefusedError:
            return True
        except OSError:
            continue
    return False


_stuck_resolvers = 0
_stuck_lock = threading.Lock()


def resolve_with_timeout(name: str, timeout_s: float) -> DnsCheck:
    """Resolve ``name`` in a daemon thread so a hung resolver cannot block the probe."""
    global _stuck_resolvers
    label = short_text(name) or "?"
    with _stuck_lock:
        if _stuck_resolvers >= MAX_STUCK_RESOLVERS:
            return DnsCheck(name=label, ok=False, error="resolver hung on earlier lookups")
        _stuck_resolvers += 1
    outcome: list[BaseException | float] = []

    def resolve() -> None:
        global _stuck_resolvers
        started = time.perf_counter()
        try:
            socket.getaddrinfo(name, None, proto=socket.IPPROTO_TCP)
            outcome.append((time.perf_counter() - started) * 1000)
        except BaseException as exc:  # reported to the caller, never raised in the thread
            outcome.append(exc)
        finally:
            with _stuck_lock:
                _stuck_resolvers -= 1

    worker = threading.Thread(target=resolve, name=f"dns-{label[:20]}", daemon=True)
    worker.start()
    worker.join(timeout_s)
    if not outcome:
        return DnsCheck(name=label, ok=False, error=f"no answer in {timeout_s:g} s")
    result = outcome[0]
    if isinstance(result, float):
        return DnsCheck(name=label, ok=True, resolve_ms=round(result, 3))
    if isinstance(result, socket.gaierror):
        error = result.strerror or str(result)
    else:
        error = f"{type(result).__name__}: {result}"
    return DnsCheck(name=label, ok=False, error=short_text(error) or "failed")


def _url_without_credentials(url: str) -> str:
    """The URL as reported: user:password@ must not travel to the collector."""
    try:
        parts = urlsplit(url)
        if parts.username is None and parts.password is None:
            return url
        host = parts.hostname or ""
        netloc = f"{host}:{parts.port}" if parts.port else host
    except ValueError:
        return url.rsplit("@", 1)[-1]
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def check_http_target(url: str, timeout_s: float) -> TargetCheck:
    """GET ``url`` without following redirects: any HTTP status means the target is reachable.

    Latency runs from before the DNS lookup to the response headers, i.e. what a user waits.
    """
    label = short_text(_url_without_credentials(url)) or "?"
    try:
        parts = urlsplit(url)
        host, port = parts.hostname, parts.port
    except ValueError as exc:
        return TargetCheck(url=label, ok=False, error=short_text(f"invalid url: {exc}"))
    if parts.scheme not in ("http", "https") or not host:
        return TargetCheck(url=label, ok=False, error="invalid url: need http(s)://host/...")
    connection: http.client.HTTPConnection
    if parts.scheme == "https":
        connection = http.client.HTTPSConnection(
            host, port, timeout=timeout_s, context=ssl.create_default_context()
        )
    else:
        connection = http.client.HTTPConnection(host, port, timeout=timeout_s)
    path = parts.path or "/"
    if parts.query:
        path = f"{path}?{parts.query}"
    started = time.perf_counter()
    try:
        connection.request("GET", path, headers={"User-Agent": "CampusWatch-agent"})
        response = connection.getresponse()
        latency_ms = (time.perf_counter() - started) * 1000
        return TargetCheck(
            url=label,
            ok=True,
            status_code=response.status if 0 <= response.status <= 999 else None,
            latency_ms=round(latency_ms, 3),
        )
    except ssl.SSLError as exc:
        reason = getattr(exc, "verify_message", None) or exc.reason or str(exc)
        return TargetCheck(url=label, ok=False, error=short_text(f"tls: {reason}"))
    except TimeoutError:
        return TargetCheck(url=label, ok=False, error=f"timeout after {timeout_s:g} s")
    except socket.gaierror as exc:
        return TargetCheck(url=label, ok=False, error=short_text(f"dns: {exc.strerror or exc}"))
    except (OSError, http.client.HTTPException) as exc:
        error = short_text(f"{type(exc).__name__}: {exc}") or type(exc).__name__
        return TargetCheck(url=label, ok=False, error=error)
    finally:
        connection.close()


def _median(values: list[float]) -> float:
    """``statistics.median`` without importing ``statistics`` (with ``fractions`` and
    ``random``, ~0.2 MB of resident memory on every lab PC for one median; issue 18)."""
    ordered = sorted(values)
    middle = len(ordered) // 2
    if len(ordered) % 2:
        return ordered[middle]
    return (ordered[middle - 1] + ordered[middle]) / 2


class NetProbe:
    """Collects a ``NetMessage``; ``root`` and ``platform`` let tests replay recorded files."""

    name = "net"
    kind = "net"

    def __init__(self, *, root: Path = Path("/"), platform: PlatformName | None = None) -> None:
        self._root = root
        self._platform: PlatformName = platform or current_platform()

    def collect(self, context: ProbeContext) -> NetMessage:
        settings = context.settings.net
        errors: list[ProbeError] = []

        def attempt(part: str, action: Callable[[], T]) -> T | None:
            try:
                return action()
            except Exception as exc:  # one failing check must not lose the others
                errors.append(error_from_exception(f"net.{part}", exc))
                return None

        route = attempt("route", lambda: self._default_route(context))
        gateway = None
        if route is None and not errors:
            errors.append(
                ProbeError(probe="net.route", reason="not_found", detail="no default route")
            )
        if route is not None:
            gateway = attempt("gateway", lambda: self._check_gateway(context, route, errors))
        dns = [resolve_with_timeout(name, settings.timeout_s) for name in settings.dns_names]
        targets = [check_http_target(url, settings.timeout_s) for url in settings.http_targets]
        latencies = [t.latency_ms for t in targets if t.ok and t.latency_ms is not None]
        link_speed = attempt("link", lambda: self._link_speed(route)) if route else None
        return NetMessage(
            device_id=context.device_id,
            site=context.site,
            uplink_type=settings.uplink_type,
            gateway=gateway,
            dns=dns,
            targets=targets,
            internet_ok=any(t.ok for t in targets) if targets else None,
            loss_pct=gateway.loss_pct if gateway else None,
            latency_ms=round(_median(latencies), 3) if latencies else None,
            link_speed_mbps=link_speed,
            errors=errors,
        )

    def _default_route(self, context: ProbeContext) -> DefaultRoute | None:
        if self._platform == "windows":
            argv = [
                context.settings.av.powershell,
                "-NoProfile",
                "-NonInteractive",
                "-Command",
                WINDOWS_ROUTE_SCRIPT,
            ]
            output = context.run(argv, timeout_s=context.settings.net.timeout_s * 4).stdout
            return parse_windows_routes(output)
        text = (self._root / "proc/net/route").read_text(encoding="utf-8", errors="replace")
        return parse_proc_net_route(text)

    def _check_gateway(
        self, context: ProbeContext, route: DefaultRoute, errors: list[ProbeError]
    ) -> GatewayCheck:
        settings = context.settings.net
        summary: PingSummary | None = None
        try:
            summary = self._ping(context, route.gateway)
            if summary is None:
                errors.append(
                    ProbeError(probe="net.ping", reason="parse", detail="no summary in output")
                )
        except CommandError as exc:
            # A missing or forbidden ping is expected on minimal images and not worth an
            # error every minute; a hung one is. Either way TCP still tells reachability.
            if exc.reason not in ("not_found", "permission"):
                errors.append(error_from_exception("net.ping", exc))
        if summary is None:
            reachable = tcp_reachable(route.gateway, GATEWAY_TCP_PORTS, settings.timeout_s)
            return GatewayCheck(address=route.gateway, reachable=reachable)
        return GatewayCheck(
            address=route.gateway,
            reachable=summary.received > 0,
            rtt_ms=summary.rtt_avg_ms,
            loss_pct=summary.loss_pct,
        )

    def _ping(self, context: ProbeContext, address: str) -> PingSummary | None:
        settings = context.settings.net
        argv = ping_argv(self._platform, address, settings.ping_count, settings.timeout_s)
        timeout_s = settings.ping_count * (settings.timeout_s + 1) + 2
        # ping exits non-zero when replies are lost; the summary is still what we want.
        result = context.run(argv, timeout_s=timeout_s, check=False)
        summary = parse_ping_output(result.stdout)
        if summary is None and "-n" in argv and self._platform == "linux":
            # busybox ping has no -n (it never resolves names anyway): retry without it.
            argv.remove("-n")
            summary = parse_ping_output(context.run(argv, timeout_s=timeout_s, check=False).stdout)
        if summary is None and result.returncode != 0 and "not permitted" in result.stderr:
            raise CommandError("permission", result.stderr.strip()[:200])
        return summary

    @staticmethod
    def _link_speed(route: DefaultRoute) -> float | None:
        stats = psutil.net_if_stats().get(route.interface)
        # 0 means the driver does not say (Wi-Fi, virtual NICs): unknown, not a dead link.
        return float(stats.speed) if stats and stats.speed > 0 else None
