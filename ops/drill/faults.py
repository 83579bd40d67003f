"""The faults of the failover drill, injected into a cluster started by
``ops.cluster``, and the way back to a whole cluster after each.

Synchronous and blocking (Redis probes, polling under deadlines): the drill
runs them in a worker thread while its traffic keeps flowing. Only pids
recorded in the cluster's state.json are signalled, after checking that each
still belongs to the recorded process (start time).

Each fault returns a :class:`FaultResult`: when it was injected and when its
action ended (``time.monotonic()``), figures for the report, problems it saw
itself (a second master taking writes), and a ``restore`` step that brings
the cluster back to full strength (a killed node started again and seen by
the sentinels as a healthy replica).
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import redis

from ops.local import cluster, probes, procs
from ops.local.procs import LOOPBACK, Proc

FAULTS = ("kill-instance", "kill-pubsub", "freeze-master", "kill-master")
# Faults outside `all`: failover-live shows a known loss window (docs/operations.md).
EXTRA_FAULTS = ("failover-live",)
FREEZE_S = 5.0
PUBSUB_KILL_ROUNDS = 6
PUBSUB_KILL_EVERY_S = 0.5


class DrillError(RuntimeError):
    """The drill cannot run against this cluster (not the same as a finding)."""


@dataclass
class ClusterView:
    """A cluster recorded in ``state_dir/state.json``, re-read on every call
    (``start NAME`` records a new pid)."""

    state_dir: Path
    master_name: str = "mymaster"

    def state(self) -> dict[str, object]:
        st = cluster.load_state(self.state_dir)
        if st is None:
            raise DrillError(f"no cluster recorded in {self.state_dir}")
        return st

    def procs(self, role: str | None = None) -> list[Proc]:
        return [p for p in cluster.recorded(self.state()) if role is None or p.role == role]

    def proc(self, name: str) -> Proc:
        for p in self.procs():
            if p.name == name:
                return p
        raise DrillError(f"no process named {name!r} in state.json")

    @property
    def url(self) -> str:
        return str(self.state()["url"])

    @property
    def replicas(self) -> int:
        return len(self.procs("redis")) - 1

    def sentinel_views(self) -> list[tuple[str, int] | None]:
        return [probes.sentinel_master_addr(s.port, self.master_name)
                for s in self.procs("sentinel")]

    def agreed_master(self) -> Proc | None:
        """The Redis node every sentinel names as master, if they agree."""
        views = set(self.sentinel_views())
        if len(views) != 1 or None in views:
            return None
        (addr,) = views
        assert addr is not None
        return next((p for p in self.procs("redis") if p.port == addr[1]), None)

    def ready(self) -> bool:
        """Whole again: every process alive, one agreed master with every
        other node replicating from it, sentinels able to fail over, every
        instance ready."""
        ps = self.procs()
        if not all(procs.is_alive(p.pid, p.started) for p in ps):
            return False
        master = self.agreed_master()
        if master is None or probes.role(master.port) != "master":
            return False
        replicas = [p for p in self.procs("redis") if p.name != master.name]
        if not all(probes.replica_link_up(p.port) for p in replicas):
            return False
        sentinels = [p.port for p in self.procs("sentinel")]
        if not all(probes.sentinel_ready(s, self.master_name, replicas=len(replicas),
                                         sentinels=len(sentinels)) for s in sentinels):
            return False
        return all(probes.http_status(f"http://{LOOPBACK}:{a.port}/readyz") == 200
                   for a in self.procs("app"))

    def wait_ready(self, timeout: float) -> float:
        """Wait until :meth:`ready`; return how long it took."""
        t0 = time.monotonic()
        procs.wait_until(self.ready, timeout, interval=0.2,
                         what="the cluster to be whole (every node up, replicas linked, "
                         "sentinels ready, instances ready)")
        return time.monotonic() - t0


def signal_recorded(p: Proc, sig: signal.Signals) -> None:
    """Signal a recorded process, only if it still is the recorded one."""
    if not procs.is_alive(p.pid, p.started):
        raise DrillError(f"{p.name} (pid {p.pid}) is not running")
    os.kill(p.pid, sig)


def _describe(p: Proc) -> str:
    return f"{p.name} (pid {p.pid}, {LOOPBACK}:{p.port})"


@dataclass
class FaultResult:
    fault: str
    started: float
    ended: float
    figures: dict[str, object] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    # Ids of the room's stream read on a resumed old master (freeze-master).
    old_master_ids: set[str] = field(default_factory=set)
    restore: Callable[[], None] = lambda: None


def _wait_new_master(view: ClusterView, old: Proc, t0: float, timeout: float,
                     figures: dict[str, object]) -> Proc | None:
    """Poll the sentinels until all of them name a master other than ``old``."""
    first: float | None = None
    deadline = t0 + timeout
    while time.monotonic() < deadline:
        views = view.sentinel_views()
        moved = [v for v in views if v is not None and v[1] != old.port]
        if moved and first is None:
            first = time.monotonic() - t0
        if len(moved) == len(views) and len(set(moved)) == 1:
            new = next(p for p in view.procs("redis") if p.port == moved[0][1])
            figures["new master"] = _describe(new)
            figures["time to new master (s)"] = round(time.monotonic() - t0, 2)
            figures["first sentinel to name it (s)"] = round(first or 0.0, 2)
            return new
        time.sleep(0.05)
    figures["new master"] = None
    return None


def _restart_redis(view: ClusterView, name: str, timeout: float) -> Callable[[], None]:
    def restore() -> None:
        p = view.proc(name)
        if not procs.is_alive(p.pid, p.started):
            cluster.start_process(view.state_dir, name, timeout=timeout)
        view.wait_ready(timeout)
    return restore


def kill_master(view: ClusterView, timeout: float = 30.0, **_: object) -> FaultResult:
    """SIGKILL the master the sentinels agree on; time until they name a new one."""
    old = view.agreed_master()
    if old is None:
        raise DrillError("the sentinels do not agree on a master")
    t0 = time.monotonic()
    signal_recorded(old, signal.SIGKILL)
    res = FaultResult("kill-master", t0, t0, figures={"killed": _describe(old)})
    if _wait_new_master(view, old, t0, timeout, res.figures) is None:
        res.problems.append(f"no new master within {timeout:.0f}s of killing {old.name}")
    res.ended = time.monotonic()
    res.restore = _restart_redis(view, old.name, 60.0)
    return res


def _log_key(r: redis.Redis, room: str) -> str | None:
    for key in r.scan_iter(match=f"*{{{room}}}:log", count=1000):
        return str(key)
    return None


def _stream_ids(port: int, room: str) -> set[str]:
    """Ids of the room's stream on one node, read directly (past any watermark)."""
    try:
        with probes.client(port) as r:
            key = _log_key(r, room)
            if key is None:
                return set()
            return {sid for sid, _f in probes.stream_entries(r, key)}
    except redis.RedisError:
        return set()


def _probe_write(port: int) -> str:
    """Try one write on a node: ``accepted``, or the error it refused with."""
    try:
        with probes.client(port) as r:
            r.set(f"drill:probe:{time.monotonic_ns()}", "1", px=60_000)
        return "accepted"
    except redis.ResponseError as exc:
        return f"refused ({str(exc).split(' ')[0]})"
    except redis.RedisError as exc:
        return f"unreachable ({type(exc).__name__})"


def freeze_master(view: ClusterView, room: str, freeze_s: float = FREEZE_S,
                  timeout: float = 30.0, **_: object) -> FaultResult:
    """SIGSTOP the master for ``freeze_s``, then SIGCONT; then check that the
    resumed old master is a replica or refuses writes."""
    old = view.agreed_master()
    if old is None:
        raise DrillError("the sentinels do not agree on a master")
    t0 = time.monotonic()
    signal_recorded(old, signal.SIGSTOP)
    res = FaultResult("freeze-master", t0, t0, figures={"frozen": _describe(old)})
    try:
        new = _wait_new_master(view, old, t0, freeze_s, res.figures)
        # The freeze itself lasts freeze_s whether or not the sentinels were faster.
        left = t0 + freeze_s - time.monotonic()
        if left > 0:
            time.sleep(left)
    finally:
        os.kill(old.pid, signal.SIGCONT)
    t_cont = time.monotonic()
    res.ended = t_cont
    res.figures["frozen for (s)"] = round(t_cont - t0, 2)
    role = probes.role(old.port)
    res.figures["old master role on resume"] = role
    if role == "master":
        probe = _probe_write(old.port)
        res.figures["old master write probe on resume"] = probe
        if new is not None and probe == "accepted":
            res.problems.append(f"split brain: {old.name} accepted a write after resuming "
                                f"while {new.name} was master")
    res.old_master_ids |= _stream_ids(old.port, room)

    def restore() -> None:
        # Until Sentinel demotes it, keep reading what the old master holds.
        deadline = time.monotonic() + 60.0
        while probes.role(old.port) != "slave" and time.monotonic() < deadline:
            res.old_master_ids |= _stream_ids(old.port, room)
            time.sleep(0.1)
        if new is not None:
            demoted = probes.role(old.port) == "slave"
            res.figures["old master demoted after resume (s)"] = (
                round(time.monotonic() - t_cont, 2) if demoted else None)
            if not demoted:
                res.problems.append(f"{old.name} still not a replica 60s after resuming")
        view.wait_ready(60.0)

    res.restore = restore
    if new is None:
        res.figures["note"] = "no failover during the freeze: the master simply resumed"
    return res


def kill_instance(view: ClusterView, clients: Mapping[str, int] | None = None,
                  **_: object) -> FaultResult:
    """SIGKILL the app instance holding most drill clients (else the first)."""
    apps = [a for a in view.procs("app") if procs.is_alive(a.pid, a.started)]
    if not apps:
        raise DrillError("no app instance is running")
    counts = clients or {}
    victim = max(apps, key=lambda a: (counts.get(a.name, 0), -apps.index(a)))
    t0 = time.monotonic()
    signal_recorded(victim, signal.SIGKILL)
    res = FaultResult("kill-instance", t0, t0, figures={
        "killed": _describe(victim), "drill clients on it": counts.get(victim.name, 0)})

    def restore() -> None:
        p = view.proc(victim.name)
        if not procs.is_alive(p.pid, p.started):
            cluster.start_process(view.state_dir, victim.name, timeout=30.0)
        view.wait_ready(60.0)

    res.restore = restore
    return res


def _pubsub_clients(r: redis.Redis) -> list[dict[str, object]]:
    """The node's Pub/Sub clients that are not a sentinel's hello link."""
    return [c for c in r.client_list(_type="pubsub")
            if not str(c.get("name", "")).startswith("sentinel-")]


def kill_pubsub(view: ClusterView, rounds: int = PUBSUB_KILL_ROUNDS,
                every_s: float = PUBSUB_KILL_EVERY_S, **_: object) -> FaultResult:
    """Kill the instances' Pub/Sub connections on the master, ``rounds`` times.

    This is ``CLIENT KILL TYPE pubsub`` minus the sentinels' own links: each
    sentinel subscribes to ``__sentinel__:hello`` on the master and sends it
    no PING while that link is down (it reconnects at most once a second).
    Killing them repeatedly makes every sentinel see the healthy master as
    down after ``down-after-milliseconds`` and fail it over: a different
    fault (see ``failover-live``), not the one this drill is about.
    """
    master = view.agreed_master()
    if master is None:
        raise DrillError("the sentinels do not agree on a master")
    t0 = time.monotonic()
    res = FaultResult("kill-pubsub", t0, t0, figures={"master": _describe(master)})
    killed = 0
    for i in range(rounds):
        if i:
            time.sleep(every_s)  # the fault's own cadence
        try:
            with probes.client(master.port) as r:
                for c in _pubsub_clients(r):
                    killed += int(r.execute_command("CLIENT", "KILL", "ID", c["id"]))
        except redis.RedisError as exc:
            res.problems.append(f"CLIENT KILL failed: {exc}")
    res.ended = time.monotonic()
    res.figures["rounds"] = rounds
    res.figures["pubsub connections killed"] = killed
    if view.agreed_master() != master:
        res.problems.append("the sentinels failed the master over during kill-pubsub")
    res.restore = lambda: view.wait_ready(60.0)
    return res


def failover_live(view: ClusterView, timeout: float = 30.0, **_: object) -> FaultResult:
    """``SENTINEL FAILOVER`` while the master is alive and still serving.

    What a false "down" verdict or a network partition between the sentinels
    and the master amounts to: a replica is promoted while the old master
    keeps answering the instances connected to it until Sentinel
    reconfigures the nodes. Not part of ``all``.
    """
    old = view.agreed_master()
    if old is None:
        raise DrillError("the sentinels do not agree on a master")
    sentinel = view.procs("sentinel")[0]
    t0 = time.monotonic()
    with probes.client(sentinel.port) as r:
        r.execute_command("SENTINEL", "FAILOVER", view.master_name)
    res = FaultResult("failover-live", t0, t0, figures={"old master": _describe(old)})
    if _wait_new_master(view, old, t0, timeout, res.figures) is None:
        res.problems.append(f"no new master within {timeout:.0f}s of SENTINEL FAILOVER")
    res.ended = time.monotonic()
    res.restore = lambda: view.wait_ready(60.0)
    return res


INJECT: dict[str, Callable[..., FaultResult]] = {
    "kill-master": kill_master,
    "freeze-master": freeze_master,
    "kill-instance": kill_instance,
    "kill-pubsub": kill_pubsub,
    "failover-live": failover_live,
}
