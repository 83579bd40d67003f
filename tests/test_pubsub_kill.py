"""Killing the instances' Pub/Sub connections must not lose, duplicate or reorder anything.

`CLIENT KILL TYPE pubsub` runs on the real Redis again and again while two
publishers stream messages; subscribers on both instances keep their sockets
and must receive exactly the room history.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
import redis.asyncio as aioredis

from tests.support import Instance, RedisServer, async_wait_until, open_client, scaled
from tests.support.http import history_ids
from tests.support.ids import assert_ids_equal

PER_PUBLISHER = 300
KILL_EVERY = 15  # confirmed publishes between two kills, at least
CHECKPOINT = 60  # a publisher goes on past this many messages only after a kill
BATCH = 10


@pytest.fixture
async def raw_redis(redis_server: RedisServer) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis(host="127.0.0.1", port=redis_server.port, decode_responses=True)
    yield client
    await client.aclose()


async def _pubsub_clients(r: aioredis.Redis) -> int:
    listing = await r.execute_command("CLIENT", "LIST", "TYPE", "pubsub")
    if isinstance(listing, bytes):
        listing = listing.decode()
    return len([line for line in str(listing).splitlines() if line.strip()])


async def _at_least(count: Awaitable[int], minimum: int) -> bool:
    return await count >= minimum


async def test_pubsub_connection_kills_lose_nothing(
    inst_a: Instance, inst_b: Instance, raw_redis: aioredis.Redis, room: str, uid: Callable[[str], str]
) -> None:
    subscribers = [await open_client(inst, uid(f"sub{n}")) for n, inst in enumerate((inst_a, inst_b, inst_a, inst_b))]
    publishers = [await open_client(inst_a, uid("pa")), await open_client(inst_b, uid("pb"))]
    confirmed = 0
    waiting = 0
    progress = asyncio.Event()
    publishing_done = asyncio.Event()
    kills: list[int] = []
    killed = asyncio.Condition()

    def on_published(_frame: object) -> None:
        nonlocal confirmed
        confirmed += 1
        progress.set()

    async def killer(baseline: int) -> None:
        """Kill every Pub/Sub connection, wait until all are back, repeat."""
        next_kill = KILL_EVERY
        while not publishing_done.is_set():
            await progress.wait()
            progress.clear()
            if confirmed < next_kill and not waiting:
                continue
            kills.append(int(await raw_redis.execute_command("CLIENT", "KILL", "TYPE", "pubsub")))
            async with killed:
                killed.notify_all()
            next_kill = confirmed + KILL_EVERY
            await async_wait_until(
                lambda: _at_least(_pubsub_clients(raw_redis), baseline),
                timeout=10,
                message="the instances did not resubscribe after CLIENT KILL",
            )

    async def publish(k: int) -> None:
        nonlocal waiting
        for start in range(0, PER_PUBLISHER, BATCH):
            if start and start % CHECKPOINT == 0:
                # Go on only once a kill happened in the last stretch, so every
                # run has many kills however fast publishing is.
                seen = checkpoint_kills[k]
                waiting += 1
                progress.set()
                async with killed:
                    await asyncio.wait_for(killed.wait_for(lambda: len(kills) > seen), scaled(20))
                waiting -= 1
                checkpoint_kills[k] = len(kills)
            await publishers[k].publish_many(
                room,
                [{"p": k, "n": n} for n in range(start, start + BATCH)],
                [f"p{k}-{n}" for n in range(start, start + BATCH)],
                window=BATCH,
                on_published=on_published,
            )

    checkpoint_kills = [0, 0]
    try:
        for sub in subscribers:
            await sub.join(room, since="$")
        baseline = await _pubsub_clients(raw_redis)
        assert baseline >= 2, f"expected the instances' Pub/Sub connections, found {baseline}"
        kill_task = asyncio.create_task(killer(baseline))
        try:
            await asyncio.gather(publish(0), publish(1))
        finally:
            publishing_done.set()
            progress.set()
            await kill_task

        expected = await history_ids(inst_a, room)
        assert len(expected) == 2 * PER_PUBLISHER
        assert len(kills) >= PER_PUBLISHER // CHECKPOINT - 1, f"only {len(kills)} kills"
        # Each kill found every instance subscribed again, A's and B's links included.
        assert min(kills) >= 2, f"clients killed per round: {kills}"

        for sub in subscribers:
            await sub.wait_for(
                lambda sub=sub: len(sub.ids[room]) >= len(expected) or sub.closed.is_set(),
                timeout=20,
                message=lambda sub=sub: f"{sub.name} has {len(sub.ids[room])}/{len(expected)}",
            )
            assert not sub.closed.is_set(), f"{sub.name} was closed with {sub.close_code}"
            assert_ids_equal(sub.ids[room], expected, f"ids seen by {sub.name} after {len(kills)} kills")

        # Pub/Sub is back: a new message still arrives live on both instances.
        after = await publishers[0].publish(room, "after the storm")
        for sub in subscribers:
            await sub.wait_for_id(room, after["id"], timeout=10)
            assert sub.ids[room][-1] == after["id"]
            assert (await sub.ping())["type"] == "pong"
    finally:
        for client in subscribers + publishers:
            await client.close()
