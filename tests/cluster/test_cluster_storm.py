"""The reconnect storm over rooms spread across all three shards.

The same storm as tests/test_reconnect_storm.py (subscribers that keep
dropping and resuming on random instances while publishers publish), with
one room on each master of a Redis Cluster. Every subscriber must end with
exactly its room's history.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable

import pytest

from ops.local.redis_cluster import LocalCluster
from tests.support import open_client, scaled
from tests.support.http import history_ids
from tests.support.ids import assert_ids_equal
from tests.test_reconnect_storm import SEED, Subscriber, Target

from .conftest import ClusterInstances, room_slot, rooms_on_every_master

pytestmark = [pytest.mark.cluster, pytest.mark.slow, pytest.mark.timeout(scaled(240))]

PER_ROOM = 300  # as long a run per room as the single-Redis storm
SUBSCRIBERS_PER_ROOM = 2


async def test_reconnect_storm_over_three_shards(
    redis_cluster: LocalCluster, cluster_instances: ClusterInstances, uid: Callable[[str], str]
) -> None:
    instances = [cluster_instances.start("SA"), cluster_instances.start("SB")]
    rooms = [rs[0] for rs in rooms_on_every_master(redis_cluster, 1).values()]
    assert len({redis_cluster.owner(room_slot(r)) for r in rooms}) == 3
    targets = {r: Target() for r in rooms}
    subscribers = [
        Subscriber(f"sub{k}-{n}", uid(f"sub{k}-{n}"), r, instances, random.Random(SEED * 100 + 10 * k + n))
        for k, r in enumerate(rooms) for n in range(SUBSCRIBERS_PER_ROOM)
    ]
    tasks = [asyncio.create_task(s.run(targets[s.room]), name=s.name) for s in subscribers]
    publishers = [await open_client(instances[k % 2], uid(f"pub{k}")) for k in range(len(rooms))]
    try:
        confirmed = await asyncio.gather(*(
            pub.publish_many(r, [{"n": n} for n in range(PER_ROOM)], window=1, timeout=90)
            for pub, r in zip(publishers, rooms)))
        for r, frames in zip(rooms, confirmed):
            stored = await history_ids(instances[0], r)
            assert stored == [f["id"] for f in frames]
            targets[r].last_id = stored[-1]
        done, pending = await asyncio.wait(tasks, timeout=scaled(60))
        for t in pending:
            t.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        for t in done:
            t.result()
        assert not pending, f"subscribers not caught up: {[t.get_name() for t in pending]}"
        for s in subscribers:
            assert_ids_equal(s.ids, await history_ids(instances[0], s.room),
                             f"{s.name} ({s.connections} connections, {s.aborts} aborted)")
            assert s.connections >= 5, f"{s.name} reconnected only {s.connections} times"
        assert sum(s.replayed_total for s in subscribers) > 0
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for pub in publishers:
            await pub.close()
