"""The HTTP listening socket, bound before anything else starts.

uvicorn binds inside its own thread and, when the port is taken, logs the error and returns
while the rest of the process runs on with no web server: under systemd such a collector
never restarts, and the demo printed a login for a server that never ran. Binding here first
turns that into one line and a non-zero exit before the collector or the demo starts.
"""

from __future__ import annotations

import errno
import socket

_REASONS = {
    errno.EADDRINUSE: "the address is already in use (another process listens there)",
    errno.EADDRNOTAVAIL: "no interface of this machine has that address",
    errno.EACCES: "permission denied (ports below 1024 need root or CAP_NET_BIND_SERVICE)",
}


class ListenError(Exception):
    """The listen address cannot be used; the message is one line for a person."""


def split_listen(listen: str) -> tuple[str, int]:
    """``HOST:PORT`` or ``[V6]:PORT`` → (host, port); an empty host means loopback."""
    host, separator, port_text = listen.rpartition(":")
    if not separator or not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ListenError(f"listen address {listen!r} must be HOST:PORT (e.g. 127.0.0.1:8080)")
    host = host.strip("[]") or "127.0.0.1"
    return host, int(port_text)


def bind_listen_socket(listen: str) -> socket.socket:
    """A listening TCP socket on ``listen``, ready to hand to ``uvicorn.Server.run``."""
    host, port = split_listen(listen)
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise ListenError(f"cannot listen on {listen}: unknown host ({exc.strerror})") from None
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        reason = _REASONS.get(exc.errno or 0, exc.strerror or str(exc))
        raise ListenError(f"cannot listen on {listen}: {reason}") from None
    sock.set_inheritable(True)
    return sock
