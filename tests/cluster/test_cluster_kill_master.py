"""SIGKILL of one shard's master while rooms on all three shards publish.

DURABILITY=replica: a ``published`` answer promises the message survives a
failover, per shard: the append and its WAIT run on the room's master.
One room per master; publishers on both instances repeat a message with
the same client_id after ``unavailable``; subscribers keep their sockets.
The killed master's replica is promoted (cluster-node-timeout), and the old
node comes back as its replica so that WAIT can be answered again.

Afterwards, per room: every confirmed id is in the history on the room's
current master, no client_id is stored twice, no subscriber got an id the
history lacks (no phantom), and every subscriber got the whole history in
order without reconnecting. The rooms of the two other shards never stall:
their longest pause between two confirmations stays short.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import pytest

from ops.drill.report import longest_gap
from ops.local.probes import stream_entries
from ops.local.redis_cluster import LocalCluster
from tests.failover.traffic import (
    Publisher,
    Subscriber,
    check_account,
    connector,
    fail_fast,
    shut_down,
    stop_publishers,
)
from tests.support import Instance, scaled
from tests.support.http import history
from tests.support.waiting import async_wait_until

from .conftest import KEYS, ClusterInstances, room_slot, rooms_on_every_master

pytestmark = [pytest.mark.cluster, pytest.mark.failover, pytest.mark.timeout(scaled(240))]

BEFORE = 40  # confirmations per room before the kill
AFTER = 40  # confirmations in the killed shard's room after the failover
# Rooms on the shards that did not fail: a pause longer than this is a stall.
OTHER_SHARDS_MAX_GAP_S = 2.0


def confirmed(pubs: list[Publisher]) -> int:
    return sum(len(p.confirmed) for p in pubs)


async def wait_each(groups: list[list[Publisher]], tasks: list[asyncio.Task[None]],
                    counts: list[int], timeout: float = 60.0) -> None:
    await async_wait_until(
        lambda: all(confirmed(g) >= c for g, c in zip(groups, counts)) or fail_fast(tasks), timeout,
        message=lambda: f"confirmed {[confirmed(g) for g in groups]} of {counts}")


async def watch_readiness(instances: list[Instance], seen: list[tuple[int, list[str]]],
                          done: asyncio.Event) -> None:
    """Poll every instance's /readyz (status, degraded shards) until ``done``."""
    clients = [inst.http() for inst in instances]
    try:
        for _ in range(int(scaled(120) / 0.1)):
            if done.is_set():
                return
            for http in clients:
                response = await http.get("/readyz")
                seen.append((response.status_code, response.json().get("degraded", [])))
            await asyncio.sleep(0.1)
    finally:
        for http in clients:
            await http.aclose()


async def test_kill_shard_master_loses_nothing_and_other_shards_flow(
    own_redis_cluster: LocalCluster, own_cluster_instances: ClusterInstances,
    uid: Callable[[str], str],
) -> None:
    cluster = own_redis_cluster
    env = {"DURABILITY": "replica", "MIN_REPLICAS": "1", "REPLICA_ACK_TIMEOUT_MS": "500"}
    a = own_cluster_instances.start("KA", **env)
    b = own_cluster_instances.start("KB", **env)
    by_master = {m: rs[0] for m, rs in rooms_on_every_master(cluster, 1).items()}
    victim = next(iter(by_master))
    rooms = list(by_master.values())
    subs = {r: [Subscriber(f"sub-{inst.name}-{r[-4:]}", connector(inst, uid(f"s{inst.name}")), r)
                for inst in (a, b)] for r in rooms}
    pubs = {r: [Publisher(f"pub-{inst.name}-{r[-4:]}", connector(inst, uid(f"p{inst.name}")), r)
                for inst in (a, b)] for r in rooms}
    everyone = [s for ss in subs.values() for s in ss]
    publishers = [p for ps in pubs.values() for p in ps]
    stop = asyncio.Event()
    tasks: list[asyncio.Task[None]] = []
    try:
        for s in everyone:
            await s.start()
        tasks = [asyncio.create_task(p.run(stop), name=p.name) for p in publishers]
        await wait_each(list(pubs.values()), tasks, [BEFORE] * len(rooms))

        readiness: list[tuple[int, list[str]]] = []
        watching = asyncio.Event()
        watcher = asyncio.create_task(watch_readiness([a, b], readiness, watching))
        killed_at = time.monotonic()
        cluster.kill(victim)
        promoted = await asyncio.to_thread(cluster.wait_promoted, victim, scaled(30))
        promoted_after = time.monotonic() - killed_at
        await asyncio.to_thread(cluster.restart, victim)
        await asyncio.to_thread(cluster.wait_healthy, scaled(60))
        watching.set()
        await watcher
        # One shard down is the same for every instance: none leaves service
        # for it, and each says which shard it misses.
        assert readiness and {code for code, _ in readiness} == {200}, readiness
        assert any(f"127.0.0.1:{victim}" in degraded for _, degraded in readiness), readiness[:20]
        hit = by_master[victim]
        counts = [confirmed(pubs[r]) + (AFTER if r == hit else 0) for r in rooms]
        await wait_each(list(pubs.values()), tasks, counts)
        await stop_publishers(stop, tasks)

        report = []
        for r in rooms:
            stored = await history(a, r)
            owner = cluster.owner(room_slot(r))
            node = cluster.client(owner)
            try:
                raw = stream_entries(node, KEYS.log(r))
            finally:
                node.close()
            for s in subs[r]:
                await s.wait_for(stored[-1]["id"])
            check_account(stored, raw, pubs[r], subs[r])
            assert not any(s.closes for s in subs[r]), {s.name: s.closes for s in subs[r]}
            times = [m.confirmed_at for p in pubs[r] for m in p.sent if m.confirmed_at is not None]
            gap = longest_gap(times)[0]
            report.append((r == hit, len(stored), gap))
            if r != hit:
                assert gap < OTHER_SHARDS_MAX_GAP_S, f"room {r} on a healthy shard stalled {gap:.2f}s"
        print(f"promotion of {promoted} after {promoted_after:.1f}s; per room "
              f"(killed shard?, messages, longest gap s): {report}")
    finally:
        await shut_down(stop, tasks, publishers, everyone)
