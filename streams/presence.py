"""Who is online and who is in which room, surviving instance crashes.

Each entry is a sorted-set member ``user|instance`` scored with its expiry
time. An instance adds entries when users connect or join, removes them when
the last local session of that user goes, and re-scores all of its own
entries on a heartbeat. A crashed instance stops refreshing, so its users
drop out within ``ttl_s`` without anyone cleaning up after it; readers ignore
expired scores and prune them.

The online set may be split in buckets by user (``Keys.presence_buckets``,
in a Redis Cluster, so that it spreads over the shards): a user's entries
are always in the bucket ``Keys.presence(user)``; listing reads them all.

The heartbeat is spread over its interval: each tick re-scores one part of
the rooms and users (by a stable hash of the name, so each is re-scored once
per interval), in pipelines of at most ``CHUNK_MEMBERS`` members. In one
burst, 40,000 memberships cost Redis about a second and this process the
time to build and parse it, and every append and notification waited behind
it (p99 spikes of 420-550 ms, docs/benchmarks.md).
"""

from __future__ import annotations

import time
import zlib
from collections.abc import Iterable

from redis.asyncio import Redis

from .keys import Keys, presence_member, user_of_member
from .retry import RetryPolicy

# Members re-scored per pipeline: one round trip stays a few milliseconds of
# Redis and of this process, whatever the instance holds.
CHUNK_MEMBERS = 1000


def part_of(name: str, parts: int) -> int:
    """Which of ``parts`` heartbeat ticks re-scores ``name`` (stable across
    ticks and processes)."""
    return zlib.crc32(name.encode()) % parts if parts > 1 else 0


class Presence:
    def __init__(self, redis: Redis, keys: Keys, instance: str, ttl_s: float, policy: RetryPolicy) -> None:
        self._redis = redis
        self._keys = keys
        self._instance = instance
        self._ttl = ttl_s
        self._policy = policy

    def _expiry(self) -> float:
        return time.time() + self._ttl

    async def online(self, user: str) -> None:
        await self._add(self._keys.presence(user), [user])

    async def offline(self, user: str) -> None:
        await self._remove(self._keys.presence(user), user)

    async def joined(self, room: str, user: str) -> None:
        await self._add(self._keys.members(room), [user])

    async def left(self, room: str, user: str) -> None:
        await self._remove(self._keys.members(room), user)

    async def forget(self, user: str, rooms: Iterable[str], offline: bool) -> None:
        """Drop ``user``'s entries of this instance from ``rooms`` (and from
        the online set when ``offline``) in one round trip."""
        member = presence_member(user, self._instance)
        keys = [self._keys.members(room) for room in rooms]
        if offline:
            keys.append(self._keys.presence(user))
        if not keys:
            return

        async def call() -> None:
            async with self._redis.pipeline(transaction=False) as pipe:
                for key in keys:
                    pipe.zrem(key, member)
                await pipe.execute()

        await self._policy.run(call)

    async def refresh(self, users: Iterable[str], rooms: dict[str, Iterable[str]]) -> None:
        """Re-score the entries this instance owns for ``users`` (the online
        set) and ``rooms`` (their members here): a heartbeat tick's part."""
        expiry = self._expiry()
        inst = self._instance
        keep = int(self._ttl * 2) + 1
        # (key, members) in chunks of at most CHUNK_MEMBERS members.
        work: list[tuple[str, list[str]]] = []
        online: dict[str, list[str]] = {}  # bucket key -> members (one key unless sharded)
        for u in users:
            online.setdefault(self._keys.presence(u), []).append(presence_member(u, inst))
        for key, m in online.items():
            for i in range(0, len(m), CHUNK_MEMBERS):
                work.append((key, m[i:i + CHUNK_MEMBERS]))
        for room, members in rooms.items():
            m = [presence_member(u, inst) for u in members]
            for i in range(0, len(m), CHUNK_MEMBERS):
                work.append((self._keys.members(room), m[i:i + CHUNK_MEMBERS]))
        batch: list[tuple[str, list[str]]] = []
        n = 0
        for key, members in work:
            if batch and n + len(members) > CHUNK_MEMBERS:
                await self._policy.run(lambda b=batch: self._rescore(b, expiry, keep))
                batch, n = [], 0
            batch.append((key, members))
            n += len(members)
        if batch:
            await self._policy.run(lambda b=batch: self._rescore(b, expiry, keep))

    async def _rescore(self, chunk: list[tuple[str, list[str]]], expiry: float, keep: int) -> None:
        async with self._redis.pipeline(transaction=False) as pipe:
            for key, members in chunk:
                if members:
                    pipe.zadd(key, dict.fromkeys(members, expiry))
                    # A key nobody refreshes any more disappears by itself.
                    pipe.expire(key, keep)
            if len(pipe):
                await pipe.execute()

    async def users(self) -> list[str]:
        found: set[str] = set()
        for key in self._keys.presence_all():
            found.update(await self._live(key))
        return sorted(found)

    async def members(self, room: str) -> list[str]:
        return await self._live(self._keys.members(room))

    async def _add(self, key: str, users: list[str]) -> None:
        expiry = self._expiry()
        mapping = {presence_member(u, self._instance): expiry for u in users}

        async def call() -> None:
            await self._redis.zadd(key, mapping)

        await self._policy.run(call)

    async def _remove(self, key: str, user: str) -> None:
        member = presence_member(user, self._instance)

        async def call() -> None:
            await self._redis.zrem(key, member)

        await self._policy.run(call)

    async def _live(self, key: str) -> list[str]:
        now = time.time()

        async def call() -> list[str]:
            async with self._redis.pipeline(transaction=False) as pipe:
                pipe.zremrangebyscore(key, "-inf", now)
                pipe.zrangebyscore(key, now, "+inf")
                _, rows = await pipe.execute()
            return sorted({user_of_member(m.decode()) for m in rows})

        return await self._policy.run(call)
