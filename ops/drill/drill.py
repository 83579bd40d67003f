"""The failover drill: traffic through nginx, a fault mid-run, then accounting.

    python -m ops.drill [--fault kill-master|freeze-master|kill-instance|kill-pubsub|all]
                        [--duration S] [--rate R] [--publishers P] [--subscribers S]
                        [--cluster var/cluster | --own [--redis cluster]] [--json out.json]

Against a Redis Cluster (``ops.cluster up --redis cluster``, or ``--own
--redis cluster``) the faults are the cluster's own (kill-shard-master,
freeze-shard-master, migrate-slot; ``all`` runs them in that order) and each
phase publishes to one room per shard: see :mod:`ops.drill.shards`.

Each fault is one phase on a fresh room: subscribers join, publishers start
(:mod:`ops.load.traffic`), the fault is injected after ~30 % of ``--duration``
(:mod:`ops.drill.faults`), traffic runs on until ``--duration`` and at least a
few seconds past the end of the fault, publishers finish their message in
flight, the room's final history is read over HTTP, subscribers get time to
receive its last id, and :mod:`ops.drill.report` compares everything by id.
Then the cluster is restored (killed node started again, sentinels see it)
before the next phase. ``--own`` starts a private cluster (two replicas) in a
temporary state dir and stops it at the end; ``--cluster DIR`` uses a running
one and leaves it whole.

Exit status: 0 when every phase is clean, 1 when anything was lost,
duplicated, reordered, phantom, stuck or split-brained, 2 when the drill
could not run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from ops.drill import report
from ops.local import cluster, procs
from ops.drill.faults import EXTRA_FAULTS, FAULTS, INJECT, ClusterView, DrillError, FaultResult
from ops.drill.report import Findings, Publish, Reception, Stored
from ops.drill.shard_faults import SHARD_FAULTS, ShardView
from ops.load.traffic import Endpoint, Limits, Traffic, read_history

if TYPE_CHECKING:  # ops.drill.shards builds on this module
    from ops.drill.shards import ShardPhaseReport

MIN_AFTER_FAULT_S = 3.0  # traffic keeps running at least this long after a fault ends
SETTLE_S = 20.0  # subscribers get this long to receive the last stored id


@dataclass
class DrillOptions:
    duration: float = 10.0  # seconds of traffic per fault
    rate: float = 50.0  # messages per second, per publisher
    publishers: int = 2
    subscribers: int = 3
    token: str | None = None
    limits: Limits = field(default_factory=Limits)


@dataclass
class PhaseReport:
    fault: str
    room: str
    fault_at_s: float  # since the publishers started
    fault_ended_s: float
    traffic_s: float
    figures: dict[str, object]
    findings: Findings
    problems: list[str]  # everything that makes this phase fail
    retries: dict[str, int]
    resumed_within_s: float | None  # kill-instance: last subscriber back after the kill
    erased: dict[str, list[str]] | None = None  # freeze-master: entries only the old master had
    settled: bool = True

    @property
    def clean(self) -> bool:
        return not self.problems

    def to_json(self) -> dict[str, object]:
        d = asdict(self)
        d["clean"] = self.clean
        return d


def _receptions(traffic: Traffic) -> list[Reception]:
    return [Reception(s.name, s.join_point, list(s.received), s.reconnects, s.not_recovered,
                      s.gave_up) for s in traffic.subs]


def _publishes(traffic: Traffic) -> list[Publish]:
    return [Publish(r.client_id, r.outcome, r.id, r.first_sent, r.confirmed_at, r.duplicate)
            for r in traffic.records]


def _clients_by_instance(traffic: Traffic) -> dict[str, int]:
    where = Counter(p.instances[-1] for p in traffic.pubs if p.instances)
    where.update(s.joins[-1].instance for s in traffic.subs if s.joins)
    return dict(where)


def _resumed_within(traffic: Traffic, t: float) -> float | None:
    """Longest time from ``t`` until a subscriber dropped after ``t`` joined again."""
    worst: float | None = None
    for s in traffic.subs:
        if not any(c.at >= t for c in s.closes):
            continue
        back = [j.at for j in s.joins if j.at >= t]
        if back:
            worst = max(worst or 0.0, back[-1] - t)
    return worst


async def _traffic_through_fault(view: ClusterView, fault: str, traffic: Traffic,
                                 opts: DrillOptions, t0: float) -> FaultResult:
    """Inject ``fault`` once traffic flows, keep traffic running past its end."""
    fault_at = t0 + max(1.0, 0.3 * opts.duration)
    # Inject only once traffic flows (the first confirmations are in).
    while time.monotonic() < fault_at or traffic.confirmed() == 0:
        if time.monotonic() > fault_at + 30:
            raise DrillError("no publish was confirmed within 30 s: the cluster takes no writes")
        await asyncio.sleep(0.05)
    ctx = {"room": traffic.room, "clients": _clients_by_instance(traffic)}
    wall = time.time()
    result: FaultResult = await asyncio.to_thread(INJECT[fault], view, **ctx)
    # Wall-clock time of the fault, to match against the nodes' logs.
    result.figures = {"injected at": time.strftime("%H:%M:%S", time.localtime(wall))
                      + f".{int(wall * 1000) % 1000:03d}", **result.figures}
    left = max(t0 + opts.duration, result.ended + MIN_AFTER_FAULT_S) - time.monotonic()
    if left > 0:
        await asyncio.sleep(left)  # the traffic schedule, not a synchronisation
    return result


async def run_phase(view: ClusterView, fault: str, opts: DrillOptions, *,
                    restore: bool = True) -> PhaseReport:
    """One fault under traffic; restores the cluster afterwards when ``restore``."""
    endpoint = Endpoint(view.url, opts.token)
    room = f"drill-{fault}-{uuid.uuid4().hex[:8]}"
    traffic = Traffic(endpoint, room, opts.publishers, opts.subscribers, opts.rate, opts.limits)
    await traffic.start()
    t0 = time.monotonic()
    try:
        try:
            result = await _traffic_through_fault(view, fault, traffic, opts, t0)
        finally:
            await traffic.stop_publishers()
        t_end = time.monotonic()
        history = await read_history(endpoint, room, user="drill-reader")
        settled = await traffic.settle(history[-1].id if history else None, SETTLE_S)
    finally:
        await traffic.stop_subscribers()
    # freeze-master's restore also finishes its check (the old master's demotion).
    if restore or fault == "freeze-master":
        await asyncio.to_thread(result.restore)

    findings = report.check([Stored(m.id, m.client_id) for m in history],
                                  _publishes(traffic), _receptions(traffic),
                                  fault_at=result.started)
    problems = list(result.problems) + findings.problems()
    if not settled:
        problems.append(f"subscribers did not all receive the last stored id within {SETTLE_S:.0f}s")
    erased = None
    if fault == "freeze-master":
        erased = report.entries_erased(
            result.old_master_ids, [m.id for m in history],
            [r.id for r in traffic.records if r.id], [i for s in traffic.subs for i in s.received])
        if erased["confirmed"] or erased["delivered"]:
            problems.append(f"the old master's own entries reached clients: {erased['confirmed'][:3]} "
                            f"confirmed, {erased['delivered'][:3]} delivered")
    retries: Counter[str] = Counter()
    for r in traffic.records:
        retries.update(r.retries)
    return PhaseReport(
        fault=fault, room=room, fault_at_s=round(result.started - t0, 2),
        fault_ended_s=round(result.ended - t0, 2), traffic_s=round(t_end - t0, 2),
        figures=result.figures, findings=findings, problems=problems, retries=dict(retries),
        resumed_within_s=(round(v, 2) if (v := _resumed_within(traffic, result.started))
                          is not None else None),
        erased=erased, settled=settled,
    )


R = TypeVar("R")  # a phase report, of either drill


async def run_drill(view: ClusterView, faults: Sequence[str], opts: DrillOptions, *,
                    restore_last: bool = True) -> list[PhaseReport]:
    """Every fault in turn on one cluster, waiting until it is whole before each."""
    if view.replicas < 2 and any(f in ("kill-master", "freeze-master", "failover-live")
                                 for f in faults):
        raise DrillError(
            f"the cluster has {view.replicas} replica: after a failover its new master has "
            "none left and (min-replicas-to-write 1) refuses every write. Start it with "
            "`python -m ops.cluster up --replicas 2`, or use --own.")
    return await run_phases(view, faults, opts, run_phase, restore_last)


async def run_phases(view: Any, faults: Sequence[str], opts: DrillOptions,
                     run_one: Callable[..., Awaitable[R]], restore_last: bool) -> list[R]:
    """Each fault in turn, once the cluster is whole; every phase but the last
    (unless ``restore_last``) leaves it whole again. Sentinel and Redis Cluster alike."""
    await asyncio.to_thread(view.wait_ready, 60.0)
    reports = []
    for i, fault in enumerate(faults):
        last = i == len(faults) - 1
        reports.append(await run_one(view, fault, opts, restore=restore_last or not last))
    return reports


# --- the printed report -----------------------------------------------------------------


def _s(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f} s"


def format_phase(p: PhaseReport, opts: DrillOptions) -> list[str]:
    f = p.findings
    lines = [f"== {p.fault}  (room {p.room}; fault at +{p.fault_at_s:.1f} s, ended "
             f"+{p.fault_ended_s:.1f} s, traffic {p.traffic_s:.1f} s)"]
    for k, v in p.figures.items():
        lines.append(f"  {k:<34} {v}")
    if p.resumed_within_s is not None:
        lines.append(f"  {'dropped subscribers back within':<34} {_s(p.resumed_within_s)}")
    if p.erased is not None:
        lines.append(f"  {'entries only the old master had':<34} {len(p.erased['erased'])} "
                     f"(confirmed {len(p.erased['confirmed'])}, delivered "
                     f"{len(p.erased['delivered'])})")
    retries = ", ".join(f"{k} {v}" for k, v in sorted(p.retries.items())) or "none"
    lines += [
        f"  {'publishes attempted / confirmed':<34} {f.attempted} / {f.confirmed}"
        f"   (never confirmed {len(f.unconfirmed)}; retries: {retries}; "
        f"answered duplicate:true {f.retried_duplicates})",
        f"  {'confirmed after the fault':<34} {f.confirmed_after_fault}",
        f"  {'longest gap between confirmations':<34} {_s(f.longest_gap_s)}",
        f"  {'slowest publish (first send->ok)':<34} {_s(f.max_latency_s)}"
        f"   (p50 {f.p50_latency_s * 1000:.1f} ms, p99 {f.p99_latency_s * 1000:.1f} ms)",
        f"  {'final history':<34} {f.history} messages"
        + (f", {len(f.history_disorder)} OUT OF ORDER" if f.history_disorder else ", in id order"),
        f"  {'confirmed-but-lost':<34} {len(f.confirmed_lost)}",
        f"  {'duplicates (client_id stored >1)':<34} {len(f.duplicates)}",
        f"  {'subscriber':<16}{'received':>9}{'expected':>9}{'gaps':>6}{'dups':>6}"
        f"{'disorder':>9}{'phantoms':>9}{'reconnects':>11}{'not-recovered':>14}",
    ]
    for s in f.subscribers:
        lines.append(f"  {s.name:<16}{s.received:>9}{s.expected:>9}{len(s.gaps):>6}"
                     f"{len(s.duplicates):>6}{len(s.disorder):>9}{len(s.phantoms):>9}"
                     f"{s.reconnects:>11}{s.not_recovered:>14}")
    if p.clean:
        lines.append("  verdict: CLEAN")
    else:
        lines.append("  verdict: FAILED")
        lines += [f"    - {x}" for x in p.problems]
    return lines


def format_report(reports: Sequence[PhaseReport | ShardPhaseReport], opts: DrillOptions,
                  where: str) -> str:
    from ops.drill import shards

    per_room = " per room, one room per shard," if reports and isinstance(
        reports[0], shards.ShardPhaseReport) else ","
    head = (f"streamgate failover drill: {len(reports)} fault(s),{per_room} {opts.publishers} "
            f"publishers x {opts.rate:g} msg/s, {opts.subscribers} subscribers, {opts.duration:g} s "
            f"of traffic per fault\ncluster: {where}\n")
    body = "\n\n".join("\n".join(
        shards.format_shard_phase(p) if isinstance(p, shards.ShardPhaseReport)
        else format_phase(p, opts)) for p in reports)
    failed = [p.fault for p in reports if not p.clean]
    tail = ("RESULT: CLEAN (no loss, duplicate, disorder or phantom)" if not failed
            else f"RESULT: FAILED in {', '.join(failed)}")
    return f"{head}\n{body}\n\n{tail}\n"


# --- command line -------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m ops.drill", description=__doc__.split("\n\n")[0])
    ap.add_argument("--fault", choices=[*FAULTS, "all", *EXTRA_FAULTS, *SHARD_FAULTS],
                    default="all",
                    help="which fault (default all: " + ", ".join(FAULTS) + ", in that order; "
                    "failover-live is not part of all; against a Redis Cluster: "
                    + ", ".join(SHARD_FAULTS) + ")")
    ap.add_argument("--duration", type=float, default=10.0, help="seconds of traffic per fault")
    ap.add_argument("--rate", type=float, default=50.0, help="messages/s per publisher")
    ap.add_argument("--publishers", type=int, default=2)
    ap.add_argument("--subscribers", type=int, default=3)
    where = ap.add_mutually_exclusive_group()
    where.add_argument("--cluster", type=Path, default=None,
                       help="state dir of a running `python -m ops.cluster` (default var/cluster)")
    where.add_argument("--own", action="store_true",
                       help="start a private cluster (2 replicas) for the drill, stop it after")
    ap.add_argument("--instances", type=int, default=3, help="app instances with --own")
    ap.add_argument("--redis", choices=("sentinel", "cluster"), default="sentinel",
                    help="with --own: Sentinel (default) or a Redis Cluster of three shards")
    ap.add_argument("--keep-logs", action="store_true",
                    help="with --own: keep the cluster's state dir (every node's log) afterwards")
    ap.add_argument("--token", default=os.environ.get("STREAMGATE_DRILL_TOKEN"),
                    help="JWT for AUTH_MODE=jwt clusters (default $STREAMGATE_DRILL_TOKEN)")
    ap.add_argument("--json", type=Path, default=None, help="also write the report as JSON")
    args = ap.parse_args(argv)
    if args.duration < 3 or args.rate <= 0 or args.publishers < 1 or args.subscribers < 0:
        ap.error("need --duration >= 3, --rate > 0, --publishers >= 1, --subscribers >= 0")
    return args


def start_own_cluster(state_dir: Path, instances: int = 3, redis: str = "sentinel") -> ClusterView:
    """A private cluster for the drill: free ports, two replicas (Sentinel) or
    three shards with a replica each (``redis="cluster"``), AUTH_MODE=none."""
    # The instances take AUTH_MODE from this environment (and record it, so a
    # restarted one gets the same); the caller's own setting is put back.
    saved = os.environ.get("AUTH_MODE")
    os.environ["AUTH_MODE"] = "none"
    try:
        topology = ["--replicas", "2"] if redis == "sentinel" else ["--redis", "cluster"]
        rc = cluster.main(["--state-dir", str(state_dir), "up", "--port", "0", *topology,
                           "--instances", str(instances)])
    finally:
        if saved is None:
            os.environ.pop("AUTH_MODE", None)
        else:
            os.environ["AUTH_MODE"] = saved
    if rc != 0:
        raise DrillError(f"could not start a cluster in {state_dir}")
    return ClusterView(state_dir)


def stop_own_cluster(state_dir: Path) -> list[procs.Proc]:
    return procs.stop_all(cluster.recorded(cluster.load_state(state_dir)))


def _run(state_dir: Path, fault: str, opts: DrillOptions,
         restore_last: bool) -> list[PhaseReport] | list[ShardPhaseReport]:
    """The drill for the topology recorded in ``state_dir``."""
    from ops.drill import shards

    view = ClusterView(state_dir)
    sharded = view.state().get("redis") == "cluster"
    allowed = SHARD_FAULTS if sharded else (*FAULTS, *EXTRA_FAULTS)
    if fault != "all" and fault not in allowed:
        raise DrillError(f"{fault} is not a fault for this deployment; choose from "
                         + ", ".join(allowed))
    if sharded:
        faults = list(SHARD_FAULTS) if fault == "all" else [fault]
        return asyncio.run(shards.run_shard_drill(ShardView(state_dir), faults, opts,
                                                        restore_last=restore_last))
    faults = list(FAULTS) if fault == "all" else [fault]
    return asyncio.run(run_drill(view, faults, opts, restore_last=restore_last))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    opts = DrillOptions(args.duration, args.rate, args.publishers, args.subscribers, args.token)
    own_dir = Path(tempfile.mkdtemp(prefix="streamgate-drill-")) if args.own else None
    try:
        if own_dir is not None:
            view = start_own_cluster(own_dir, args.instances, args.redis)
            where = f"own, {own_dir} ({view.url})"
        else:
            view = ClusterView(args.cluster or Path("var") / "cluster")
            where = f"{view.state_dir} ({view.url})"
        reports = _run(view.state_dir, args.fault, opts, restore_last=own_dir is None)
    except (DrillError, TimeoutError, procs.ProcessExited) as exc:
        print(f"drill could not run: {exc}", file=sys.stderr)
        return 2
    finally:
        if own_dir is not None:
            left = stop_own_cluster(own_dir)
            if left:
                print(f"could not stop: {[p.name for p in left]}; logs in {own_dir}", file=sys.stderr)
            elif args.keep_logs:
                print(f"logs kept in {own_dir}", file=sys.stderr)
            else:
                shutil.rmtree(own_dir, ignore_errors=True)
    print(format_report(reports, opts, where))
    if args.json:
        args.json.write_text(json.dumps({"options": asdict(opts) | {"token": None},
                                         "faults": [p.to_json() for p in reports],
                                         "clean": all(p.clean for p in reports)},
                                        indent=2, default=str) + "\n")
    return 0 if all(p.clean for p in reports) else 1


if __name__ == "__main__":
    sys.exit(main())
