"""`python -m ops.cluster` brings up the whole local topology and takes it down.

Runs the command line exactly as an operator would (`up`, `status`, `down`),
with the real app (`app.main:app`), two instances, free ports and a state dir
under tmp_path. Whatever happens, the test ends by stopping every pid the
cluster recorded, and checks that none is left.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from ops.local import cluster, probes, procs
from tests.support.ops_cluster import run_ops_cluster, stop_recorded
from tests.support.timeouts import scaled

pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(scaled(240)),
    pytest.mark.skipif(
        not all(shutil.which(b) for b in ("redis-server", "redis-sentinel", "nginx")),
        reason="redis-server, redis-sentinel and nginx are needed",
    ),
]


@pytest.fixture
def state_dir(tmp_path: Path) -> Iterator[Path]:
    d = tmp_path / "cluster"
    yield d
    stop_recorded(d)


def test_cluster_up_status_down(state_dir: Path) -> None:
    run = run_ops_cluster(state_dir, "up", "--instances", "2", "--port", "0",
               "--timeout", str(scaled(60)), timeout=200)
    assert run.returncode == 0, run.stdout + run.stderr
    state = cluster.load_state(state_dir)
    assert state is not None
    url = str(state["url"])
    assert url in run.stdout
    recorded = cluster.recorded(state)
    roles = sorted(p.role for p in recorded)
    assert roles == ["app", "app", "nginx", "redis", "redis",
                     "sentinel", "sentinel", "sentinel"]
    for p in recorded:
        assert p.cmd and p.port and p.pid
        assert p.port not in procs.RESERVED_PORTS

    # status: everything alive, one master and one replica, sentinels agree.
    run = run_ops_cluster(state_dir, "status", "--json")
    assert run.returncode == 0, run.stdout + run.stderr
    st = json.loads(run.stdout)
    assert st["all_alive"]
    rows = {r["name"]: r for r in st["processes"]}
    assert sorted(r["redis_role"] for r in rows.values() if r["role"] == "redis") == [
        "master", "slave"]
    master_port = next(r["port"] for r in rows.values() if r.get("redis_role") == "master")
    assert st["sentinels_agree"]
    assert st["sentinel_master"].endswith(f"127.0.0.1:{master_port})")
    for r in rows.values():
        if r["role"] in ("app", "nginx"):
            assert r["healthz"] == 200, r
    text = run_ops_cluster(state_dir, "status")
    assert text.returncode == 0 and "sentinels agree" in text.stdout

    # Every sentinel is ready for a failover, not merely up.
    sentinel_ports = [p.port for p in recorded if p.role == "sentinel"]
    assert all(probes.sentinel_ready(p, replicas=1, sentinels=3) for p in sentinel_ports)

    # nginx proxies /healthz to the app instances (nginx itself has no such route).
    for _ in range(4):
        assert probes.http_status(url + "healthz") == 200
    access = (state_dir / "nginx" / "access.log").read_text()
    assert "GET /healthz" in access

    # A second `up` refuses to start over a running cluster.
    again = run_ops_cluster(state_dir, "up", "--instances", "1", "--port", "0")
    assert again.returncode == 1
    assert "already running" in again.stderr

    run = run_ops_cluster(state_dir, "down")
    assert run.returncode == 0, run.stdout + run.stderr
    for p in recorded:
        assert not procs.is_alive(p.pid, p.started), f"{p.name} (pid {p.pid}) still runs"
    st = json.loads(run_ops_cluster(state_dir, "status", "--json").stdout)
    assert not any(r["alive"] for r in st["processes"])
