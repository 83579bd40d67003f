"""The Redis Cluster topology of ``python -m ops.cluster up --redis cluster``.

Six ``redis-server --cluster-enabled yes`` nodes (three masters, three
replicas) formed by :class:`ops.local.redis_cluster.LocalCluster`, app instances in
cluster mode (``REDIS_CLUSTER_NODES``, ``DURABILITY=replica``) and nginx in
front: the Sentinel topology of :mod:`ops.cluster` with the one Redis master
replaced by three shards.

Every process goes into state.json the moment it is started (the nodes too,
before ``redis-cli --cluster create`` runs), so ``down`` stops exactly those
pids even after an interrupted ``up``. A node is recorded as ``redis-N`` in
``STATE_DIR/redis-N``; its ``nodes.conf`` lives there, so ``start redis-N``
after a kill brings the node back into the cluster (as a replica of whoever
was promoted in its place).

``status`` reads the cluster's own view (``CLUSTER SHARDS`` from any live
node): which node is master of each shard and how many slots it owns.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import redis

from ops.local import procs
from ops.local.procs import LOOPBACK, Proc
from ops.local.redis_cluster import LocalCluster, node_args


class RecordedCluster(LocalCluster):
    """A LocalCluster whose nodes are named ``redis-N``, live in
    ``root/redis-N`` and are handed to ``record`` as soon as each starts."""

    def __init__(self, root: Path, record: Callable[[Proc], Proc] | None = None,
                 nodes: list[Proc] | None = None) -> None:
        super().__init__(root, nodes=list(nodes or []))
        self._record = record

    def _spawn(self, port: int, timeout: float) -> Proc:
        name = f"redis-{len(self.nodes) + 1}"
        directory = (self.root / name).resolve()
        directory.mkdir(parents=True, exist_ok=True)
        auth = ("--requirepass", self.password, "--masterauth", self.password) if self.password else ()
        proc = procs.spawn(name, "redis", node_args(port, directory, (*auth, *self.extra_args)),
                           port, directory / "redis.log")
        if self._record is not None:
            self._record(proc)
        return procs.started_or_stopped(proc, timeout)


def view(state: Mapping[str, object]) -> RecordedCluster:
    """The recorded nodes as a cluster object (for probes and faults)."""
    nodes = [Proc.from_dict(p) for p in state.get("processes", [])  # type: ignore[union-attr]
             if p["role"] == "redis"]
    return RecordedCluster(Path(str(state.get("state_dir", "."))), nodes=nodes)


def app_env(instance: str, seeds: str, first_port: int) -> dict[str, str | None]:
    """Environment of one instance in cluster mode, with replica durability.

    REDIS_URL points at a cluster node so that nothing can fall back to a
    default Redis on another port; cluster mode never uses it. AUTH_MODE
    (default ``none``) and JWT_SECRET pass through from the caller.
    """
    return {
        "REDIS_CLUSTER_NODES": seeds,
        "REDIS_SENTINELS": None,
        "REDIS_SENTINEL_MASTER": None,
        "REDIS_URL": f"redis://{LOOPBACK}:{first_port}/0",
        "DURABILITY": "replica",
        "MIN_REPLICAS": "1",
        "AUTH_MODE": os.environ.get("AUTH_MODE", "none"),
        "INSTANCE_ID": instance,
    }


def start_redis(state_dir: Path, record: Callable[[Proc], Proc], timeout: float) -> RecordedCluster:
    """Six nodes, ``--cluster create``, then wait until every master's
    replica is online (a replica that never synced is never promoted)."""
    nodes = RecordedCluster(state_dir, record)
    nodes.start(timeout)
    return nodes


def shards(ports: Sequence[int], names: Mapping[int, str]) -> list[dict[str, object]] | None:
    """Each shard as the cluster sees it: master, replicas, slot count.

    Asks the first live node that answers ``CLUSTER SHARDS``; None when none
    does.
    """
    for port in ports:
        try:
            with redis.Redis(host=LOOPBACK, port=port, socket_timeout=1,
                             socket_connect_timeout=1, decode_responses=True) as r:
                raw = r.execute_command("CLUSTER", "SHARDS")
        except redis.RedisError:
            continue
        out: list[dict[str, object]] = []
        for shard in raw:
            slots = shard["slots"]
            count = sum(int(b) - int(a) + 1 for a, b in zip(slots[::2], slots[1::2]))
            nodes = shard["nodes"]
            master = next((n for n in nodes if n["role"] == "master"), None)
            out.append({
                "slots": count,
                "master": names.get(int(master["port"])) if master else None,
                "master_health": master["health"] if master else None,
                "replicas": [f"{names.get(int(n['port']))} ({n['health']})"
                             for n in nodes if n["role"] == "replica"],
            })
        return sorted(out, key=lambda s: -int(s["slots"]))  # type: ignore[arg-type]
    return None


def cluster_state(ports: Sequence[int]) -> str | None:
    """``cluster_state`` (ok / fail) from the first node that answers."""
    for port in ports:
        try:
            with redis.Redis(host=LOOPBACK, port=port, socket_timeout=1,
                             socket_connect_timeout=1, decode_responses=True) as r:
                return str(r.execute_command("CLUSTER INFO").get("cluster_state"))
        except redis.RedisError:
            continue
    return None
