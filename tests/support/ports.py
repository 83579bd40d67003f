"""Free loopback ports for the processes a test starts."""

from __future__ import annotations

import socket

# A shared Redis (and Sentinel) listen on the default ports: never touch them.
from ops.local.procs import RESERVED_PORTS as _RESERVED


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        if port not in _RESERVED:
            return port
    raise RuntimeError("no free loopback port found")
