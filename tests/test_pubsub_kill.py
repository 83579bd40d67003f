"""Killing the instances' Pub/Sub connections must not lose, duplicate or reorder anything.

`CLIENT KILL TYPE pubsub` runs on the real Redis again and again while two
publishers stream messages; subscribers on both instances keep their sockets
and must receive exactly the room history.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import pytest
import redis.asyncio as aioredis

from tests.support import Instance, RedisServer, open_client
from tests.support.http import history_ids
from tests.support.ids import assert_ids_equal

PER_PUBLISHER = 300
KILL_EVERY = 15  # confirmed publishes between two kills
BATCH = 10


@pytest.fixture
async def raw_redis(redis_server: RedisServer) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis(host="127.0.0.1", port=redis_server.port)
    yield client
    await client.aclose()


async def test_pubsub_connection_kills_lose_nothing(
    inst_a: Instance, inst_b: Instance, raw_redis: aioredis.Redis, room: str, uid: Callable[[str], str]
) -> None:
    subscribers = [await open_client(inst, uid(f"sub{n}")) for n, inst in enumerate((inst_a, inst_b, inst_a, inst_b))]
    publishers = [await open_client(inst_a, uid("pa")), await open_client(inst_b, uid("pb"))]
    confirmed = 0
    progress = asyncio.Event()
    publishing_done = asyncio.Event()
    kills: list[int] = []

    def on_published(_frame: object) -> None:
        nonlocal confirmed
        confirmed += 1
        progress.set()

    async def killer() -> None:
        next_kill = KILL_EVERY
        while not publishing_done.is_set():
            await progress.wait()
            progress.clear()
            if confirmed >= next_kill:
                kills.append(int(await raw_redis.execute_command("CLIENT", "KILL", "TYPE", "pubsub")))
                next_kill = confirmed + KILL_EVERY

    async def publish(k: int) -> list[str]:
        ids: list[str] = []
        # Small batches keep the stream going for the whole kill sequence.
        for start in range(0, PER_PUBLISHER, BATCH):
            frames = await publishers[k].publish_many(
                room,
                [{"p": k, "n": n} for n in range(start, start + BATCH)],
                [f"p{k}-{n}" for n in range(start, start + BATCH)],
                window=BATCH,
                on_published=on_published,
            )
            ids.extend(f["id"] for f in frames)
        return ids

    try:
        for sub in subscribers:
            await sub.join(room, since="$")
        kill_task = asyncio.create_task(killer())
        try:
            await asyncio.gather(publish(0), publish(1))
        finally:
            publishing_done.set()
            progress.set()
            await kill_task

        expected = await history_ids(inst_a, room)
        assert len(expected) == 2 * PER_PUBLISHER
        assert len(kills) >= 2 * PER_PUBLISHER // KILL_EVERY - 2, f"only {len(kills)} kills"
        assert sum(kills) > 0, "no Pub/Sub connection was ever killed"

        for sub in subscribers:
            await sub.wait_for(
                lambda sub=sub: len(sub.ids[room]) >= len(expected) or sub.closed.is_set(),
                timeout=20,
                message=lambda sub=sub: f"{sub.name} has {len(sub.ids[room])}/{len(expected)}",
            )
            assert not sub.closed.is_set(), f"{sub.name} was closed with {sub.close_code}"
            assert_ids_equal(sub.ids[room], expected, f"ids seen by {sub.name} ({sum(kills)} clients killed)")

        # Pub/Sub is back: a new message still arrives live on both instances.
        after = await publishers[0].publish(room, "after the storm")
        for sub in subscribers:
            await sub.wait_for_id(room, after["id"], timeout=10)
            assert sub.ids[room][-1] == after["id"]
            assert (await sub.ping())["type"] == "pong"
    finally:
        for client in subscribers + publishers:
            await client.close()
