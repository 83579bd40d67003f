"""App instances in Sentinel mode on a :class:`~tests.failover.topology.Topology`."""

from __future__ import annotations

import uuid
from pathlib import Path

from streams.keys import Keys
from tests.support import Instance

from .topology import Topology

# Settings of every instance these tests start. Publishing is not
# rate-limited (a publisher retries fast during a failover).
FAILOVER_ENV = {
    "AUTH_MODE": "none",
    "KEY_PREFIX": "sgfail",
    "PRESENCE_TTL": "2",
    "PUBLISH_RATE": "1000000",
    "PUBLISH_BURST": "1000000",
    "ALLOWED_ORIGINS": "*",
}
KEYS = Keys(FAILOVER_ENV["KEY_PREFIX"])


class Instances:
    """Starts app instances on one topology; stops them all at the end."""

    def __init__(self, topology: Topology, root: Path) -> None:
        self.topology = topology
        self.root = root
        self.started: list[Instance] = []

    def start(self, name: str, durability: str = "replica", **env: str) -> Instance:
        settings = dict(FAILOVER_ENV, **self.topology.instance_env(durability))
        settings.update(env)
        unique = f"{name}-{uuid.uuid4().hex[:6]}"
        settings.setdefault("INSTANCE_ID", unique)
        inst = Instance(name, settings, workdir=self.root / unique)
        self.started.append(inst)
        return inst.start()

    def stop_all(self) -> None:
        for inst in reversed(self.started):
            if inst.is_running():
                inst.stop(grace=10)
        self.started.clear()
