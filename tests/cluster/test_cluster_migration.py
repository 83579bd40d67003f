"""A busy room's slot migrates to another master while it is published to.

The slot is moved live the way ``redis-cli --cluster reshard`` moves it
(IMPORTING/MIGRATING, MIGRATE of its keys, SETSLOT NODE). Meanwhile appends
meet ``TRYAGAIN``/``ASK``/``MOVED`` and are retried at the new owner, and the
old owner ends the room's sharded subscription (``sunsubscribe``): the bus
subscribes at the new owner and the room is caught up from its stream.
Subscribers on both instances must get every id once, in order, without
their socket ever closing; every publish must be confirmed once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from ops.local.probes import stream_entries
from ops.local.redis_cluster import LocalCluster
from tests.failover.traffic import (
    Publisher,
    Subscriber,
    check_account,
    confirmed_count,
    connector,
    shut_down,
    stop_publishers,
    wait_confirmed,
)
from tests.support import scaled
from tests.support.http import history

from .conftest import KEYS, ClusterInstances, room_slot, rooms_on_every_master

pytestmark = [pytest.mark.cluster, pytest.mark.failover, pytest.mark.timeout(scaled(180))]

BEFORE = 150
AFTER = 150


@pytest.mark.parametrize("durability", ["leader", "replica"])
async def test_slot_migration_of_a_busy_room_loses_and_doubles_nothing(
    own_redis_cluster: LocalCluster, own_cluster_instances: ClusterInstances,
    uid: Callable[[str], str], durability: str,
) -> None:
    cluster = own_redis_cluster
    a = own_cluster_instances.start("MA", DURABILITY=durability)
    b = own_cluster_instances.start("MB", DURABILITY=durability)
    source, rooms = next(iter(rooms_on_every_master(cluster, 1).items()))
    room = rooms[0]
    target = next(m for m in cluster.masters() if m != source)
    subs = [Subscriber(f"sub-{inst.name}", connector(inst, uid(f"s{inst.name}")), room)
            for inst in (a, b)]
    pubs = [Publisher(f"pub-{inst.name}{n}", connector(inst, uid(f"p{inst.name}{n}")), room, pace=0.005)
            for inst in (a, b) for n in range(2)]
    stop = asyncio.Event()
    tasks: list[asyncio.Task[None]] = []
    try:
        for s in subs:
            await s.start()
        tasks = [asyncio.create_task(p.run(stop), name=p.name) for p in pubs]
        await wait_confirmed(pubs, tasks, BEFORE)
        await asyncio.to_thread(cluster.migrate_slot, room_slot(room), target)
        assert cluster.owner(room_slot(room)) == target
        await wait_confirmed(pubs, tasks, confirmed_count(pubs) + AFTER)
        await stop_publishers(stop, tasks)

        stored = await history(a, room)
        node = cluster.client(target)
        try:
            raw = stream_entries(node, KEYS.log(room))
        finally:
            node.close()
        assert len(raw) == len(stored), "the stream did not move whole to the new owner"
        for s in subs:
            await s.wait_for(stored[-1]["id"])
        check_account(stored, raw, pubs, subs)
        assert not any(s.closes for s in subs), {s.name: s.closes for s in subs}
        assert not any(p.reconnects for p in pubs), {p.name: p.reconnects for p in pubs}
        # Both instances now listen to the room at its new owner only.
        assert shard_subscribers(cluster, target, room) == 2
        assert shard_subscribers(cluster, source, room) == 0
    finally:
        await shut_down(stop, tasks, pubs, subs)


def shard_subscribers(cluster: LocalCluster, port: int, room: str) -> int:
    node = cluster.client(port)
    try:
        _, count = node.execute_command("PUBSUB", "SHARDNUMSUB", KEYS.channel(room))
    finally:
        node.close()
    return int(count)
