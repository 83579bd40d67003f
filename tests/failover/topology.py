"""A Redis master, two replicas and three sentinels as real local processes.

Started with ``ops.local.procs`` from the shipped ops/ templates. Every node also
listens on 127.0.0.1, so the ``ops.local.probes`` checks work unchanged; a node may
in addition get its own loopback address (``hosts``), which it then uses for
replication in both directions and announces to Sentinel. Inside a network
namespace that lets a test drop the traffic between particular nodes.

Why two replicas: after the master is lost the promoted replica still has a
replica of its own, so ``WAIT 1`` (and ``min-replicas-to-write 1``) can be
satisfied again and publishing resumes.

The topology is ready for a fault only when every replica link is up and
every sentinel sees the master, both replicas and the two other sentinels;
before that a failover ends in NOGOODSLAVE for up to ~10 s.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import redis

from ops.local import probes, procs, render
from ops.local.procs import LOOPBACK, Proc
from ops.local.render import MASTER_NAME
from tests.support.timeouts import scaled

# What a topology runs.
PROGRAMS = ("redis-server", "redis-sentinel")

# Sentinel timings for the tests: a lost master is noticed after 1 s.
DOWN_AFTER_MS = 1000
FAILOVER_TIMEOUT_MS = 5000


class MissingProgram(RuntimeError):
    """A program the topology needs is not installed (nothing was started)."""


@dataclass
class Node:
    """One redis-server: its replication address and its recorded process."""

    name: str
    host: str
    proc: Proc
    frozen: bool = False

    @property
    def port(self) -> int:
        return self.proc.port

    @property
    def addr(self) -> tuple[str, int]:
        return (self.host, self.port)

    def client(self, timeout: float = 1.0) -> redis.Redis:
        """A sync client on 127.0.0.1 (every node listens there too); no retries."""
        return probes.client(self.port, timeout=timeout)


@dataclass
class Topology:
    """master + two replicas + three sentinels (quorum 2) under ``root``.

    ``hosts``: the replication address of each node (master first). Each
    ``redis_args`` pair is passed to every node last, so it wins over the
    ops/redis templates.
    """

    root: Path
    hosts: Sequence[str] = (LOOPBACK, LOOPBACK, LOOPBACK)
    redis_args: Sequence[str] = ()
    down_after_ms: int = DOWN_AFTER_MS
    failover_timeout_ms: int = FAILOVER_TIMEOUT_MS
    quorum: int = 2
    nodes: list[Node] = field(default_factory=list)
    sentinels: list[Proc] = field(default_factory=list)

    # -- start and stop ------------------------------------------------------

    def start(self, timeout: float = 30.0) -> Topology:
        """Start every process, or none: a program that is missing is
        reported before anything starts, and whatever started before a later
        step failed is stopped before the error is raised."""
        missing = procs.missing_programs(*PROGRAMS)
        if missing:
            raise MissingProgram(f"not installed: {', '.join(missing)}")
        try:
            self._start(scaled(timeout))
        except BaseException:
            self.stop()
            raise
        return self

    def _node_args(self, host: str) -> list[str]:
        args: list[str] = []
        if host != LOOPBACK:
            # Listen on both; use the own address for outgoing replication
            # connections and announce it, so Sentinel hands it out. Protected
            # mode only trusts 127.0.0.1 itself; these addresses exist only
            # on the loopback of a test's own network namespace.
            args += ["--bind", host, LOOPBACK, "--bind-source-addr", host,
                     "--replica-announce-ip", host, "--protected-mode", "no"]
        return args + list(self.redis_args)

    def _start(self, timeout: float) -> None:
        redis_ports = procs.free_ports(3)
        sentinel_ports = procs.free_ports(3)
        master_host = self.hosts[0]
        for i, (host, port) in enumerate(zip(self.hosts, redis_ports, strict=True)):
            name = f"redis-{i + 1}"
            replicaof = None if i == 0 else (master_host, redis_ports[0])
            proc = procs.start_redis(port, self.root / name, replicaof=replicaof,
                                     extra_args=self._node_args(host), name=name, wait=timeout)
            self.nodes.append(Node(name, host, proc))
        probes.wait_redis(self.nodes[0].port, timeout, self.nodes[0].proc)
        for node in self.nodes[1:]:
            probes.wait_replica_link(node.port, timeout, node.proc)
        # Sentinels start once the links are up: their first INFO of the
        # master then lists both replicas.
        for i, port in enumerate(sentinel_ports):
            d = self.root / f"sentinel-{i + 1}"
            d.mkdir(parents=True, exist_ok=True)
            conf = d / "sentinel.conf"
            if not conf.exists():
                conf.write_text(render.sentinel_conf(
                    render.SENTINEL_CONF.read_text(), redis_ports[0], master_host=master_host,
                    quorum=self.quorum, down_after_ms=self.down_after_ms,
                    failover_timeout_ms=self.failover_timeout_ms,
                ))
            self.sentinels.append(procs.start_sentinel(
                port, d, redis_ports[0], name=f"sentinel-{i + 1}", wait=timeout))
        self.wait_ready(timeout)

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Every live replica linked; every live sentinel could fail over now."""
        live = [p for p in self.sentinels if procs.is_alive(p.pid, p.started)]
        master = self.master()
        for node in self.nodes:
            if node is not master and self.alive(node):
                probes.wait_replica_link(node.port, timeout, node.proc)
        replicas = sum(1 for n in self.nodes if n is not master and self.alive(n))
        probes.wait_sentinels([p.port for p in live], timeout, replicas=replicas,
                              watch=[*live, *(n.proc for n in self.nodes if self.alive(n))])

    def stop(self) -> None:
        for node in self.nodes:
            if node.frozen:
                self.resume(node)
        procs.stop_all([*(n.proc for n in self.nodes), *self.sentinels], timeout=5.0)

    # -- what the sentinels say ---------------------------------------------

    @property
    def sentinel_ports(self) -> list[int]:
        return [p.port for p in self.sentinels]

    def sentinel_views(self) -> list[tuple[str, int] | None]:
        """The master address each live sentinel gives (None: no answer)."""
        return [probes.sentinel_master_addr(p.port) for p in self.sentinels
                if procs.is_alive(p.pid, p.started)]

    def node_at(self, addr: tuple[str, int] | None) -> Node | None:
        for node in self.nodes:
            if addr is not None and node.addr == addr:
                return node
        return None

    def master(self) -> Node:
        """The node the live sentinels agree on; raises when they do not."""
        views = set(self.sentinel_views())
        node = self.node_at(next(iter(views))) if len(views) == 1 else None
        if node is None:
            raise AssertionError(f"sentinels do not agree on a master: {views}")
        return node

    def replicas_online(self, node: Node) -> int:
        """Replicas connected to ``node`` and online (what WAIT can count on)."""
        try:
            with node.client() as r:
                info = r.info("replication")
        except redis.RedisError:
            return 0
        return sum(1 for k, v in info.items()
                   if k.startswith("slave") and isinstance(v, dict) and v.get("state") == "online")

    def wait_failover(self, old: Node, timeout: float = 20.0) -> Node:
        """Wait until every live sentinel names another node, that node says
        it is master and has a replica online; return it."""
        def promoted() -> Node | None:
            views = set(self.sentinel_views())
            if len(views) != 1:
                return None
            node = self.node_at(next(iter(views)))
            if node is None or node is old or probes.role(node.port) != "master":
                return None
            return node if self.replicas_online(node) >= 1 else None

        return procs.wait_until(promoted, scaled(timeout), interval=0.05,
                                what=f"failover away from {old.name}")

    # -- faults -------------------------------------------------------------

    def alive(self, node: Node) -> bool:
        return procs.is_alive(node.proc.pid, node.proc.started)

    def kill(self, node: Node) -> float:
        """SIGKILL the node's recorded pid; return the monotonic time of the kill."""
        _signal(node.proc, signal.SIGKILL)
        at = time.monotonic()
        procs.wait_until(lambda: not self.alive(node), scaled(5), what=f"{node.name} to die")
        return at

    def freeze(self, node: Node) -> None:
        _signal(node.proc, signal.SIGSTOP)
        node.frozen = True

    def resume(self, node: Node) -> None:
        if node.frozen and self.alive(node):
            _signal(node.proc, signal.SIGCONT)
        node.frozen = False

    def stop_sentinel(self, index: int) -> None:
        proc = self.sentinels[index]
        if not procs.stop_proc(proc, 5.0):
            raise RuntimeError(f"could not stop {proc.name} (pid {proc.pid})")

    def restart_sentinel(self, index: int) -> Proc:
        """Start a stopped sentinel again from its (rewritten) config copy."""
        proc = procs.respawn(self.sentinels[index], wait=scaled(10))
        self.sentinels[index] = proc
        return proc

    # -- for app instances ----------------------------------------------------

    def instance_env(self, durability: str, **extra: str) -> dict[str, str]:
        """Sentinel-mode settings of an app instance on this topology.

        REDIS_URL names the first master too, so nothing can ever fall back
        to a default Redis on the standard port.
        """
        first = self.nodes[0]
        env = {
            "REDIS_SENTINELS": ",".join(f"{LOOPBACK}:{p}" for p in self.sentinel_ports),
            "REDIS_SENTINEL_MASTER": MASTER_NAME,
            "REDIS_URL": f"redis://{first.host}:{first.port}/0",
            "DURABILITY": durability,
            "MIN_REPLICAS": "1",
            "REPLICA_ACK_TIMEOUT_MS": "500",
        }
        env.update(extra)
        return env

    def describe(self) -> Mapping[str, object]:
        """Roles and views, for failure messages."""
        return {
            "nodes": {n.name: {"addr": n.addr, "pid": n.proc.pid, "alive": self.alive(n),
                               "role": probes.role(n.port) if self.alive(n) else None}
                      for n in self.nodes},
            "sentinels": {p.name: probes.sentinel_master_addr(p.port) for p in self.sentinels
                          if procs.is_alive(p.pid, p.started)},
        }


def _signal(proc: Proc, sig: int) -> None:
    """Signal exactly the recorded process, after checking it is still the one we started."""
    if not procs.is_alive(proc.pid, proc.started):
        raise ProcessLookupError(f"{proc.name} (pid {proc.pid}) is not running")
    os.kill(proc.pid, sig)
