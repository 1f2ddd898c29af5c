"""Free loopback ports and waiting for a service to listen (shared with the demo)."""

from campuswatch.localports import free_port, wait_for_port

__all__ = ["free_port", "wait_for_port"]
