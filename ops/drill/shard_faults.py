"""The faults of the failover drill for a Redis Cluster (``up --redis cluster``).

Each fault hits the shard that owns the drill's *target room*: its master is
killed, frozen, or the room's slot is moved to another master while the room
is published to. Rooms on the other shards run alongside, so the report can
say whether they stalled (they must not: ``cluster-require-full-coverage
no``, and an instance keeps one Pub/Sub link per master).

- ``kill-shard-master``: SIGKILL the master; the cluster promotes its replica
  after ``cluster-node-timeout`` (2 s here). The old node is then started
  again with its ``nodes.conf`` and rejoins as the new master's replica:
  until it has synced, ``WAIT`` on that shard cannot be answered and
  publishes to its rooms wait (``unavailable``, retried by the publishers).
- ``freeze-shard-master``: SIGSTOP for longer than the node timeout, then
  SIGCONT. The old master wakes up to find itself replaced; whatever it held
  that the new master lacks must never have been confirmed nor delivered.
- ``migrate-slot``: ``CLUSTER SETSLOT IMPORTING/MIGRATING``, ``MIGRATE`` of
  every key, ``SETSLOT NODE`` (what ``redis-cli --cluster reshard`` does, for
  exactly the room's slot) to another master, while publishing.

Only pids recorded in state.json are signalled (after the start-time check).
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import redis

from ops.local import cluster, cluster_shards, probes, procs
from ops.drill.faults import DrillError, FaultResult, signal_recorded
from ops.local.procs import LOOPBACK, Proc
from ops.local.redis_cluster import NODE_TIMEOUT_MS, key_slot

SHARD_FAULTS = ("kill-shard-master", "freeze-shard-master", "migrate-slot")
FREEZE_S = 3 * NODE_TIMEOUT_MS / 1000  # long enough for the replica to be promoted


def room_slot(room: str) -> int:
    """Every key of a room carries ``{room}`` as its hash tag."""
    return key_slot(f"{{{room}}}")


@dataclass
class ShardView:
    """A Redis Cluster deployment recorded in ``state_dir/state.json``,
    re-read on every call (``start NAME`` records a new pid)."""

    state_dir: Path

    def state(self) -> dict[str, object]:
        st = cluster.load_state(self.state_dir)
        if st is None:
            raise DrillError(f"nothing recorded in {self.state_dir}")
        return st

    def procs(self, role: str | None = None) -> list[Proc]:
        return [p for p in cluster.recorded(self.state()) if role is None or p.role == role]

    @property
    def url(self) -> str:
        return str(self.state()["url"])

    def nodes(self) -> cluster_shards.RecordedCluster:
        return cluster_shards.view(self.state())

    def name(self, port: int) -> str:
        return next((p.name for p in self.procs("redis") if p.port == port), str(port))

    def describe(self, port: int) -> str:
        p = self.nodes().node(port)
        return f"{p.name} (pid {p.pid}, {LOOPBACK}:{p.port})"

    def ready(self) -> bool:
        """Whole again: every process alive, every shard with an online
        master and replica, every instance ready with every shard's link up."""
        if not all(procs.is_alive(p.pid, p.started) for p in self.procs()):
            return False
        try:
            self.nodes().wait_healthy(timeout=0.5)
        except (TimeoutError, procs.ProcessExited, redis.RedisError):
            return False
        return all(probes.every_shard_served(f"http://{LOOPBACK}:{a.port}/readyz")
                   for a in self.procs("app"))

    def wait_ready(self, timeout: float) -> float:
        t0 = time.monotonic()
        procs.wait_until(self.ready, timeout, interval=0.2,
                         what="the Redis Cluster to be whole (every shard with an online "
                         "replica, every instance ready)")
        return time.monotonic() - t0


def _promoted(view: ShardView, old: int, replicas: list[int], t0: float, timeout: float,
              res: FaultResult) -> int | None:
    """Wait until one of ``replicas`` (``old``'s, taken before the fault)
    owns slots as an online master; record the time."""
    def found() -> int | None:
        # Ask only the other nodes: a frozen one would hold each poll for
        # its whole socket timeout.
        others = view.nodes()
        others.nodes = [n for n in others.nodes if n.port != old]
        return next((p for p in others.masters() if p in replicas), None)

    try:
        new = procs.wait_until(found, timeout, interval=0.05,
                               what=f"a replica of {view.name(old)} promoted")
    except TimeoutError:
        res.problems.append(f"no replica of {view.name(old)} promoted within {timeout:.0f}s")
        res.figures["new master"] = None
        return None
    res.figures["new master"] = view.describe(new)
    res.figures["time to new master (s)"] = round(time.monotonic() - t0, 2)
    return new


def _rejoin(view: ShardView, name: str, timeout: float) -> Callable[[], None]:
    def restore() -> None:
        p = next(q for q in view.procs() if q.name == name)
        if not procs.is_alive(p.pid, p.started):
            cluster.start_process(view.state_dir, name, timeout=timeout)
        view.wait_ready(timeout)
    return restore


def kill_shard_master(view: ShardView, room: str, timeout: float = 30.0,
                      **_: object) -> FaultResult:
    """SIGKILL the room's master, time the promotion, start the node again."""
    nodes = view.nodes()
    old = nodes.owner(room_slot(room))
    victim = nodes.node(old)
    before = nodes.masters()
    t0 = time.monotonic()
    signal_recorded(victim, signal.SIGKILL)
    res = FaultResult("kill-shard-master", t0, t0, figures={
        "killed": view.describe(old), "its replica": [view.name(p) for p in before.get(old, [])]})
    procs.wait_until(lambda: not procs.is_alive(victim.pid, victim.started), 10.0,
                     what=f"{victim.name} to die")
    _promoted(view, old, before.get(old, []), t0, timeout, res)
    # The node comes back (as a supervisor would restart it) and syncs as the
    # new master's replica: only then can WAIT on this shard be answered.
    cluster.start_process(view.state_dir, victim.name, timeout=timeout)
    procs.wait_until(lambda: probes.replica_link_up(victim.port), timeout, interval=0.05,
                     what=f"{victim.name} to sync as a replica")
    res.ended = time.monotonic()
    res.figures["old node back as a synced replica (s)"] = round(res.ended - t0, 2)
    res.restore = _rejoin(view, victim.name, 60.0)
    return res


def _probe_write(port: int, room: str) -> str:
    """One write to a key of the room's slot on the old master, directly."""
    try:
        with probes.client(port) as r:
            r.set(f"drill:probe:{{{room}}}:{time.monotonic_ns()}", "1", px=60_000)
        return "accepted"
    except redis.ResponseError as exc:  # redis-py turns MOVED into MovedError
        return f"refused ({type(exc).__name__}: {exc})"
    except redis.RedisError as exc:
        return f"unreachable ({type(exc).__name__})"


def _stream_ids(port: int, room: str) -> set[str]:
    """Ids of the room's stream on one node, read directly (READONLY on a replica)."""
    try:
        with probes.client(port) as r:
            r.execute_command("READONLY")
            for key in r.scan_iter(match=f"*{{{room}}}:log", count=1000):
                return {str(sid) for sid, _f in r.xrange(key, count=100_000)}
    except redis.RedisError:
        pass
    return set()


def freeze_shard_master(view: ShardView, room: str, freeze_s: float = FREEZE_S,
                        timeout: float = 30.0, **_: object) -> FaultResult:
    """SIGSTOP the room's master past the node timeout, then SIGCONT."""
    nodes = view.nodes()
    old = nodes.owner(room_slot(room))
    victim = nodes.node(old)
    replicas = nodes.masters().get(old, [])
    t0 = time.monotonic()
    signal_recorded(victim, signal.SIGSTOP)
    res = FaultResult("freeze-shard-master", t0, t0, figures={"frozen": view.describe(old)})
    try:
        new = _promoted(view, old, replicas, t0, freeze_s + timeout, res)
        left = t0 + freeze_s - time.monotonic()
        if left > 0:
            time.sleep(left)  # the freeze lasts freeze_s even when promotion was quicker
    finally:
        os.kill(victim.pid, signal.SIGCONT)
    t_cont = time.monotonic()
    res.ended = t_cont
    res.figures["frozen for (s)"] = round(t_cont - t0, 2)
    role = probes.role(old)
    res.figures["old master role on resume"] = role
    res.figures["old master write probe on resume"] = _probe_write(old, room)
    res.old_master_ids |= _stream_ids(old, room)

    def restore() -> None:
        # Runs once traffic is over: a demotion seen here is timed only as
        # "by then"; one seen at resume is immediate.
        deadline = time.monotonic() + 60.0
        while probes.role(old) != "slave" and time.monotonic() < deadline:
            res.old_master_ids |= _stream_ids(old, room)
            time.sleep(0.1)
        if new is not None:
            demoted = probes.role(old) == "slave"
            if role != "slave":
                res.figures["old master a replica within (s) of resuming"] = (
                    round(time.monotonic() - t_cont, 2) if demoted else None)
            if not demoted:
                res.problems.append(f"{victim.name} still not a replica 60s after resuming")
        view.wait_ready(60.0)

    res.restore = restore
    return res


def migrate_slot(view: ShardView, room: str, **_: object) -> FaultResult:
    """Move the room's slot, keys and all, to the next master while it is live."""
    nodes = view.nodes()
    slot = room_slot(room)
    source = nodes.owner(slot)
    masters = sorted(nodes.masters())
    target = masters[(masters.index(source) + 1) % len(masters)]
    t0 = time.monotonic()
    res = FaultResult("migrate-slot", t0, t0, figures={
        "slot": slot, "from": view.describe(source), "to": view.describe(target)})
    try:
        nodes.migrate_slot(slot, target)
    except redis.RedisError as exc:
        res.problems.append(f"slot migration failed: {exc}")
    res.ended = time.monotonic()
    res.figures["migration took (s)"] = round(res.ended - t0, 3)
    # SETSLOT NODE went to the masters; replicas learn the new owner by
    # gossip. Wait (bounded) until every node names the target.
    try:
        procs.wait_until(lambda: _owners(view, slot) == {target}, 10.0, interval=0.05,
                         what=f"every node to name {view.name(target)} as the owner of {slot}")
        res.figures["every node agreed after (s)"] = round(time.monotonic() - t0, 3)
    except TimeoutError:
        seen = ", ".join(sorted(view.name(p) for p in _owners(view, slot)))
        res.problems.append(f"10 s after the migration the nodes name {seen} as the owner of "
                            f"slot {slot}, not only {view.name(target)}")
    res.restore = lambda: view.wait_ready(60.0)
    return res


def _owners(view: ShardView, slot: int) -> set[int]:
    """The owner of ``slot`` according to each live node (one entry when they agree)."""
    out: set[int] = set()
    for p in view.procs("redis"):
        if not procs.is_alive(p.pid, p.started):
            continue
        try:
            with probes.client(p.port) as r:
                for start, end, master, *_ in r.execute_command("CLUSTER", "SLOTS"):
                    if int(start) <= slot <= int(end):
                        out.add(int(master[1]))
        except redis.RedisError:
            out.add(-1)  # a node that does not answer has not agreed
    return out


SHARD_INJECT: dict[str, Callable[..., FaultResult]] = {
    "kill-shard-master": kill_shard_master,
    "freeze-shard-master": freeze_shard_master,
    "migrate-slot": migrate_slot,
}
