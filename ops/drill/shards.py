"""The failover drill against a Redis Cluster: one room per shard, one fault.

Each phase publishes to three fresh rooms at once, one owned by each master
(by hash slot). The fault (:mod:`ops.drill.shard_faults`) hits the shard of
the *target* room; the two others are the control: a fault on one shard
must not stall rooms on another. Afterwards every room is accounted by id
with :mod:`ops.drill.report` (confirmed/attempted, lost, duplicates, gaps,
phantoms) and gets its longest stall (the longest pause between two
confirmations); the fault adds its own figures (time to a new master, how
long the migration took).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

from ops.drill import report
from ops.drill.drill import (
    MIN_AFTER_FAULT_S,
    SETTLE_S,
    DrillOptions,
    _publishes,
    _receptions,
    _s,
    run_phases,
)
from ops.drill.faults import DrillError, FaultResult
from ops.drill.report import Findings, Stored
from ops.drill.shard_faults import SHARD_INJECT, ShardView, room_slot
from ops.load.traffic import Endpoint, Traffic, read_history

# A room on a shard the fault did not touch: a pause between two of its
# confirmations longer than this is a stall, and fails the phase.
OTHER_SHARD_MAX_STALL_S = 2.0
RESUME_WAIT_S = 30.0  # how long the hit room may take to take writes again after the fault


@dataclass
class RoomReport:
    room: str
    shard: str  # the master that owned the room when the phase began
    target: bool  # the fault hit this room's shard
    findings: Findings
    problems: list[str] = field(default_factory=list)


@dataclass
class ShardPhaseReport:
    fault: str
    fault_at_s: float
    fault_ended_s: float
    traffic_s: float
    figures: dict[str, object]
    rooms: list[RoomReport]
    problems: list[str]
    erased: dict[str, list[str]] | None = None

    @property
    def clean(self) -> bool:
        return not self.problems and all(not r.problems for r in self.rooms)

    def to_json(self) -> dict[str, object]:
        d = asdict(self)
        d["clean"] = self.clean
        return d


def rooms_per_shard(view: ShardView, fault: str) -> list[tuple[str, str]]:
    """A fresh room on each master, as (room, master name); the first is the target."""
    nodes = view.nodes()
    masters = sorted(nodes.masters())
    if len(masters) < 2:
        raise DrillError(f"the cluster has {len(masters)} master(s) serving slots")
    owners: dict[int, int] = {}  # slot -> master, asked once per slot
    rooms: dict[int, str] = {}
    for _ in range(10_000):
        room = f"drill-{fault}-{uuid.uuid4().hex[:8]}"
        slot = room_slot(room)
        owner = owners.get(slot) or nodes.owner(slot)
        owners[slot] = owner
        rooms.setdefault(owner, room)
        if len(rooms) == len(masters):
            return [(rooms[m], view.name(m)) for m in masters]
    raise DrillError("could not find a room on every master")


async def _inject(view: ShardView, fault: str, target: Traffic, all_traffic: list[Traffic],
                  opts: DrillOptions, t0: float) -> FaultResult:
    fault_at = t0 + max(1.0, 0.3 * opts.duration)
    while time.monotonic() < fault_at or any(t.confirmed() == 0 for t in all_traffic):
        if time.monotonic() > fault_at + 30:
            raise DrillError("a room had no publish confirmed within 30 s")
        await asyncio.sleep(0.05)
    wall = time.time()
    result: FaultResult = await asyncio.to_thread(SHARD_INJECT[fault], view, room=target.room)
    result.figures = {"injected at": time.strftime("%H:%M:%S", time.localtime(wall))
                      + f".{int(wall * 1000) % 1000:03d}", **result.figures}
    # The hit shard writes again only once its new master has a replica
    # (MIN_REPLICAS=1): after a freeze, that is the old master, woken as a
    # replica and synced. Traffic runs until the target room has had a
    # publish confirmed again (or RESUME_WAIT_S passed), so the report
    # tells a slow return from none.
    confirmed = target.confirmed()
    resume_by = time.monotonic() + RESUME_WAIT_S
    while target.confirmed() <= confirmed and time.monotonic() < resume_by:
        await asyncio.sleep(0.05)
    left = max(t0 + opts.duration, result.ended + MIN_AFTER_FAULT_S) - time.monotonic()
    if left > 0:
        await asyncio.sleep(left)  # the traffic schedule, not a synchronisation
    return result


def _account(traffic: Traffic, history: list[Stored], shard: str, target: bool,
             fault_at: float, settled: bool) -> RoomReport:
    findings = report.check(history, _publishes(traffic), _receptions(traffic),
                                  fault_at=fault_at)
    problems = findings.problems()
    if not settled:
        problems.append(f"subscribers did not all receive the last stored id within {SETTLE_S:.0f}s")
    if not target and findings.longest_gap_s > OTHER_SHARD_MAX_STALL_S:
        problems.append(f"a room on an untouched shard stalled {findings.longest_gap_s:.2f}s")
    return RoomReport(traffic.room, shard, target, findings, problems)


async def run_shard_phase(view: ShardView, fault: str, opts: DrillOptions, *,
                          restore: bool = True) -> ShardPhaseReport:
    """One fault under traffic on every shard; restores the cluster after."""
    endpoint = Endpoint(view.url, opts.token)
    placed = await asyncio.to_thread(rooms_per_shard, view, fault)
    traffic = [Traffic(endpoint, room, opts.publishers, opts.subscribers, opts.rate, opts.limits)
               for room, _shard in placed]
    for t in traffic:
        await t.start()
    t0 = time.monotonic()
    histories: list[list[Stored]] = []
    settled: list[bool] = []
    try:
        try:
            result = await _inject(view, fault, traffic[0], traffic, opts, t0)
        finally:
            await asyncio.gather(*(t.stop_publishers() for t in traffic))
        t_end = time.monotonic()
        for t in traffic:
            stored = await read_history(endpoint, t.room, user="drill-reader")
            histories.append([Stored(m.id, m.client_id) for m in stored])
            settled.append(await t.settle(stored[-1].id if stored else None, SETTLE_S))
    finally:
        await asyncio.gather(*(t.stop_subscribers() for t in traffic))
    if restore or fault == "freeze-shard-master":
        await asyncio.to_thread(result.restore)

    rooms = [_account(t, h, shard, i == 0, result.started, ok)
             for i, (t, h, (_room, shard), ok) in enumerate(zip(traffic, histories, placed, settled))]
    problems = list(result.problems)
    erased = None
    if fault == "freeze-shard-master":
        target = traffic[0]
        erased = report.entries_erased(
            result.old_master_ids, [h.id for h in histories[0]],
            [r.id for r in target.records if r.id], [i for s in target.subs for i in s.received])
        if erased["confirmed"] or erased["delivered"]:
            problems.append(f"the old master's own entries reached clients: {erased['confirmed'][:3]} "
                            f"confirmed, {erased['delivered'][:3]} delivered")
    return ShardPhaseReport(
        fault=fault, fault_at_s=round(result.started - t0, 2),
        fault_ended_s=round(result.ended - t0, 2), traffic_s=round(t_end - t0, 2),
        figures=result.figures, rooms=rooms, problems=problems, erased=erased)


async def run_shard_drill(view: ShardView, faults: Sequence[str], opts: DrillOptions, *,
                          restore_last: bool = True) -> list[ShardPhaseReport]:
    return await run_phases(view, faults, opts, run_shard_phase, restore_last)


def format_shard_phase(p: ShardPhaseReport) -> list[str]:
    lines = [f"== {p.fault}  (fault at +{p.fault_at_s:.1f} s, ended +{p.fault_ended_s:.1f} s, "
             f"traffic {p.traffic_s:.1f} s)"]
    for k, v in p.figures.items():
        lines.append(f"  {k:<38} {v}")
    if p.erased is not None:
        lines.append(f"  {'entries only the old master had':<38} {len(p.erased['erased'])} "
                     f"(confirmed {len(p.erased['confirmed'])}, delivered "
                     f"{len(p.erased['delivered'])})")
    lines.append(f"  {'room':<36}{'shard':<9}{'hit':<5}{'confirmed/attempted':>20}{'lost':>6}"
                 f"{'dups':>6}{'gaps':>6}{'phantoms':>9}{'reconnects':>11}{'longest stall':>15}")
    for r in p.rooms:
        f = r.findings
        gaps = sum(len(s.gaps) for s in f.subscribers)
        phantoms = sum(len(s.phantoms) for s in f.subscribers)
        dups = len(f.duplicates) + sum(len(s.duplicates) for s in f.subscribers)
        reconnects = sum(s.reconnects for s in f.subscribers)
        lines.append(f"  {r.room:<36}{r.shard:<9}{'yes' if r.target else 'no':<5}"
                     f"{f'{f.confirmed}/{f.attempted}':>20}{len(f.confirmed_lost):>6}{dups:>6}"
                     f"{gaps:>6}{phantoms:>9}{reconnects:>11}{_s(f.longest_gap_s):>15}")
    problems = p.problems + [f"{r.room}: {x}" for r in p.rooms for x in r.problems]
    lines.append("  verdict: CLEAN" if not problems else "  verdict: FAILED")
    lines += [f"    - {x}" for x in problems]
    return lines
