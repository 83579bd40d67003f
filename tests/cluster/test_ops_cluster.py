"""`python -m ops.cluster up --redis cluster`: three shards, instances, nginx.

Runs the command line as an operator would (`up`, `status`, `stop`/`start`
of a node, `down`), with the real app, two instances, free ports and a state
dir under tmp_path. Whatever happens, the test ends by stopping every pid the
launcher recorded, and checks that none is left.
"""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from ops.local import cluster, probes, procs
from tests.support.programs import require
from tests.support.ops_cluster import run_ops_cluster, stop_recorded
from tests.support.timeouts import scaled

pytestmark = [pytest.mark.cluster, pytest.mark.slow, pytest.mark.timeout(scaled(240))]


def _json(url: str, body: dict[str, object] | None = None) -> dict[str, object]:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, headers={"content-type": "application/json"})
    with urllib.request.urlopen(req, timeout=5) as r:
        return json.loads(r.read())  # type: ignore[no-any-return]


@pytest.fixture
def state_dir(tmp_path: Path) -> Iterator[Path]:
    require("redis-server", "redis-cli", "nginx")
    d = tmp_path / "cluster"
    yield d
    stop_recorded(d)


def test_redis_cluster_up_status_down(state_dir: Path) -> None:
    run = run_ops_cluster(state_dir, "up", "--redis", "cluster", "--instances", "2", "--port", "0",
               "--timeout", str(scaled(60)), timeout=200)
    assert run.returncode == 0, run.stdout + run.stderr
    state = cluster.load_state(state_dir)
    assert state is not None and state["redis"] == "cluster"
    url = str(state["url"])
    recorded = cluster.recorded(state)
    assert sorted(p.role for p in recorded) == ["app", "app", "nginx", *["redis"] * 6]
    nodes = [p for p in recorded if p.role == "redis"]
    assert all(p.port not in procs.RESERVED_PORTS and p.port + 10000 <= 65535 for p in nodes)
    assert state["seeds"] == ",".join(f"127.0.0.1:{p.port}" for p in nodes)

    # status: three shards covering every slot, each master with an online
    # replica. `status` asks one node, whose view of its peers' health comes
    # by gossip: poll it until that node has caught up.
    def whole() -> dict[str, object] | None:
        st = json.loads(run_ops_cluster(state_dir, "status", "--json").stdout)
        shards = st["shards"] or []
        ok = len(shards) == 3 and all(
            s["master_health"] == "online" and len(s["replicas"]) == 1
            and s["replicas"][0].endswith("(online)") for s in shards)
        return st if ok else None

    st = procs.wait_until(whole, scaled(30), interval=0.5, what="status to show three whole shards")
    assert st["all_alive"] and st["cluster_state"] == "ok"
    assert sum(s["slots"] for s in st["shards"]) == 16384  # type: ignore[union-attr]
    roles = sorted(r["redis_role"] for r in st["processes"] if r["role"] == "redis")
    assert roles == ["master"] * 3 + ["slave"] * 3
    text = run_ops_cluster(state_dir, "status")
    assert text.returncode == 0 and "cluster_state: ok" in text.stdout

    # Through nginx: readiness per shard, and a publish read back.
    ready = _json(url + "readyz")
    assert ready["status"] == "ready" and len(ready["shards"]) == 3  # type: ignore[arg-type]
    sent = _json(url + "rooms/launcher-room/messages?user=u1", {"body": "hello"})
    got = _json(url + "rooms/launcher-room/messages?user=u1")
    assert [m["id"] for m in got["messages"]] == [sent["id"]]  # type: ignore[union-attr,index]

    # A replica stopped and started again by name rejoins its shard.
    replica = next(r["name"] for r in st["processes"] if r.get("redis_role") == "slave")
    assert run_ops_cluster(state_dir, "stop", replica).returncode == 0
    assert run_ops_cluster(state_dir, "start", replica).returncode == 0
    port = next(p.port for p in cluster.recorded(cluster.load_state(state_dir))
                if p.name == replica)
    procs.wait_until(lambda: probes.replica_link_up(port), scaled(30),
                     what=f"{replica} to sync again")

    again = run_ops_cluster(state_dir, "up", "--redis", "cluster", "--port", "0")
    assert again.returncode == 1 and "already running" in again.stderr

    final = cluster.recorded(cluster.load_state(state_dir))
    run = run_ops_cluster(state_dir, "down")
    assert run.returncode == 0, run.stdout + run.stderr
    for p in final:
        assert not procs.is_alive(p.pid, p.started), f"{p.name} (pid {p.pid}) still runs"


def test_sentinel_stays_the_default() -> None:
    assert cluster.parse_args(["up"]).redis == "sentinel"
    assert cluster.parse_args(["up", "--redis", "cluster"]).redis == "cluster"
    with pytest.raises(SystemExit):
        cluster.parse_args(["up", "--redis", "nope"])
