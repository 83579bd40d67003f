"""Rooms spread over a 3-shard Redis Cluster deliver exactly as on one Redis.

Two instances in cluster mode. Rooms are picked so that each master owns
two of them; one instance publishes, the other delivers, and every id is
accounted for against each room's history: no loss, no duplicate, no
disorder. A client resumes with ``since`` on the other instance. Presence
spreads over the shards, and ``/readyz`` reports every shard.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from app.service import PRESENCE_BUCKETS
from ops.local.redis_cluster import LocalCluster, key_slot
from streams.keys import Keys
from tests.conftest import BASE_ENV
from tests.support import open_client, scaled
from tests.support.http import history_ids, presence
from tests.support.ids import assert_ids_equal
from tests.support.programs import require

from .conftest import KEYS, ClusterInstances, room_slot, rooms_on_every_master

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(scaled(180))]

PER_ROOM = 60
KEYS_BUCKETED = Keys(BASE_ENV["KEY_PREFIX"], presence_buckets=PRESENCE_BUCKETS)


async def test_rooms_on_three_shards_deliver_every_id_once_in_order(
    redis_cluster: LocalCluster, cluster_instances: ClusterInstances, uid: Callable[[str], str]
) -> None:
    a = cluster_instances.start("CA")
    b = cluster_instances.start("CB")
    by_master = rooms_on_every_master(redis_cluster, 2)
    rooms = [r for rs in by_master.values() for r in rs]
    assert len({redis_cluster.owner(room_slot(r)) for r in rooms}) == 3

    writers = [await open_client(a, uid(f"writer{n}")) for n in range(len(rooms))]
    async with await open_client(b, uid("reader")) as reader:
        for r in rooms:
            await reader.join(r, since="$")
        try:  # one writer per room, all rooms at once
            confirmed = await asyncio.gather(*(
                w.publish_many(r, [{"n": n} for n in range(PER_ROOM)], window=8, timeout=60)
                for w, r in zip(writers, rooms)))
        finally:
            for w in writers:
                await w.close()
        for r, frames in zip(rooms, confirmed):
            await reader.wait_for_id(r, frames[-1]["id"], timeout=30)
        for r, frames in zip(rooms, confirmed):
            stored = await history_ids(a, r)
            assert stored == [f["id"] for f in frames]
            assert_ids_equal(reader.ids[r], stored, f"reader of {r}")

        # Sharded Pub/Sub: the room's channel is subscribed on its owner only.
        for r in rooms:
            owner = redis_cluster.owner(room_slot(r))
            for port in redis_cluster.masters():
                node = redis_cluster.client(port)
                try:
                    _, count = node.execute_command("PUBSUB", "SHARDNUMSUB", KEYS.channel(r))
                finally:
                    node.close()
                assert (count >= 1) == (port == owner), (r, port, owner, count)

        # Resume on the other instance from the middle of each room.
        async with await open_client(a, uid("resumer")) as resumer:
            for r, frames in zip(rooms, confirmed):
                middle = frames[PER_ROOM // 2 - 1]["id"]
                replay, joined = await resumer.join(r, since=middle)
                assert joined["recovered"] is True
                assert [m["id"] for m in replay] == [f["id"] for f in frames[PER_ROOM // 2:]]

        async with httpx.AsyncClient(base_url=b.url) as http:
            ready = (await http.get("/readyz")).json()
        assert ready["status"] == "ready"
        shards = ready["shards"]
        assert len(shards) == 3 and all(s["healthy"] for s in shards.values()), shards
        assert sorted(s["rooms"] for s in shards.values()) == [2, 2, 2], shards


async def test_presence_spreads_over_the_shards(
    redis_cluster: LocalCluster, cluster_instances: ClusterInstances, uid: Callable[[str], str]
) -> None:
    a = cluster_instances.start("PA")
    b = cluster_instances.start("PB")
    users = [uid(f"u{n}") for n in range(24)]
    clients = [await open_client(a if n % 2 else b, u) for n, u in enumerate(users)]
    try:
        seen = await presence(a)
        assert set(users) <= seen
        buckets = {redis_cluster.owner(key_slot(KEYS_BUCKETED.presence(u))) for u in users}
        assert len(buckets) == 3, "the online set sits on fewer than three masters"
    finally:
        for c in clients:
            await c.close()



async def test_a_password_protected_cluster_with_the_same_credentials_settings(
    tmp_path: Path, uid: Callable[[str], str]
) -> None:
    """REDIS_PASSWORD reaches every node: commands, WAIT and the shard links."""
    require("redis-server", "redis-cli")
    cluster = LocalCluster(tmp_path / "c", password="s3cret-cluster").start(timeout=scaled(60))
    factory = ClusterInstances(cluster, tmp_path / "instances")
    try:
        inst = factory.start("PW", REDIS_PASSWORD="s3cret-cluster", DURABILITY="replica")
        room = next(iter(rooms_on_every_master(cluster, 1).values()))[0]
        async with await open_client(inst, uid("pw")) as c:
            await c.join(room, since="$")
            published = await c.publish(room, {"n": 1})
            await c.wait_for_id(room, published["id"])
    finally:
        factory.stop_all()
        cluster.stop()
