"""A real local Redis Cluster: 3 masters and 3 replicas on loopback.

Used by the test fixtures, the drills and ``python -m ops.local.redis_cluster``.
Each node is a ``redis-server --cluster-enabled yes`` process, started
through :mod:`ops.local.procs` (detached, logged, stopped by recorded pid only), in
its own directory, without persistence. The cluster is formed with
``redis-cli --cluster create ... --cluster-replicas 1 --cluster-yes``.

:meth:`LocalCluster.start` returns only once the cluster can take a fault:
every node says ``cluster_state:ok`` and knows all six nodes, and every
master lists its replica as ``online``. A replica that never synced is never
promoted, so killing a master before that would lose the shard.

Choices that matter for the guarantees:

- ``cluster-node-timeout 2000``: kill -9 of a master promotes its replica in
  about 3-5 s on loopback.
- ``cluster-require-full-coverage no``: while one shard has no master, the
  other shards keep serving their slots; otherwise every room of the cluster
  would stall for the length of one shard's failover.
- ``cluster-replica-validity-factor 0``: a replica may always be promoted,
  however long its link was down (there is no other copy to prefer).
- Ports: a node's cluster bus listens on ``port + 10000``, so each port is at
  most 55535 and its twin is checked free too.

Every process started is stopped by pid on every path: a failed start stops
what it had started before raising.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import redis
from redis.crc import key_slot as _key_slot

from ops.local import procs
from ops.local.procs import LOOPBACK, Proc

MASTERS = 3
NODE_TIMEOUT_MS = 2000
BUS_OFFSET = 10000
MAX_PORT = 65535 - BUS_OFFSET
# Node ports (Redis Cluster's customary 7000s) with their bus twins in
# 17000-19999: below both the kernel's ephemeral range and the range
# procs.free_ports draws every other server's port from (20000 up).
LOW_PORT, HIGH_PORT = 7000, 10000
# Attempts at a node whose port was taken between the check and its bind.
SPAWN_ATTEMPTS = 5


def _bindable(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((LOOPBACK, port))
        except OSError:
            return False
    return True


def cluster_ports(n: int) -> list[int]:
    """``n`` free node ports whose cluster-bus twin (+10000) is free too.

    Both are drawn below the kernel's ephemeral range (32768 and up on
    Linux), where no outgoing connection is ever given a local port: a free
    twin found there stays free until the node binds it, while one in the
    ephemeral range can be taken by any connect() in between. They are below
    procs.free_ports' range too, so no other server of ours takes them.
    """
    chosen: list[int] = []
    for _ in range(500):
        port = random.randrange(LOW_PORT, HIGH_PORT)
        if port not in chosen and _bindable(port) and _bindable(port + BUS_OFFSET):
            chosen.append(port)
            if len(chosen) == n:
                return chosen
    raise RuntimeError(f"could not find {n} free cluster port pairs on {LOOPBACK}")


def node_args(port: int, directory: Path, extra: Sequence[str] = ()) -> list[str]:
    """The command line of one cluster node (no persistence, its own dir)."""
    return [
        "redis-server", "--port", str(port), "--bind", LOOPBACK,
        "--cluster-enabled", "yes",
        "--cluster-config-file", str(directory / "nodes.conf"),
        "--cluster-node-timeout", str(NODE_TIMEOUT_MS),
        "--cluster-require-full-coverage", "no",
        "--cluster-replica-validity-factor", "0",
        "--save", "", "--appendonly", "no",
        "--dir", str(directory), "--daemonize", "no", "--logfile", "",
        *extra,
    ]


@dataclass
class LocalCluster:
    """Six cluster nodes under ``root``; ``start`` forms the cluster.

    ``password``: every node requires it (and replicas use it to sync).
    ``extra_args`` go to every node last.
    """

    root: Path
    extra_args: tuple[str, ...] = ()
    password: str | None = None
    nodes: list[Proc] = field(default_factory=list)

    @property
    def ports(self) -> list[int]:
        return [p.port for p in self.nodes]

    @property
    def seeds(self) -> str:
        """The ``REDIS_CLUSTER_NODES`` value for this cluster."""
        return ",".join(f"{LOOPBACK}:{p}" for p in self.ports)

    # --- start / stop -----------------------------------------------------------

    def start(self, timeout: float = 60.0) -> LocalCluster:
        """Start six nodes, form the cluster, wait until it is whole."""
        missing = procs.missing_programs("redis-server", "redis-cli")
        if missing:
            raise RuntimeError(f"not installed: {', '.join(missing)}")
        self.root.mkdir(parents=True, exist_ok=True)
        try:
            for _ in range(2 * MASTERS):
                self.nodes.append(self._spawn_somewhere(timeout))
            self._create(timeout)
            self.wait_healthy(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _spawn_somewhere(self, timeout: float) -> Proc:
        """A node on a free port pair, another pair if that one was taken
        before the node could bind it."""
        for attempt in range(SPAWN_ATTEMPTS):
            port = next(p for p in cluster_ports(2 * MASTERS + 1) if p not in self.ports)
            try:
                return self._spawn(port, timeout)
            except (RuntimeError, TimeoutError, OSError):
                if attempt == SPAWN_ATTEMPTS - 1:
                    raise
        raise AssertionError("unreachable")

    def _spawn(self, port: int, timeout: float) -> Proc:
        directory = (self.root / f"node-{port}").resolve()
        directory.mkdir(parents=True, exist_ok=True)
        auth = ("--requirepass", self.password, "--masterauth", self.password) if self.password else ()
        proc = procs.spawn(f"cluster-{port}", "redis", node_args(port, directory, (*auth, *self.extra_args)),
                           port, directory / "redis.log")
        return procs.started_or_stopped(proc, timeout)

    def _create(self, timeout: float) -> None:
        cmd = ["redis-cli", "--cluster", "create",
               *(f"{LOOPBACK}:{p}" for p in self.ports),
               "--cluster-replicas", "1", "--cluster-yes"]
        if self.password:
            cmd[1:1] = ["-a", self.password, "--no-auth-warning"]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL)
        if done.returncode != 0:
            raise RuntimeError(f"redis-cli --cluster create failed:\n{done.stdout}\n{done.stderr}")

    def stop(self) -> None:
        """Stop every node this object started, by pid; idempotent."""
        left = procs.stop_all(self.nodes, timeout=5.0)
        self.nodes = left
        if left:
            names = ", ".join(f"{p.name} (pid {p.pid})" for p in left)
            raise RuntimeError(f"could not stop {names}")

    def __enter__(self) -> LocalCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- inspection -----------------------------------------------------------

    def client(self, port: int, **kwargs: object) -> redis.Redis:
        """A plain client of one node (not cluster-aware), for checks and faults."""
        options: dict[str, object] = {"socket_timeout": 2, "socket_connect_timeout": 2,
                                      "decode_responses": True, "password": self.password}
        options.update(kwargs)
        return redis.Redis(host=LOOPBACK, port=port, **options)  # type: ignore[arg-type]

    def _ask(self, port: int, *command: str) -> object:
        c = self.client(port)
        try:
            return c.execute_command(*command)
        finally:
            c.close()

    def node(self, port: int) -> Proc:
        return next(p for p in self.nodes if p.port == port)

    def alive(self, port: int) -> bool:
        p = self.node(port)
        return procs.is_alive(p.pid, p.started)

    def masters(self) -> dict[int, list[int]]:
        """Live masters that own slots -> their replicas' ports, per ``CLUSTER SHARDS``."""
        for port in self.ports:
            if not self.alive(port):
                continue
            try:
                shards = self._ask(port, "CLUSTER", "SHARDS")
            except redis.RedisError:
                continue
            out: dict[int, list[int]] = {}
            for shard in shards:  # type: ignore[union-attr]
                if not shard["slots"]:
                    continue
                nodes = shard["nodes"]
                master = [n for n in nodes if n["role"] == "master" and n["health"] == "online"]
                if master:
                    out[int(master[0]["port"])] = [int(n["port"]) for n in nodes
                                                   if n["role"] == "replica"]
            return out
        return {}

    def owner(self, slot: int) -> int:
        """The port of the master that owns ``slot`` right now."""
        for port in self.ports:
            if not self.alive(port):
                continue
            try:
                for start, end, master, *_ in self._ask(port, "CLUSTER", "SLOTS"):  # type: ignore[union-attr]
                    if int(start) <= slot <= int(end):
                        return int(master[1])
            except redis.RedisError:
                continue
        raise RuntimeError(f"no node answers for slot {slot}")

    def node_id(self, port: int) -> str:
        return str(self._ask(port, "CLUSTER", "MYID"))

    def _healthy(self) -> bool:
        live = [p for p in self.ports if self.alive(p)]
        for port in live:
            info = self.client(port)
            try:
                ci = info.execute_command("CLUSTER INFO")
                if ci.get("cluster_state") != "ok" or int(ci.get("cluster_known_nodes", 0)) < len(self.ports):
                    return False
                rep = info.info("replication")
            finally:
                info.close()
            if rep.get("role") == "master" and int(rep.get("connected_slaves", 0)) > 0:
                if not all(rep.get(f"slave{i}", {}).get("state") == "online"
                           for i in range(int(rep["connected_slaves"]))):
                    return False
        masters = self.masters()
        return len(masters) == MASTERS and all(len(r) >= 1 for r in masters.values())

    def wait_healthy(self, timeout: float = 60.0) -> None:
        """Until every node is ``ok`` and every master's replica is online."""
        procs.wait_until(self._healthy, timeout, interval=0.1, what="redis cluster healthy",
                         watch=[p for p in self.nodes if self.alive(p.port)])

    # --- faults -------------------------------------------------------------------

    def kill(self, port: int) -> None:
        """SIGKILL one node (a shard master dies without a word)."""
        p = self.node(port)
        if procs.is_alive(p.pid, p.started):
            os.kill(p.pid, signal.SIGKILL)
        procs.wait_until(lambda: not procs.is_alive(p.pid, p.started), 10.0,
                         what=f"node {port} to die")

    def restart(self, port: int, timeout: float = 30.0) -> Proc:
        """Start a killed node again with its cluster config (no data): it
        rejoins as a replica of whoever holds its slots now, and syncs."""
        old = self.node(port)
        if procs.is_alive(old.pid, old.started):
            raise RuntimeError(f"node {port} is still running")
        new = procs.respawn(old, wait=timeout)
        self.nodes[self.nodes.index(old)] = new
        return new

    def restart_empty(self, port: int, timeout: float = 30.0) -> Proc:
        """Start a killed node again on its port with no data and no cluster
        config: a brand-new, empty node (it joins nothing by itself)."""
        old = self.node(port)
        if procs.is_alive(old.pid, old.started):
            raise RuntimeError(f"node {port} is still running")
        directory = (self.root / f"node-{port}").resolve()
        shutil.rmtree(directory, ignore_errors=True)
        new = self._spawn(port, timeout)
        self.nodes[self.nodes.index(old)] = new
        return new

    def replace_shard(self, master: int, timeout: float = 60.0) -> None:
        """Lose a whole shard (its master and replicas, SIGKILL) and put an
        empty one in its place on the same ports, owning the same slots:
        what a shard restored from nothing looks like. Every other node
        forgets the dead ones, which frees their slots for the new master."""
        replicas = self.masters()[master]
        ranges = [(int(a), int(b)) for a, b, owner, *_ in self._ask(master, "CLUSTER", "SLOTS")  # type: ignore[union-attr]
                  if int(owner[1]) == master]
        dead = [self.node_id(p) for p in (master, *replicas)]
        for port in (master, *replicas):
            self.kill(port)
        for port in (master, *replicas):
            self.restart_empty(port, timeout)
        for port in self.ports:
            if port in (master, *replicas):
                continue
            for node_id in dead:
                try:
                    self._ask(port, "CLUSTER", "FORGET", node_id)
                except redis.ResponseError:
                    pass  # already forgotten
        peer = next(p for p in self.ports if p not in (master, *replicas))
        for port in (master, *replicas):
            self._ask(port, "CLUSTER", "MEET", LOOPBACK, str(peer))
        procs.wait_until(lambda: all(int(self._ask(p, "CLUSTER INFO")["cluster_known_nodes"])  # type: ignore[index]
                                     == len(self.ports) for p in self.ports),
                         timeout, interval=0.1, what="the new shard's nodes to be known")
        for start, end in ranges:
            self._ask(master, "CLUSTER", "ADDSLOTSRANGE", str(start), str(end))
        new_id = self.node_id(master)
        procs.wait_until(lambda: all(new_id in self._known_ids(p) for p in replicas),
                         timeout, interval=0.1, what="the replicas to know the new master")
        for port in replicas:
            self._ask(port, "CLUSTER", "REPLICATE", new_id)
        self.wait_healthy(timeout)

    def _known_ids(self, port: int) -> list[str]:
        """Node ids that ``port`` knows (redis-py parses CLUSTER NODES by address)."""
        nodes = self._ask(port, "CLUSTER NODES")
        return [str(n["node_id"]) for n in nodes.values()]  # type: ignore[union-attr]

    def wait_promoted(self, dead_master: int, timeout: float = 30.0) -> int:
        """Wait until one of ``dead_master``'s former replicas owns its slots."""
        before = self.masters().get(dead_master, [])

        def promoted() -> int | None:
            now = self.masters()
            return next((p for p in now if p in before), None)

        return procs.wait_until(promoted, timeout, interval=0.05,
                                what=f"a replica of {dead_master} promoted")

    def migrate_slot(self, slot: int, target: int, batch: int = 100) -> None:
        """Move ``slot`` to master ``target`` live, the way ``redis-cli
        --cluster reshard`` does: IMPORTING/MIGRATING, MIGRATE the keys in
        batches, then SETSLOT NODE on both ends and every other master."""
        source = self.owner(slot)
        if source == target:
            return
        src_id, dst_id = self.node_id(source), self.node_id(target)
        self._ask(target, "CLUSTER", "SETSLOT", str(slot), "IMPORTING", src_id)
        self._ask(source, "CLUSTER", "SETSLOT", str(slot), "MIGRATING", dst_id)
        for _ in range(1_000_000):
            keys = self._ask(source, "CLUSTER", "GETKEYSINSLOT", str(slot), str(batch))
            if not keys:
                break
            auth = ["AUTH", self.password] if self.password else []
            self._ask(source, "MIGRATE", LOOPBACK, str(target), "", "0", "5000",
                      *auth, "KEYS", *keys)  # type: ignore[misc]
        for port in [target, source, *(m for m in self.masters() if m not in (source, target))]:
            self._ask(port, "CLUSTER", "SETSLOT", str(slot), "NODE", dst_id)


def key_slot(key: str) -> int:
    """The hash slot of ``key`` (hash tags honoured), as Redis computes it."""
    return int(_key_slot(key.encode()))


def main(argv: Sequence[str] | None = None) -> int:
    """Run a cluster in the foreground until Ctrl-C or SIGTERM."""
    parser = argparse.ArgumentParser(prog="python -m ops.local.redis_cluster", description=__doc__.split("\n")[0])
    parser.add_argument("--dir", type=Path, default=None, help="node directories (default: a temp dir)")
    parser.add_argument("--timeout", type=float, default=60.0)
    args = parser.parse_args(argv)
    root = args.dir or Path(tempfile.mkdtemp(prefix="sg-redis-cluster-"))
    cluster = LocalCluster(root)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    cluster.start(args.timeout)
    try:
        print(json.dumps({"REDIS_CLUSTER_NODES": cluster.seeds, "dir": str(root),
                          "masters": cluster.masters(),
                          "pids": {p.port: p.pid for p in cluster.nodes}}), flush=True)
        while not stop.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        cluster.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
