"""Fixtures: one private redis-server per session and real server instances on it.

Nothing is mocked. Rooms and users get unique names per test instead of
flushing Redis between tests, so tests never depend on each other's data.
"""

from __future__ import annotations

import os
import signal
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

# The Python client under test is this checkout's, whichever copy of
# streamgate-client the venv has installed.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "client" / "python"))

from tests.support import Instance, RedisServer
from tests.support import instance as instance_module
from tests.support.programs import require
from tests.support.tokens import SECRET

# Instance settings shared by every instance of the suite. Publishing and
# join/leave/ack are not rate-limited here (tests publish thousands of
# messages and ack or rejoin freely over few sockets);
# presence expires quickly so crash tests stay short.
BASE_ENV = {
    "AUTH_MODE": "none",
    "KEY_PREFIX": "sgtest",
    "PRESENCE_TTL": "2",
    "PUBLISH_RATE": "1000000",
    "PUBLISH_BURST": "1000000",
    "CONTROL_RATE": "1000000",
    "CONTROL_BURST": "1000000",
    "ALLOWED_ORIGINS": "*",
}


# The ASGI app under test; another app object can be named for a dry run.
APP = os.environ.get("STREAMGATE_TEST_APP", "app.main:app")


class InstanceFactory:
    """Starts instances against the session redis and stops them all at the end."""

    def __init__(self, redis_url: str, root: Path) -> None:
        self.redis_url = redis_url
        self.root = root
        self.started: list[Instance] = []

    def start(self, name: str, ws: str = instance_module.TEST_WS, **env: str) -> Instance:
        """``ws``: how /ws is served (see tests/support/instance.py)."""
        settings = dict(BASE_ENV, REDIS_URL=self.redis_url)
        settings.update(env)
        unique = f"{name}-{uuid.uuid4().hex[:6]}"
        settings.setdefault("INSTANCE_ID", unique)
        inst = Instance(name, settings, workdir=self.root / unique, app=APP, ws=ws)
        self.started.append(inst)
        return inst.start()

    def stop_all(self) -> None:
        running = [inst for inst in self.started if inst.is_running()]
        for inst in running:  # all drain in parallel
            inst.signal_stop()
        for inst in running:
            inst.stop()
        self.started.clear()


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    require("redis-server")
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    yield server
    server.stop()


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server of the test's own, which it may freeze (SIGSTOP) or
    kill: always resumed and stopped afterwards."""
    require("redis-server")
    server = RedisServer(tmp_path / "redis").start()
    try:
        yield server
    finally:
        if server.proc is not None and server.proc.poll() is None:
            os.kill(server.pid, signal.SIGCONT)
        server.stop()


@pytest.fixture(scope="session")
def redis_client(redis_server: RedisServer) -> Iterator[Any]:
    client = redis_server.client()
    yield client
    client.close()


@pytest.fixture(scope="session")
def instance_factory(redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[InstanceFactory]:
    factory = InstanceFactory(redis_server.url, tmp_path_factory.mktemp("instances"))
    yield factory
    factory.stop_all()


@pytest.fixture
def make_instance(redis_server: RedisServer, tmp_path: Path) -> Iterator[Callable[..., Instance]]:
    """Start extra instances for one test; they are stopped when it ends."""
    factory = InstanceFactory(redis_server.url, tmp_path)
    yield factory.start
    factory.stop_all()


@pytest.fixture(scope="session")
def cluster(instance_factory: InstanceFactory) -> tuple[Instance, Instance]:
    """Two instances A and B sharing the session redis, AUTH_MODE=none."""
    a = instance_factory.start("A", INSTANCE_ID="A")
    b = instance_factory.start("B", INSTANCE_ID="B")
    return a, b


@pytest.fixture
def inst_a(cluster: tuple[Instance, Instance]) -> Instance:
    return cluster[0]


@pytest.fixture
def inst_b(cluster: tuple[Instance, Instance]) -> Instance:
    return cluster[1]


@pytest.fixture(scope="session")
def jwt_cluster(instance_factory: InstanceFactory) -> tuple[Instance, Instance]:
    """Two instances in AUTH_MODE=jwt with a shared HS256 secret."""
    env = {"AUTH_MODE": "jwt", "JWT_SECRET": SECRET}
    return (
        instance_factory.start("JA", INSTANCE_ID="JA", **env),
        instance_factory.start("JB", INSTANCE_ID="JB", **env),
    )


@pytest.fixture
def ja(jwt_cluster: tuple[Instance, Instance]) -> Instance:
    return jwt_cluster[0]


@pytest.fixture
def jb(jwt_cluster: tuple[Instance, Instance]) -> Instance:
    return jwt_cluster[1]


@pytest.fixture
def room() -> str:
    """A room name nobody else uses."""
    return f"room-{uuid.uuid4().hex[:16]}"


@pytest.fixture
def uid() -> Callable[[str], str]:
    """Unique user ids: uid("alice") -> "alice-1a2b3c4d"."""
    suffix = uuid.uuid4().hex[:8]
    return lambda name: f"{name}-{suffix}"


# -- logs of the instances involved in a failed test ---------------------------


_started_at = pytest.StashKey[float]()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_setup(item: pytest.Item) -> Iterator[None]:
    item.stash[_started_at] = time.time()
    yield


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    if report.when != "call" or not report.failed:
        return
    since = item.stash.get(_started_at, 0.0) - 1
    for inst in instance_module.STARTED:
        try:
            touched = inst.log_path.stat().st_mtime >= since
        except FileNotFoundError:
            continue
        if touched:
            pid = inst.proc.pid if inst.proc else "?"
            report.sections.append((f"log of instance {inst.name} (pid {pid})", inst.log_tail(40)))


def pytest_unconfigure(config: pytest.Config) -> None:
    """Name the failed tests once more as the very last lines: the short
    summary prints each failure's whole message, which can push the names out
    of a log's tail."""
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    if reporter is None:
        return
    failed = [r.nodeid for kind in ("failed", "error") for r in reporter.stats.get(kind, [])
              if getattr(r, "nodeid", None)]
    for nodeid in dict.fromkeys(failed):
        reporter.write_line(f"FAILED {nodeid}")


# -- a real Redis Cluster (3 masters, 3 replicas) ---------------------------------


def _start_redis_cluster(root: Path) -> Any:
    from ops.local.redis_cluster import LocalCluster
    from tests.support.programs import require
    from tests.support.timeouts import scaled

    require("redis-server", "redis-cli")
    return LocalCluster(root).start(timeout=scaled(60))


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A shared cluster for tests that only read and write: nobody kills,
    freezes or reshards it (those use ``own_redis_cluster``)."""
    cluster = _start_redis_cluster(tmp_path_factory.mktemp("redis-cluster"))
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def own_redis_cluster(tmp_path: Path) -> Iterator[Any]:
    """A cluster of the test's own, which it may kill, restart or reshard:
    every node is stopped by pid afterwards, frozen ones included."""
    cluster = _start_redis_cluster(tmp_path / "redis-cluster")
    try:
        yield cluster
    finally:
        cluster.stop()
