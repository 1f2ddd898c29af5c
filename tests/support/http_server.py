"""A real uvicorn server for an ASGI app on a free loopback port, in a thread."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import uvicorn

from tests.support.ports import free_port, wait_for_port


@contextmanager
def served_app(app: Any, config: uvicorn.Config | None = None) -> Iterator[str]:
    """Serve ``app`` (or ``config``, built by the caller for its port) and yield the base URL.

    ``config`` lets a test serve with the collector's own server settings; its port must
    be free (``tests.support.ports.free_port``)."""
    if config is None:
        config = uvicorn.Config(app, host="127.0.0.1", port=free_port(), log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="test-http-server", daemon=True)
    thread.start()
    wait_for_port(config.port)
    try:
        yield f"http://127.0.0.1:{config.port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
