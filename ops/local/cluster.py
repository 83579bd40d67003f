"""A local streamgate cluster, no Docker: ``python -m ops.cluster up|down|status``.

Also ``stop NAME`` / ``start NAME`` for one recorded process (drills).

The same topology as docker-compose.sentinel.yml, as processes on 127.0.0.1:
a Redis master and its replica(s) (--replicas, default 1), three sentinels
(quorum 2), N app instances
(uvicorn, DURABILITY=replica, the master found through Sentinel) and nginx
in front on one port (--port). Every other port is a free one (procs.free_ports).

State (configs, data, logs) lives under ``--state-dir`` (default
./var/cluster) and ``state.json`` records every process: name, role, pid,
port, command, log, start time. ``state.json`` is written after each start,
so ``down`` can clean up even after an interrupted ``up``; ``down`` signals
exactly those pids (after checking they were not recycled) and nothing else.

``up`` returns only when the cluster can take a failover: every replica link
is up and every sentinel sees the master, the replicas and the other two
sentinels.

Replicas and failover drills: the nodes run with ``min-replicas-to-write 1``
and the instances with ``DURABILITY=replica``, so a master needs a live
replica to take writes. With one replica, a failover leaves the new master
with none, and publishing stops until the old node is back (as a replica).
``--replicas 2`` keeps publishing through a failover; the failover drill
(``python -m ops.drill``) needs it. Each ``up`` starts from empty data (ports change every time, so an
old Sentinel or replica state would point at nothing).

``up --redis cluster`` starts a Redis Cluster instead (3 masters, 3
replicas, see :mod:`ops.local.cluster_shards` and docker-compose.cluster.yml); the
instances run in cluster mode with ``DURABILITY=replica``, and ``status``
shows each shard's master and slot count. ``down``, ``stop`` and ``start``
work the same way for both.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

from ops.local import cluster_shards, probes, procs
from ops.local.procs import LOOPBACK, Proc
from ops.local.render import MASTER_NAME

STATE_FILE = "state.json"
# Sub-directories `up` owns and may clear; nothing else in the state dir is touched.
# Redis nodes are redis-1 (the first master), redis-2, ... (see _redis_dirs).
_OWNED = ("sentinel-1", "sentinel-2", "sentinel-3", "apps", "nginx")


def _redis_dirs(state_dir: Path) -> list[Path]:
    return [d for d in state_dir.glob("redis-*")
            if d.is_dir() and d.name.removeprefix("redis-").isdigit()]


class ClusterError(RuntimeError):
    pass


# --- state.json -----------------------------------------------------------------


def load_state(state_dir: Path) -> dict[str, object] | None:
    path = state_dir / STATE_FILE
    if not path.exists():
        return None
    return json.loads(path.read_text())


def recorded(state: dict[str, object] | None) -> list[Proc]:
    if not state:
        return []
    return [Proc.from_dict(p) for p in state.get("processes", [])]  # type: ignore[union-attr]


def _save(state_dir: Path, state: dict[str, object], started: list[Proc]) -> None:
    state["processes"] = [p.to_dict() for p in started]
    tmp = state_dir / (STATE_FILE + ".tmp")
    tmp.write_text(json.dumps(state, indent=2) + "\n")
    tmp.replace(state_dir / STATE_FILE)


# --- up ----------------------------------------------------------------------------


def _app_env(instance: str, sentinel_ports: list[int], master_port: int) -> dict[str, str | None]:
    """Environment of one instance: Sentinel mode, replica durability.

    AUTH_MODE defaults to ``none`` for a local cluster; AUTH_MODE and
    JWT_SECRET from the caller's environment pass through unchanged.
    REDIS_URL points at the initial master so that nothing in an instance
    can ever fall back to a default Redis on another port.
    """
    return {
        "REDIS_SENTINELS": ",".join(f"{LOOPBACK}:{p}" for p in sentinel_ports),
        "REDIS_SENTINEL_MASTER": MASTER_NAME,
        "REDIS_URL": f"redis://{LOOPBACK}:{master_port}/0",
        "DURABILITY": "replica",
        "MIN_REPLICAS": "1",
        "AUTH_MODE": os.environ.get("AUTH_MODE", "none"),
        "INSTANCE_ID": instance,
    }


def _start_shards(args: argparse.Namespace, state_dir: Path, state: dict[str, object],
                  started: list[Proc]) -> None:
    """``--redis cluster``: three shards instead of a master with Sentinel."""
    t = args.timeout
    n = args.instances

    def record(p: Proc) -> Proc:
        started.append(p)
        _save(state_dir, state, started)
        return p

    nodes = cluster_shards.start_redis(state_dir, record, t)
    state["seeds"] = nodes.seeds
    ports = procs.free_ports(n + 1)
    app_ports = ports[:n]
    http_port = args.port or ports[-1]
    if args.port and procs.port_open(http_port):
        raise ClusterError(f"port {http_port} is already in use; pass --port 0 for a free one")
    apps = [
        record(procs.start_app(p, cluster_shards.app_env(f"app-{i}", nodes.seeds, nodes.ports[0]),
                               state_dir / "apps" / f"app-{i}.log", app=args.app,
                               name=f"app-{i}"))
        for i, p in enumerate(app_ports, 1)
    ]
    _start_front(args, state_dir, state, started, apps, http_port)


def _start_front(args: argparse.Namespace, state_dir: Path, state: dict[str, object],
                 started: list[Proc], apps: list[Proc], http_port: int) -> None:
    """Wait for the instances, then start nginx in front of them."""
    t = args.timeout
    deadline = time.monotonic() + t
    for a in apps:
        probes.wait_http_ok(f"http://{LOOPBACK}:{a.port}/healthz",
                            max(0.1, deadline - time.monotonic()), watch=[a])
    nginx = procs.start_nginx(http_port, [a.port for a in apps], state_dir / "nginx", wait=t)
    started.append(nginx)
    _save(state_dir, state, started)
    probes.wait_http_ok(f"http://{LOOPBACK}:{http_port}/healthz", t, watch=[nginx])
    state["url"] = f"http://{LOOPBACK}:{http_port}/"
    _save(state_dir, state, started)


def _start_all(args: argparse.Namespace, state_dir: Path, state: dict[str, object],
               started: list[Proc]) -> None:
    """Start every process in dependency order, waiting for each layer."""
    if args.redis == "cluster":
        _start_shards(args, state_dir, state, started)
        return
    t = args.timeout
    n = args.instances
    nodes = 1 + args.replicas
    ports = procs.free_ports(nodes + 4 + n)
    redis_ports = ports[:nodes]
    sentinel_ports = ports[nodes:nodes + 3]
    app_ports = ports[nodes + 3:nodes + 3 + n]
    http_port = args.port or ports[-1]
    if args.port and procs.port_open(http_port):
        raise ClusterError(f"port {http_port} is already in use; pass --port 0 for a free one")

    def record(p: Proc) -> Proc:
        started.append(p)
        _save(state_dir, state, started)
        return p

    master = record(procs.start_redis(redis_ports[0], state_dir / "redis-1",
                                      name="redis-1", wait=t))
    probes.wait_redis(master.port, t, master)
    replicas = [
        record(procs.start_redis(p, state_dir / f"redis-{i}", replicaof=master.port,
                                 name=f"redis-{i}", wait=t))
        for i, p in enumerate(redis_ports[1:], 2)
    ]
    for replica in replicas:
        probes.wait_replica_link(replica.port, t, replica)

    # Sentinels start after the replica links are up: their first INFO of the
    # master then already lists the replicas (otherwise ~10 s until the next).
    sentinels = [
        record(procs.start_sentinel(p, state_dir / f"sentinel-{i}", master.port,
                                    down_after_ms=args.down_after_ms,
                                    name=f"sentinel-{i}", wait=t))
        for i, p in enumerate(sentinel_ports, 1)
    ]
    probes.wait_sentinels(sentinel_ports, t, replicas=len(replicas),
                          watch=[master, *replicas, *sentinels])

    apps = [
        record(procs.start_app(p, _app_env(f"app-{i}", sentinel_ports, master.port),
                               state_dir / "apps" / f"app-{i}.log", app=args.app,
                               name=f"app-{i}"))
        for i, p in enumerate(app_ports, 1)
    ]
    _start_front(args, state_dir, state, started, apps, http_port)


def up(args: argparse.Namespace) -> int:
    state_dir: Path = args.state_dir
    alive = [p for p in recorded(load_state(state_dir)) if procs.is_alive(p.pid, p.started)]
    if alive:
        names = ", ".join(f"{p.name} (pid {p.pid})" for p in alive)
        print(f"a cluster is already running from {state_dir}: {names}\n"
              f"run `python -m ops.cluster down --state-dir {state_dir}` first", file=sys.stderr)
        return 1
    state_dir.mkdir(parents=True, exist_ok=True)
    for sub in [*_OWNED, *(d.name for d in _redis_dirs(state_dir))]:
        shutil.rmtree(state_dir / sub, ignore_errors=True)
    (state_dir / STATE_FILE).unlink(missing_ok=True)
    state: dict[str, object] = {
        "state_dir": str(state_dir.resolve()),
        "redis": args.redis,
        "master_name": MASTER_NAME if args.redis == "sentinel" else None,
        "created": time.time(),
        "url": None,
        "processes": [],
    }
    started: list[Proc] = []
    try:
        _start_all(args, state_dir, state, started)
    except BaseException as e:  # including Ctrl-C: never leave half a cluster behind
        print(f"cluster start failed: {e}", file=sys.stderr)
        left = procs.stop_all(started)
        for p in left:
            print(f"could not stop {p.name} (pid {p.pid})", file=sys.stderr)
        if isinstance(e, Exception):
            print(f"logs are under {state_dir}", file=sys.stderr)
            return 1
        raise
    print(f"streamgate cluster up: {state['url']}")
    print(f"  state: {state_dir / STATE_FILE}   stop with: python -m ops.cluster down"
          + ("" if args.state_dir == _default_state_dir() else f" --state-dir {state_dir}"))
    return 0


# --- down ---------------------------------------------------------------------------


def down(args: argparse.Namespace) -> int:
    state = load_state(args.state_dir)
    if state is None:
        print(f"no cluster recorded in {args.state_dir}")
        return 0
    left = procs.stop_all(recorded(state), args.timeout)
    for p in left:
        print(f"could not stop {p.name} (pid {p.pid})", file=sys.stderr)
    if left:
        return 1
    print(f"stopped {len(recorded(state))} processes")
    return 0


# --- one process ------------------------------------------------------------------


def _find(state: dict[str, object], name: str) -> tuple[int, Proc]:
    for i, p in enumerate(recorded(state)):
        if p.name == name:
            return i, p
    raise ClusterError(f"no process named {name!r} in state.json")


def stop_process(state_dir: Path, name: str, timeout: float = 10.0) -> Proc:
    """Stop one recorded process (for drills: take a node away, keep the rest)."""
    state = load_state(state_dir)
    if state is None:
        raise ClusterError(f"no cluster recorded in {state_dir}")
    _, p = _find(state, name)
    if not procs.stop_proc(p, timeout):
        raise ClusterError(f"could not stop {name} (pid {p.pid})")
    return p


def start_process(state_dir: Path, name: str, timeout: float = 10.0) -> Proc:
    """Start a stopped recorded process again with its recorded command.

    A Redis node comes back in the role Sentinel last wrote into its config
    copy (a killed master that Sentinel could not reach comes back as a
    master, refuses writes for lack of a replica, and is demoted by Sentinel
    within seconds). state.json gets the new pid, so ``down`` still stops it.
    """
    state = load_state(state_dir)
    if state is None:
        raise ClusterError(f"no cluster recorded in {state_dir}")
    i, p = _find(state, name)
    if procs.is_alive(p.pid, p.started):
        raise ClusterError(f"{name} is still running (pid {p.pid})")
    new = procs.respawn(p, wait=timeout)
    started = recorded(state)
    started[i] = new
    _save(state_dir, state, started)
    return new


# --- status -------------------------------------------------------------------------


def collect_status(state: dict[str, object]) -> dict[str, object]:
    """Every recorded process with liveness and what it reports about itself."""
    ps = recorded(state)
    by_port = {p.port: p.name for p in ps if p.role == "redis"}
    rows: list[dict[str, object]] = []
    views: dict[str, object] = {}
    for p in ps:
        row: dict[str, object] = {"name": p.name, "role": p.role, "pid": p.pid,
                                  "port": p.port, "alive": procs.is_alive(p.pid, p.started)}
        if row["alive"] and p.role == "redis":
            row["redis_role"] = probes.role(p.port)
        elif row["alive"] and p.role == "sentinel":
            addr = probes.sentinel_master_addr(p.port, str(state.get("master_name")))
            name = by_port.get(addr[1]) if addr else None
            row["master"] = f"{name} ({addr[0]}:{addr[1]})" if addr else None
            views[p.name] = row["master"]
        elif row["alive"]:
            row["healthz"] = probes.http_status(f"http://{LOOPBACK}:{p.port}/healthz")
        rows.append(row)
    if state.get("redis") == "cluster":
        names = {p.port: p.name for p in ps if p.role == "redis"}
        live = [p.port for p in ps if p.role == "redis" and procs.is_alive(p.pid, p.started)]
        return {
            "state_dir": state.get("state_dir"),
            "url": state.get("url"),
            "redis": "cluster",
            "processes": rows,
            "cluster_state": cluster_shards.cluster_state(live),
            "shards": cluster_shards.shards(live, names),
            "all_alive": all(r["alive"] for r in rows) and bool(rows),
        }
    masters = set(views.values())
    agree = len(masters) == 1 and None not in masters
    return {
        "state_dir": state.get("state_dir"),
        "url": state.get("url"),
        "processes": rows,
        "sentinel_master": next(iter(masters)) if agree else None,
        "sentinels_agree": agree,
        "all_alive": all(r["alive"] for r in rows) and bool(rows),
    }


def status(args: argparse.Namespace) -> int:
    state = load_state(args.state_dir)
    if state is None:
        print(f"no cluster recorded in {args.state_dir}")
        return 1
    st = collect_status(state)
    if args.json:
        print(json.dumps(st, indent=2))
        return 0 if st["all_alive"] else 1
    print(f"cluster in {st['state_dir']}  url: {st['url']}")
    print(f"{'NAME':<12} {'ROLE':<9} {'PID':>8} {'PORT':>6}  STATE  DETAIL")
    for r in st["processes"]:  # type: ignore[union-attr]
        detail = ""
        if "redis_role" in r:
            detail = f"role={r['redis_role']}"
        elif "master" in r:
            detail = f"master={r['master']}"
        elif "healthz" in r:
            detail = f"/healthz={r['healthz']}"
        state_word = "alive" if r["alive"] else "DEAD"
        print(f"{r['name']:<12} {r['role']:<9} {r['pid']:>8} {r['port']:>6}  {state_word:<5}  {detail}")
    if st.get("redis") == "cluster":
        print(f"cluster_state: {st['cluster_state']}")
        for sh in st["shards"] or []:  # type: ignore[union-attr]
            print(f"  shard: master {sh['master']} ({sh['master_health']}), {sh['slots']} slots, "
                  f"replicas {', '.join(sh['replicas']) or 'none'}")
        return 0 if st["all_alive"] else 1
    views = [r.get("master") for r in st["processes"] if r["role"] == "sentinel"]  # type: ignore[union-attr]
    if st["sentinels_agree"]:
        print(f"sentinels agree: master is {st['sentinel_master']}")
    elif any(views):
        print(f"sentinels DISAGREE: {views}")
    else:
        print("no sentinel answered")
    return 0 if st["all_alive"] else 1


# --- command line --------------------------------------------------------------------


def _default_state_dir() -> Path:
    return Path("var") / "cluster"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        prog="python -m ops.cluster",
        description="Run the streamgate topology (Redis, Sentinel, app, nginx) as local "
        "processes on 127.0.0.1.")
    ap.add_argument("--state-dir", type=Path, default=_default_state_dir(),
                    help="configs, data, logs and state.json (default: ./var/cluster)")
    sub = ap.add_subparsers(dest="command", required=True)
    u = sub.add_parser("up", help="start the cluster and wait until it is ready")
    u.add_argument("--instances", type=int, default=3, help="app instances (default 3)")
    u.add_argument("--redis", choices=("sentinel", "cluster"), default="sentinel",
                   help="sentinel (default): one master, --replicas replicas, three sentinels; "
                   "cluster: a Redis Cluster of 3 masters and 3 replicas (REDIS_CLUSTER_NODES)")
    u.add_argument("--replicas", type=int, default=1,
                   help="Redis replicas (default 1; the failover drill needs 2: with "
                   "min-replicas-to-write 1 a new master needs a replica left to take writes)")
    u.add_argument("--port", type=int, default=8080, help="nginx port (default 8080; 0 = free)")
    u.add_argument("--timeout", type=float, default=60.0, help="seconds per start-up stage")
    u.add_argument("--app", default="app.main:app", help="ASGI app (default app.main:app)")
    u.add_argument("--down-after-ms", type=int, default=None,
                   help="sentinel down-after-milliseconds (default: ops/sentinel/sentinel.conf)")
    d = sub.add_parser("down", help="stop every recorded process")
    d.add_argument("--timeout", type=float, default=10.0, help="seconds before SIGKILL")
    s = sub.add_parser("status", help="liveness, Redis roles, the sentinels' master")
    s.add_argument("--json", action="store_true")
    k = sub.add_parser("stop", help="stop one process by name (e.g. redis-1)")
    k.add_argument("name")
    k.add_argument("--timeout", type=float, default=10.0, help="seconds before SIGKILL")
    r = sub.add_parser("start", help="start a stopped process again by name")
    r.add_argument("name")
    r.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for its port")
    # Accept --state-dir after the sub-command too.
    for p in (u, d, s, k, r):
        p.add_argument("--state-dir", type=Path, default=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.command == "up" and args.instances < 1:
        ap.error("--instances must be at least 1")
    if args.command == "up" and args.replicas < 1:
        ap.error("--replicas must be at least 1 (the nodes run with min-replicas-to-write 1)")
    return args


def _one(args: argparse.Namespace) -> int:
    try:
        if args.command == "stop":
            p = stop_process(args.state_dir, args.name, args.timeout)
            print(f"stopped {p.name} (pid {p.pid})")
        else:
            p = start_process(args.state_dir, args.name, args.timeout)
            print(f"started {p.name} (pid {p.pid}, port {p.port})")
    except (ClusterError, TimeoutError, procs.ProcessExited) as e:
        print(e, file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return {"up": up, "down": down, "status": status, "stop": _one, "start": _one}[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
