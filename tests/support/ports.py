"""Free loopback ports for the processes a test starts.

The same choice the local launcher makes (``ops.local.procs.free_port``):
below the kernel's ephemeral range, so no client's connect() can take the
port between its choice and the server binding it, never a default Redis or
Sentinel port (a shared one may listen there), never twice in one run.
"""

from __future__ import annotations

from ops.local.procs import free_port

__all__ = ["free_port"]
