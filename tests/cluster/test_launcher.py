"""The local Redis Cluster the cluster tests and drills run on.

It must come up whole (three masters owning all 16384 slots, each with an
online replica), place keys where Redis says they belong, survive the loss
of one master by promoting its replica, and leave no process behind.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from ops.local import procs
from ops.local.redis_cluster import LocalCluster, key_slot
from tests.support.programs import require
from tests.support.timeouts import scaled

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(scaled(120))]


def test_cluster_is_whole_and_routes_by_slot(redis_cluster: LocalCluster) -> None:
    masters = redis_cluster.masters()
    assert len(masters) == 3 and all(len(r) == 1 for r in masters.values())
    client = redis_cluster.client(redis_cluster.ports[0])
    try:
        info = client.execute_command("CLUSTER INFO")
    finally:
        client.close()
    assert info["cluster_state"] == "ok" and int(info["cluster_slots_assigned"]) == 16384
    slot = key_slot("launcher:{room-a}:log")
    owner = redis_cluster.owner(slot)
    assert owner in masters
    node = redis_cluster.client(owner)
    try:
        assert node.set("launcher:{room-a}:log", "x") is True
    finally:
        node.close()


@pytest.mark.failover
def test_killed_master_is_replaced_and_every_node_stopped(tmp_path: Path) -> None:
    require("redis-server", "redis-cli")
    cluster = LocalCluster(tmp_path / "c").start(timeout=scaled(60))
    try:
        masters = cluster.masters()
        victim = next(iter(masters))
        cluster.kill(victim)
        new = cluster.wait_promoted(victim, timeout=scaled(30))
        assert new == masters[victim][0]
        assert len(cluster.masters()) == 3
    finally:
        recorded = list(cluster.nodes)
        cluster.stop()
    assert not [p for p in recorded if procs.is_alive(p.pid, p.started)]


def test_command_line_prints_the_seeds_and_stops_every_node_on_sigterm(tmp_path: Path) -> None:
    """``python -m ops.local.redis_cluster`` as an operator runs it: one JSON line
    with ``REDIS_CLUSTER_NODES``, then SIGTERM leaves no node behind."""
    require("redis-server", "redis-cli")
    proc = subprocess.Popen([sys.executable, "-m", "ops.local.redis_cluster", "--dir", str(tmp_path / "c")],
                            cwd=procs.REPO_ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()  # the launcher waits for a whole cluster first
        info = json.loads(line)
        seeds = info["REDIS_CLUSTER_NODES"].split(",")
        assert len(seeds) == 6 and len(info["masters"]) == 3
        pids = [int(p) for p in info["pids"].values()]
        assert all(procs.is_alive(p) for p in pids)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=scaled(30))
    assert proc.returncode == 0
    assert not [p for p in pids if procs.is_alive(p)]
