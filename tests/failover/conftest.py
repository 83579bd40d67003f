"""Fixtures of the failover tests: a Sentinel topology per module, instances on it.

Each test module gets its own master, two replicas and three sentinels
(module scope): a test that kills or freezes the master leaves a topology
that the next module must not inherit. A module changes the Redis settings
by overriding the ``redis_args`` fixture.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from ops.local import procs

from tests.support.programs import require

from .apps import Instances
from .topology import PROGRAMS, Topology

# The topologies alive right now, whose logs a failed test shows.
_TOPOLOGIES: list[Topology] = []


@pytest.fixture(scope="module")
def redis_args() -> tuple[str, ...]:
    """Extra redis-server arguments for every node of the module's topology."""
    return ()


@pytest.fixture(scope="module")
def topology(tmp_path_factory: pytest.TempPathFactory, redis_args: tuple[str, ...]) -> Iterator[Topology]:
    require(*PROGRAMS)
    topo = Topology(tmp_path_factory.mktemp("topology"), redis_args=redis_args)
    _TOPOLOGIES.append(topo)
    try:
        topo.start()  # stops what it started when a step fails
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
