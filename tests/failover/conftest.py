"""Fixtures of the failover tests: a Sentinel topology per module, instances on it.

Each test module gets its own master, two replicas and three sentinels
(module scope): a test that kills or freezes the master leaves a topology
that the next module must not inherit. A module changes the Redis settings
by overriding the ``redis_args`` fixture.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from ops import procs
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

# The topologies alive right now, whose logs a failed test shows.
_TOPOLOGIES: list[Topology] = []


class Instances:
    """Starts app instances in Sentinel mode on one topology; stops them all at the end."""

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


@pytest.fixture(scope="module")
def redis_args() -> tuple[str, ...]:
    """Extra redis-server arguments for every node of the module's topology."""
    return ()


@pytest.fixture(scope="module")
def topology(tmp_path_factory: pytest.TempPathFactory, redis_args: tuple[str, ...]) -> Iterator[Topology]:
    topo = Topology(tmp_path_factory.mktemp("topology"), redis_args=redis_args)
    _TOPOLOGIES.append(topo)
    topo.start()
    try:
        yield topo
    finally:
        topo.stop()
        _TOPOLOGIES.remove(topo)


@pytest.fixture(scope="module")
def instances(topology: Topology, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Instances]:
    factory = Instances(topology, tmp_path_factory.mktemp("instances"))
    try:
        yield factory
    finally:
        factory.stop_all()


@pytest.fixture
def room() -> str:
    return f"fo-{uuid.uuid4().hex[:12]}"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """A failed test also shows the Redis and Sentinel logs of its topology."""
    outcome = yield
    report = outcome.get_result()
    if report.when != "call" or not report.failed:
        return
    for topo in _TOPOLOGIES:
        report.sections.append(("topology", repr(topo.describe())))
        for proc in [*(n.proc for n in topo.nodes), *topo.sentinels]:
            report.sections.append((f"log of {proc.name} (pid {proc.pid})", procs.log_tail(proc.log, 25)))
