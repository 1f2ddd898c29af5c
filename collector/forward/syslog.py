"""Everything syslog: RFC 5424 messages over UDP (RFC 5426), TCP (RFC 6587) and TLS (RFC 5425).

Choices, and why:
- Facility ``local4`` by default: ``authpriv`` is routed by most relays into restricted local
  files next to sshd/sudo logs, whereas a dedicated local facility lets the SOC's relay route
  CampusWatch on its own. Configurable.
- No UTF-8 BOM before MSG by default. RFC 5424 allows MSG-ANY; CEF parsers (ArcSight
  connectors, QRadar DSMs) look for ``CEF:0|`` at the start and a BOM breaks that. The text is
  UTF-8 either way; ``utf8_bom=True`` switches the BOM on for receivers that want it.
- STRUCTURED-DATA is ``-``: private SD-IDs must carry a registered enterprise number, and
  every field a SIEM needs is already in the CEF/JSON body.
- TCP and TLS use octet counting (``LEN SP MSG``), never LF framing, so a newline inside a
  value can never split a message.
- UDP: one message per datagram, cut at ``max_datagram_bytes`` (default 8192) on a UTF-8
  character boundary. RFC 5426 only guarantees 480 bytes (IPv4) and recommends receivers
  take 2048; across a WAN set 2048. UDP has no acknowledgement: use TCP or TLS when loss
  matters. Over TCP/TLS a clean close by the receiver is noticed before the next write
  (without it the first message after a receiver restart vanishes into a dead socket).
"""

from __future__ import annotations

import errno
import json
import logging
import os
import select
import socket
import ssl
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Final, Literal

from campuswatch.collector.forward import PRODUCT, PRODUCT_VERSION, VENDOR
from campuswatch.collector.forward.base import (
    DestinationRejected,
    DestinationUnavailable,
    OutboxItem,
)
from campuswatch.collector.forward.cef import render_cef
from campuswatch.collector.forward.json_formats import render_ecs, render_ocsf
from campuswatch.collector.signals import SYSLOG_SEVERITY, AlertNotification

log = logging.getLogger(__name__)

Transport = Literal["udp", "tcp", "tls"]
MessageFormat = Literal["cef", "ecs", "ocsf"]

FACILITIES: Final[dict[str, int]] = {
    "kern": 0,
    "user": 1,
    "daemon": 3,
    "auth": 4,
    "syslog": 5,
    "authpriv": 10,
    "local0": 16,
    "local1": 17,
    "local2": 18,
    "local3": 19,
    "local4": 20,
    "local5": 21,
    "local6": 22,
    "local7": 23,
}
DEFAULT_FACILITY: Final = "local4"
DEFAULT_PORTS: Final[dict[str, int]] = {"udp": 514, "tcp": 514, "tls": 6514}
UTF8_BOM: Final = b"\xef\xbb\xbf"
NILVALUE: Final = "-"
# Largest IPv4 UDP payload; anything configured above it could never be sent.
UDP_PAYLOAD_LIMIT: Final = 65507
TLS_ACCEPT_PROBE_S: Final = 0.5


def header_token(value: str | None, max_length: int) -> str:
    """A header field: printable US-ASCII without spaces (RFC 5424 PRINTUSASCII), or ``-``."""
    if not value:
        return NILVALUE
    cleaned = "".join(ch if 33 <= ord(ch) <= 126 else "_" for ch in value)
    return cleaned[:max_length] or NILVALUE


def syslog_timestamp(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def format_rfc5424(
    message: str,
    *,
    facility: int,
    severity: int,
    timestamp: datetime,
    hostname: str | None,
    app_name: str,
    procid: str | None,
    msgid: str | None,
    utf8_bom: bool = False,
) -> bytes:
    """``<PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID - MSG`` as bytes."""
    if not 0 <= facility <= 23 or not 0 <= severity <= 7:
        raise ValueError(f"facility {facility} / severity {severity} out of range")
    header = " ".join(
        (
            f"<{facility * 8 + severity}>1",
            syslog_timestamp(timestamp),
            header_token(hostname, 255),
            header_token(app_name, 48),
            header_token(procid, 128),
            header_token(msgid, 32),
            NILVALUE,
        )
    )
    body = message.encode("utf-8", errors="replace")
    return header.encode("ascii") + b" " + (UTF8_BOM if utf8_bom else b"") + body


def truncate_message(message: bytes, limit: int) -> bytes:
    """At most ``limit`` bytes, never ending inside a UTF-8 character or a CEF escape."""
    if len(message) <= limit:
        return message
    cut = message[:limit]
    # Step back over continuation bytes (10xxxxxx) to the start of the last character; drop
    # that character unless all of its bytes made it.
    start = len(cut) - 1
    while start > 0 and cut[start] & 0xC0 == 0x80:
        start -= 1
    lead = cut[start]
    needed = 1 if lead < 0x80 else 2 if lead >> 5 == 0b110 else 3 if lead >> 4 == 0b1110 else 4
    if len(cut) - start < needed:
        cut = cut[:start]
    # An odd run of trailing backslashes would escape whatever a parser appends next.
    trailing = len(cut) - len(cut.rstrip(b"\\"))
    if trailing % 2:
        cut = cut[:-1]
    return cut


def octet_counted(message: bytes) -> bytes:
    """RFC 6587 / RFC 5425 framing: ``MSG-LEN SP SYSLOG-MSG``."""
    return str(len(message)).encode("ascii") + b" " + message


def make_tls_context(
    *,
    ca_file: str | None = None,
    cert_file: str | None = None,
    key_file: str | None = None,
    verify: bool = True,
) -> ssl.SSLContext:
    """Verification on unless explicitly switched off; TLS 1.2 at least (RFC 5425 asks 1.2+)."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ca_file)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if cert_file:
        context.load_cert_chain(cert_file, key_file)
    if not verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


class SyslogDestination:
    """Sends each notification as one RFC 5424 message with a CEF (or JSON) body."""

    def __init__(
        self,
        host: str,
        port: int | None = None,
        *,
        transport: Transport = "udp",
        facility: str = DEFAULT_FACILITY,
        message_format: MessageFormat = "cef",
        hostname: str | None = None,
        app_name: str = "campuswatch",
        utf8_bom: bool = False,
        max_datagram_bytes: int = 8192,
        max_message_bytes: int = 65536,
        timeout_s: float = 10.0,
        ca_file: str | None = None,
        cert_file: str | None = None,
        key_file: str | None = None,
        verify: bool = True,
        server_name: str | None = None,
        vendor: str = VENDOR,
        product: str = PRODUCT,
        product_version: str = PRODUCT_VERSION,
        language: str = "en",
    ) -> None:
        if transport not in DEFAULT_PORTS:
            raise ValueError(f"syslog transport must be udp, tcp or tls, not {transport!r}")
        if facility not in FACILITIES:
            raise ValueError(f"unknown syslog facility {facility!r}; one of {sorted(FACILITIES)}")
        if not 480 <= max_datagram_bytes <= UDP_PAYLOAD_LIMIT:
            raise ValueError(f"max_datagram_bytes must be 480…{UDP_PAYLOAD_LIMIT}")
        self.host = host
        self.port = port or DEFAULT_PORTS[transport]
        self.transport: Transport = transport
        self.facility = FACILITIES[facility]
        self.message_format: MessageFormat = message_format
        self.language = language
        self.hostname = hostname or socket.gethostname()
        self.app_name = app_name
        self.utf8_bom = utf8_bom
        self.max_datagram_bytes = max_datagram_bytes
        self.max_message_bytes = max_message_bytes
        self.timeout_s = timeout_s
        self.server_name = server_name or host
        self._product = (vendor, product, product_version)
        self._tls = (
            make_tls_context(ca_file=ca_file, cert_file=cert_file, key_file=key_file, verify=verify)
            if transport == "tls"
            else None
        )
        self._socket: socket.socket | None = None
        self.truncated_total = 0

    def __repr__(self) -> str:
        return f"SyslogDestination({self.transport}://{self.host}:{self.port})"

    # --- rendering ---------------------------------------------------------------------

    def render_body(self, n: AlertNotification) -> str:
        vendor, product, version = self._product
        if self.message_format == "cef":
            return render_cef(
                n, vendor=vendor, product=product, version=version, language=self.language
            )
        render = render_ecs if self.message_format == "ecs" else render_ocsf
        document = render(
            n, vendor=vendor, product=product, version=version, language=self.language
        )
        return json.dumps(document, ensure_ascii=False, separators=(",", ":"))

    def render(self, n: AlertNotification) -> bytes:
        message = format_rfc5424(
            self.render_body(n),
            facility=self.facility,
            severity=SYSLOG_SEVERITY.get(n.level, 4),
            timestamp=n.at,
            hostname=self.hostname,
            app_name=self.app_name,
            procid=str(os.getpid()),
            msgid=n.event,
            utf8_bom=self.utf8_bom,
        )
        limit = self.max_datagram_bytes if self.transport == "udp" else self.max_message_bytes
        if len(message) > limit:
            self.truncated_total += 1
            log.warning("syslog message for alert %s cut to %d bytes", n.alert_id, limit)
            message = truncate_message(message, limit)
        return message

    # --- sending -----------------------------------------------------------------------

    def send(self, batch: Sequence[OutboxItem]) -> None:
        try:
            messages = [self.render(item.notification) for item in batch]
        except (ValueError, KeyError) as exc:
            raise DestinationRejected(f"cannot render notification: {exc}") from exc
        try:
            if self.transport == "udp":
                self._send_datagrams(messages)
            else:
                self._send_stream(b"".join(octet_counted(m) for m in messages))
        except (OSError, ssl.SSLError) as exc:
            # ssl.SSLError is an OSError too; certificate problems are configuration, not
            # content: keep the alerts queued until someone fixes the trust set-up.
            self.close()
            raise DestinationUnavailable(f"{self!r}: {exc}") from exc

    def _send_datagrams(self, messages: Sequence[bytes]) -> None:
        sock = self._socket or self._connect()
        for message in messages:
            try:
                sock.send(message)
            except OSError as exc:
                if exc.errno == errno.EMSGSIZE:
                    raise DestinationRejected(f"datagram of {len(message)} bytes too big") from exc
                raise

    def _send_stream(self, data: bytes) -> None:
        sock = self._socket
        if sock is not None and self._peer_closed(sock):
            log.info("%r: receiver closed the connection; reconnecting", self)
            self.close()
            sock = None
        sock = sock or self._connect()
        sock.sendall(data)

    def _connect(self) -> socket.socket:
        kind = socket.SOCK_DGRAM if self.transport == "udp" else socket.SOCK_STREAM
        last_error: OSError | None = None
        for family, _, proto, _, address in socket.getaddrinfo(self.host, self.port, type=kind):
            sock = socket.socket(family, kind, proto)
            sock.settimeout(self.timeout_s)
            try:
                # A connected UDP socket reports ICMP port-unreachable as ECONNREFUSED.
                sock.connect(address)
                if self._tls is not None:
                    sock = self._tls.wrap_socket(sock, server_hostname=self.server_name)
                    self._confirm_tls_accepted(sock)
            except OSError as exc:
                sock.close()
                last_error = exc
                continue
            self._socket = sock
            return sock
        raise last_error or OSError(f"no address for {self.host}:{self.port}")

    def _confirm_tls_accepted(self, sock: ssl.SSLSocket) -> None:
        """Under TLS 1.3 the server checks our client certificate after our side of the
        handshake has finished, so a refusal only shows up as an alert on the next read.
        Without this probe every message sent on such a connection would vanish silently.
        Accepting servers send session tickets at once, which ends the wait early."""
        if sock.version() != "TLSv1.3":
            return
        readable, _, _ = select.select([sock], [], [], min(TLS_ACCEPT_PROBE_S, self.timeout_s))
        if readable and self._peer_closed(sock):
            raise ConnectionRefusedError(
                "TLS server closed the session after the handshake (client certificate refused?)"
            )

    @staticmethod
    def _peer_closed(sock: socket.socket) -> bool:
        """True when the receiver has closed or reset the connection (it never sends data)."""
        try:
            readable, _, _ = select.select([sock], [], [], 0)
            if not readable:
                return False
            if isinstance(sock, ssl.SSLSocket):
                timeout = sock.gettimeout()
                sock.setblocking(False)
                try:
                    return sock.recv(1) == b""
                except ssl.SSLWantReadError:
                    return False  # a TLS 1.3 session ticket, not application data
                finally:
                    sock.settimeout(timeout)
            return sock.recv(1, socket.MSG_PEEK) == b""
        except (OSError, ValueError):
            return True

    def close(self) -> None:
        sock, self._socket = self._socket, None
        if sock is not None:
            try:
                sock.close()
            except OSError:
                log.debug("closing %r failed", self, exc_info=True)
