"""A whole shard lost and recreated empty: a resume is never called recovered.

Every node of one shard (master and replica) is killed and replaced by
empty nodes that take over the same slots. The room's stream on that shard
starts again from nothing, with larger ids, so only its epoch tells the
client that what it last saw is gone: the rejoin answers ``recovered:false``
with the new entries. A room on another shard is untouched and resumes as
``recovered:true``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from ops.local.redis_cluster import LocalCluster
from tests.support import async_wait_until, open_client, scaled
from tests.support.client import ServerError, WsClient

from .conftest import ClusterInstances, rooms_on_every_master

pytestmark = [pytest.mark.cluster, pytest.mark.failover, pytest.mark.timeout(scaled(180))]


async def publish_n(pub: WsClient, room: str, n: int, tag: str) -> list[str]:
    frames = await pub.publish_many(room, [f"{tag}{k}" for k in range(n)])
    return [f["id"] for f in frames]


def ids(replay: list[dict[str, Any]]) -> list[str]:
    return [m["id"] for m in replay]


async def test_a_shard_lost_and_recreated_empty_is_never_a_recovered_resume(
    own_redis_cluster: LocalCluster, own_cluster_instances: ClusterInstances,
    uid: Callable[[str], str],
) -> None:
    cluster = own_redis_cluster
    inst = own_cluster_instances.start("LA")
    (lost_master, (room, )), (_, (safe, )), *_ = rooms_on_every_master(cluster, 1).items()
    user = uid("sub")
    async with await open_client(inst, uid("pub")) as pub:
        seen = await publish_n(pub, room, 3, "seen")
        kept = await publish_n(pub, safe, 3, "kept")
        async with await open_client(inst, user) as sub:
            replay, joined = await sub.join(room, since="0")
            assert ids(replay) == seen and joined["recovered"] is True
            epoch = joined["epoch"]
            _, joined_safe = await sub.join(safe, since="0")
            safe_epoch = joined_safe["epoch"]
        await publish_n(pub, room, 2, "lost")

    cluster.replace_shard(lost_master, timeout=scaled(60))

    async with await open_client(inst, uid("pub2")) as pub:
        async def fresh_publish() -> list[str] | None:
            try:  # the instance may still be finding the new owner
                return await publish_n(pub, room, 1, "fresh")
            except ServerError:
                return None
        (fresh,) = await async_wait_until(fresh_publish, 30, interval=0.2,
                                          message="no publish accepted by the new shard")
        async with await open_client(inst, user) as again:
            replay, joined = await again.join(room, since=seen[-1], epoch=epoch)
            assert (joined["recovered"], ids(replay)) == (False, [fresh])
            assert joined["epoch"] != epoch
            replay, joined = await again.join(safe, since=kept[0], epoch=safe_epoch)
            assert (joined["recovered"], ids(replay)) == (True, kept[1:])
