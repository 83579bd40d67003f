"""``python -m ops.load.bench_cluster``: one Redis against a 3-shard Redis Cluster,
the same fan-out scenario, in one run.

Why: a cluster is worth its extra parts only if the work really spreads
over its masters and a delivery costs about what it costs on one Redis.
This measures both, back to back, on fresh instances each time:

1. ``single``: one Redis master with one replica (each shard of the
   cluster has one too), two instances with ``REDIS_URL``.
2. ``cluster``: three masters and three replicas
   (:class:`ops.local.redis_cluster.LocalCluster`), two instances with
   ``REDIS_CLUSTER_NODES``.

The scenario (:mod:`ops.load.loadtest`, every delivery verified by id): ``--rooms``
rooms (300) of ``--room-size`` members (8), the members of each room
alternating between the two instances, one lane per room, ``--rate``
messages/s round-robin over the rooms for ``--seconds``. The run id is
chosen so that the rooms' slots split evenly over the cluster's masters
(no master owns more than one room more than its share).

Pinning as in ``ops.load.bench``: the two instances share core 0; every Redis
node and the generator share core 1. Figures:

- per delivery: the instances' CPU, the masters' CPU (``/proc``, over the
  measured window), and both together; cluster / single as ratios;
- per master (cluster): ``INFO cpu`` (``used_cpu_sys`` + ``used_cpu_user``)
  before and after the run, as a share of the three masters' total (target:
  each within ±15 % of a third);
- the replicas' CPU the same way, reported apart.

Results go to ``bench/results/<time>-cluster/``: each load run's JSON and
``summary.json`` / ``summary.md``.
"""

from __future__ import annotations

import argparse
import os
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import redis

from ops.load import bench, loadtest
from ops.local import probes, procs
from ops.load.run import room_name
from ops.local.procs import LOOPBACK
from ops.local.redis_cluster import LocalCluster, key_slot

SHARE_TOLERANCE = 0.15  # each master's share of the masters' CPU: a third, ±15 % of it
COST_TOLERANCE = 0.10  # cluster cost per delivery: within 10 % of single Redis
# The slot ranges `redis-cli --cluster create` gives three masters (which
# master gets which range varies; the ranges do not).
CREATE_RANGES = ((0, 5460, 1), (5461, 10922, 2), (10923, 16383, 3))


@dataclass(frozen=True)
class Options:
    rooms: int = 300
    room_size: int = 8
    rate: float = 300.0
    seconds: float = 20.0
    publishers: int = 2
    client: str = "picows"
    out: Path = loadtest.RESULTS_DIR
    first: str = "cluster"  # which mode runs first (the other follows on the same room names)
    env: tuple[tuple[str, str], ...] = ()  # settings for the instances of both modes


# --- where rooms land ------------------------------------------------------------------


def slot_owners(port: int) -> list[tuple[int, int, int]]:
    """(first slot, last slot, master port) for every range, from ``CLUSTER SLOTS``."""
    with redis.Redis(host=LOOPBACK, port=port, decode_responses=True, socket_timeout=5) as r:
        return [(int(a), int(b), int(m[1])) for a, b, m, *_ in r.execute_command("CLUSTER", "SLOTS")]


def owner_of(slot: int, ranges: Sequence[tuple[int, int, int]]) -> int:
    return next(m for a, b, m in ranges if a <= slot <= b)


def rooms_by_master(run_id: str, rooms: int, ranges: Sequence[tuple[int, int, int]]) -> dict[int, int]:
    """How many of the run's rooms each master owns (a room's keys hash on ``{room}``)."""
    out = {m: 0 for _a, _b, m in ranges}
    for r in range(rooms):
        out[owner_of(key_slot(room_name(run_id, r)), ranges)] += 1
    return out


def balanced_run_id(rooms: int, ranges: Sequence[tuple[int, int, int]],
                    tries: int = 50_000) -> tuple[str, dict[int, int]]:
    """The first run id whose rooms split over the masters within one room of even."""
    masters = len({m for _a, _b, m in ranges})
    best: tuple[float, str, dict[int, int]] | None = None
    for i in range(tries):
        run_id = f"c{i:05d}"
        counts = rooms_by_master(run_id, rooms, ranges)
        spread = max(counts.values()) - min(counts.values())
        if best is None or spread < best[0]:
            best = (spread, run_id, counts)
        if spread <= (0 if rooms % masters == 0 else 1):
            break
    assert best is not None
    return best[1], best[2]


# --- CPU --------------------------------------------------------------------------------


def info_cpu(port: int) -> float:
    """``used_cpu_sys`` + ``used_cpu_user`` of one node, in seconds."""
    with redis.Redis(host=LOOPBACK, port=port, socket_timeout=5) as r:
        info = r.info("cpu")
    return float(info["used_cpu_sys"]) + float(info["used_cpu_user"])


def shares(before: dict[int, float], after: dict[int, float]) -> dict[int, dict[str, float]]:
    """Each node's CPU over the run and its share of the group's total."""
    used = {p: after[p] - before[p] for p in before}
    total = sum(used.values()) or 1.0
    return {p: {"cpu_s": round(u, 3), "share": round(u / total, 4)} for p, u in used.items()}


# --- one mode ---------------------------------------------------------------------------


def _load(stack: bench.Stack, opts: Options, mode: str, run_id: str, watch: list[int],
          redis_url: str | None, cores: list[int] | None, out_dir: Path) -> dict[str, Any]:
    cfg = loadtest.LoadConfig(
        urls=stack.urls, subscribers=opts.rooms * opts.room_size, rooms=opts.rooms,
        publishers=opts.publishers, steps=[opts.rate], step_seconds=opts.seconds,
        ramp_seconds=2.0, procs=1, client=opts.client, concurrency=50, connect_timeout=300.0,
        server_pids=stack.app_pids, watch_pids=watch, redis_url=redis_url, warm_up=True,
        cpus=cores, out=str(out_dir / f"{mode}.json"), run_id=run_id,
        label=f"{mode}: {opts.rooms} rooms of {opts.room_size}, {opts.rate:g} msg/s, "
        "2 instances on one core")
    report = loadtest.run(cfg)
    for line in loadtest.summary_lines(report):
        print("  " + line, flush=True)
    return report


def per_delivery(report: dict[str, Any]) -> dict[str, Any]:
    """The measured step's figures, per delivery."""
    row = report["steps"][0]
    delivered = row.get("delivered") or 0
    confirmed = row.get("confirmed") or 0
    server_us = row.get("server_cpu_us_per_delivery")
    redis_us_msg = row.get("watched_cpu_us_per_message")
    redis_us = (redis_us_msg * confirmed / delivered) if redis_us_msg and delivered else None
    total = server_us + redis_us if server_us is not None and redis_us is not None else None
    t = report["totals"]
    return {
        "messages_per_s": row.get("messages_per_s"), "deliveries_per_s": row.get("deliveries_per_s"),
        "p99_ms": (row.get("latency_ms") or {}).get("p99"), "pass": row.get("pass"),
        "verified": report["ok"], "lost": t["lost"], "duplicates": t["duplicates"],
        "server_us_per_delivery": server_us,
        "masters_us_per_delivery": None if redis_us is None else round(redis_us, 3),
        "total_us_per_delivery": None if total is None else round(total, 3),
        "masters_us_per_message": redis_us_msg,
        "server_us_per_message": row.get("server_cpu_us_per_message"),
        "masters_cpu_util": row.get("watched_cpu_util"),
        "server_cpu_util": row.get("server_cpu_util"),
        "generator_cpu_util": row.get("generator_cpu_util"),
        "loadavg_end": report["host"]["loadavg_end"],
    }


def run_single(opts: Options, root: Path, cores: tuple[list[int] | None, list[int] | None],
               run_id: str, out_dir: Path) -> dict[str, Any]:
    server, other = cores
    stack = bench.Stack(root / "single", server, other, procs.REPO_ROOT, dict(opts.env))
    replica: procs.Proc | None = None
    try:
        stack.start_redis()
        assert stack.redis is not None
        replica = procs.start_redis(procs.free_port(), root / "single" / "replica",
                                    replicaof=stack.redis.port, name="single-replica",
                                    extra_args=["--save", "", "--appendonly", "no"])
        _pin([replica.pid], other)
        probes.wait_replica_link(replica.port, 30.0, replica)
        stack.start_apps("websockets-sansio")
        before = {stack.redis.port: info_cpu(stack.redis.port), replica.port: info_cpu(replica.port)}
        report = _load(stack, opts, "single", run_id, [stack.redis.pid], stack.redis_url,
                       other, out_dir)
        after = {p: info_cpu(p) for p in before}
        used = shares(before, after)
        fig = per_delivery(report)
        fig["info_cpu_s"] = {"master": used[stack.redis.port]["cpu_s"],
                             "replica": used[replica.port]["cpu_s"]}
        return fig
    finally:
        stack.stop()
        if replica is not None:
            procs.stop_proc(replica)


def run_cluster(opts: Options, root: Path, cores: tuple[list[int] | None, list[int] | None],
                run_id: str, out_dir: Path) -> dict[str, Any]:
    server, other = cores
    nodes = LocalCluster(root / "cluster-nodes")
    stack: bench.Stack | None = None
    try:
        nodes.start(60.0)
        _pin([p.pid for p in nodes.nodes], other)
        counts = rooms_by_master(run_id, opts.rooms, slot_owners(nodes.ports[0]))
        masters = sorted(counts)
        replicas = [p for p in nodes.ports if p not in masters]
        print(f"rooms per master (run id {run_id}): {counts}", flush=True)
        stack = bench.Stack(root / "cluster", server, other, procs.REPO_ROOT,
                            {**dict(opts.env), "REDIS_CLUSTER_NODES": nodes.seeds})
        stack.redis = nodes.node(masters[0])  # only REDIS_URL, never used in cluster mode
        stack.start_apps("websockets-sansio")
        before = {p: info_cpu(p) for p in nodes.ports}
        report = _load(stack, opts, "cluster", run_id, [nodes.node(m).pid for m in masters],
                       None, other, out_dir)
        after = {p: info_cpu(p) for p in nodes.ports}
        fig = per_delivery(report)
        fig["rooms_per_master"] = {str(m): counts[m] for m in masters}
        fig["masters"] = {str(p): v for p, v in
                          shares({m: before[m] for m in masters}, {m: after[m] for m in masters}).items()}
        fig["replicas_info_cpu_s"] = round(sum(after[p] - before[p] for p in replicas), 3)
        return fig
    finally:
        if stack is not None:
            stack.redis = None  # the cluster's node: stopped with the cluster below
            stack.stop()
        nodes.stop()


def _pin(pids: Sequence[int], cores: list[int] | None) -> None:
    if cores:
        for pid in pids:
            os.sched_setaffinity(pid, set(cores))


# --- the comparison ---------------------------------------------------------------------


def compare(single: dict[str, Any], cluster: dict[str, Any]) -> dict[str, Any]:
    def ratio(key: str) -> float | None:
        a, b = single.get(key), cluster.get(key)
        return round(b / a, 3) if a and b else None

    third = 1 / 3
    share_dev = {p: round(v["share"] / third - 1, 4) for p, v in cluster["masters"].items()}
    total = ratio("total_us_per_delivery")
    return {
        "cluster_over_single": {k: ratio(k) for k in (
            "server_us_per_delivery", "masters_us_per_delivery", "total_us_per_delivery",
            "masters_us_per_message", "p99_ms")},
        "master_share_vs_a_third": share_dev,
        "shares_within_tolerance": all(abs(d) <= SHARE_TOLERANCE for d in share_dev.values()),
        "cost_within_tolerance": total is not None and abs(total - 1) <= COST_TOLERANCE,
    }


def summary_md(opts: Options, single: dict[str, Any], cluster: dict[str, Any],
               cmp: dict[str, Any]) -> str:
    rows = [("verified (no loss, duplicate, disorder)", "verified", "{}"),
            ("messages/s", "messages_per_s", "{:,.0f}"),
            ("deliveries/s", "deliveries_per_s", "{:,.0f}"),
            ("p99 ms", "p99_ms", "{:.1f}"),
            ("instances µs / delivery", "server_us_per_delivery", "{:.2f}"),
            ("masters µs / delivery", "masters_us_per_delivery", "{:.2f}"),
            ("total µs / delivery", "total_us_per_delivery", "{:.2f}"),
            ("masters µs / message", "masters_us_per_message", "{:.1f}"),
            ("masters' CPU (share of a core)", "masters_cpu_util", "{:.1%}")]
    out = [f"{opts.rooms} rooms of {opts.room_size}, {opts.rate:g} msg/s for {opts.seconds:g} s",
           "", "| | single Redis | 3-shard cluster | cluster / single |", "| --- | --- | --- | --- |"]
    for name, key, fmt in rows:
        a, b = single.get(key), cluster.get(key)
        r = round(b / a, 3) if isinstance(a, float | int) and isinstance(b, float | int) and a \
            and not isinstance(a, bool) else ""
        out.append(f"| {name} | {'-' if a is None else fmt.format(a)} | "
                   f"{'-' if b is None else fmt.format(b)} | {r} |")
    out += ["", "| master | rooms | INFO cpu s | share | vs a third |", "| --- | --- | --- | --- | --- |"]
    for port, v in cluster["masters"].items():
        out.append(f"| {port} | {cluster['rooms_per_master'][port]} | {v['cpu_s']:.2f} | "
                   f"{v['share']:.1%} | {cmp['master_share_vs_a_third'][port]:+.1%} |")
    out += ["", f"- replicas' INFO cpu: single {single['info_cpu_s']['replica']:.2f} s, "
            f"cluster (three) {cluster['replicas_info_cpu_s']:.2f} s",
            f"- every master within ±{SHARE_TOLERANCE:.0%} of a third: {cmp['shares_within_tolerance']}",
            f"- total cost per delivery within {COST_TOLERANCE:.0%}: {cmp['cost_within_tolerance']}"]
    return "\n".join(out) + "\n"


def parse_args(argv: Sequence[str] | None = None) -> Options:
    ap = argparse.ArgumentParser(prog="python -m ops.load.bench_cluster", description=__doc__.split("\n")[0])
    d = Options()
    ap.add_argument("--rooms", type=int, default=d.rooms)
    ap.add_argument("--room-size", type=int, default=d.room_size)
    ap.add_argument("--rate", type=float, default=d.rate, help="messages/s over all rooms")
    ap.add_argument("--seconds", type=float, default=d.seconds)
    ap.add_argument("--publishers", type=int, default=d.publishers)
    ap.add_argument("--client", choices=("picows", "websockets"), default=d.client)
    ap.add_argument("--out", type=Path, default=d.out)
    ap.add_argument("--first", choices=("cluster", "single"), default=d.first,
                    help="the mode measured first (swap it to see what the order costs)")
    ap.add_argument("--env", action="append", default=[],
                    help="NAME=VALUE for the instances of both modes, e.g. DURABILITY=replica")
    a = ap.parse_args(argv)
    env = tuple(tuple(e.split("=", 1)) for e in a.env if "=" in e)
    return Options(a.rooms, a.room_size, a.rate, a.seconds, a.publishers, a.client, a.out,
                   a.first, env)  # type: ignore[arg-type]


def main(argv: Sequence[str] | None = None) -> int:
    opts = parse_args(argv)
    missing = procs.missing_programs("redis-server", "redis-cli")
    if missing:
        print(f"not installed: {', '.join(missing)}", file=sys.stderr)
        return 2
    out_dir = opts.out / (datetime.now().strftime("%Y%m%d-%H%M%S") + "-cluster")
    out_dir.mkdir(parents=True, exist_ok=True)
    cores = bench._cores()
    run_id, _ = balanced_run_id(opts.rooms, CREATE_RANGES)
    single: dict[str, Any] = {}
    cluster: dict[str, Any] = {}
    for mode in (opts.first, "single" if opts.first == "cluster" else "cluster"):
        if mode == "cluster":
            print("== cluster (3 masters, 3 replicas)", flush=True)
            cluster = run_cluster(opts, out_dir / "run", cores, run_id, out_dir)
        else:
            print("== single Redis (a master and a replica)", flush=True)
            single = run_single(opts, out_dir / "run", cores, run_id, out_dir)
    cmp = compare(single, cluster)
    (out_dir / "summary.json").write_text(json.dumps(
        {"options": {k: str(v) for k, v in vars(opts).items()}, "single": single,
         "cluster": cluster, "compare": cmp}, indent=1) + "\n")
    md = summary_md(opts, single, cluster, cmp)
    (out_dir / "summary.md").write_text(md)
    print(md, flush=True)
    print(f"results: {out_dir}", flush=True)
    return 0 if single["verified"] and cluster["verified"] else 1


if __name__ == "__main__":
    sys.exit(main())
