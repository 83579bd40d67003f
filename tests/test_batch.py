"""Appends batched into one pipeline (streams/batch.py), over a real redis-server.

Each append gets its own answer, appends to one room are stored in the order
they were submitted, one refused append fails alone, and a connection killed
in the middle of a batch (``CLIENT KILL`` after part of the pipeline has run)
leads to retries that store every message exactly once.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis
import redis.asyncio as aioredis
from redis.asyncio.connection import Connection
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from streams.keys import Keys
from streams.log import RoomLog
from streams.retry import RetryPolicy, StorageUnavailable
from tests.support import RedisServer, async_wait_until

pytestmark = pytest.mark.timeout(60)

KEYS = Keys("sgbatch")


def client(port: int, connection_class: type[Connection] = Connection) -> aioredis.Redis:
    """Like streams.connection builds them: no redis-py retry, RESP2."""
    pool = aioredis.ConnectionPool(
        connection_class=connection_class, host="127.0.0.1", port=port,
        socket_timeout=2, socket_connect_timeout=2, retry=Retry(NoBackoff(), 0), protocol=2,
    )
    return aioredis.Redis(connection_pool=pool)


@pytest.fixture
async def plain(redis_server: RedisServer) -> AsyncIterator[aioredis.Redis]:
    r = client(redis_server.port)
    yield r
    await r.aclose()


def rooms(n: int) -> list[str]:
    tag = uuid.uuid4().hex[:8]
    return [f"batch-{tag}-{i}" for i in range(n)]


async def stored(r: aioredis.Redis, room: str) -> list[tuple[str, dict[bytes, bytes]]]:
    return [(sid.decode(), fields) for sid, fields in await r.xrange(KEYS.log(room))]


async def test_concurrent_appends_keep_room_order_and_get_their_own_answers(
    plain: aioredis.Redis,
) -> None:
    round_trips = 0
    pool = plain.connection_pool
    original = pool.get_connection

    async def counting(*args: Any, **kwargs: Any) -> Any:
        nonlocal round_trips
        round_trips += 1  # a batch is one connection taken from the pool, one write
        return await original(*args, **kwargs)

    pool.get_connection = counting  # type: ignore[method-assign]
    log = RoomLog(plain, KEYS, 10000, RetryPolicy(5.0))
    names = rooms(4)
    n = 400
    sent = [(names[i % 4], f"user{i % 7}", json.dumps({"i": i})) for i in range(n)]
    results = await asyncio.gather(*(log.append(room, user, body, None)
                                     for room, user, body in sent))
    assert 0 < round_trips < n / 4, f"{round_trips} round trips for {n} appends: not batched"
    assert len({(rm, r.id) for r, (rm, _, _) in zip(results, sent)}) == n
    for room in names:
        mine = [(res, body, user) for res, (rm, user, body) in zip(results, sent) if rm == room]
        entries = await stored(plain, room)
        # Stored in submission order, each answer naming its own entry...
        assert [sid for sid, _ in entries] == [res.id for res, _, _ in mine]
        assert [(f[b"b"].decode(), f[b"u"].decode()) for _, f in entries] == \
            [(body, user) for _, body, user in mine]
        # ...and each one's prev is the entry before it in the room.
        assert [res.prev for res, _, _ in mine] == ["0-0"] + [res.id for res, _, _ in mine[:-1]]
        assert not any(res.duplicate for res, _, _ in mine)


async def test_appends_after_the_script_cache_was_flushed_load_it_and_store_once(
    plain: aioredis.Redis,
) -> None:
    """NOSCRIPT (a restarted or promoted server) answers every member of the
    batch: the script is loaded and the batch sent again, each stored once."""
    log = RoomLog(plain, KEYS, 10000, RetryPolicy(5.0))
    (room,) = rooms(1)
    await log.append(room, "u", '"first"', None)  # the script is loaded now
    await plain.script_flush()
    results = await asyncio.gather(*(log.append(room, "u", json.dumps(i), f"c{i}")
                                     for i in range(20)))
    entries = await stored(plain, room)
    assert [sid for sid, _ in entries[1:]] == [r.id for r in results]
    assert [f[b"b"].decode() for _, f in entries[1:]] == [json.dumps(i) for i in range(20)]


async def test_a_refused_append_or_a_duplicate_does_not_fail_the_others(
    plain: aioredis.Redis,
) -> None:
    log = RoomLog(plain, KEYS, 10000, RetryPolicy(5.0))
    good, broken = rooms(2)
    await plain.set(KEYS.log(broken), "not a stream")  # its XADD fails: WRONGTYPE
    cid = f"cid-{uuid.uuid4().hex[:8]}"
    outcomes = await asyncio.gather(
        log.append(good, "u1", '"a"', cid),
        log.append(broken, "u1", '"refused"', None),
        log.append(good, "u1", '"a again"', cid),
        log.append(good, "u2", '"b"', None),
        return_exceptions=True,
    )
    first, refused, again, other = outcomes
    assert isinstance(refused, StorageUnavailable), refused
    assert not isinstance(first, BaseException) and not first.duplicate
    assert not isinstance(again, BaseException) and (again.id, again.duplicate) == (first.id, True)
    assert not isinstance(other, BaseException) and not other.duplicate
    entries = await stored(plain, good)
    assert [(sid, f[b"b"]) for sid, f in entries] == [(first.id, b'"a"'), (other.id, b'"b"')]
    assert other.prev == first.id


class KillMidBatch(Connection):
    """Sends only the first half of the next pipeline of append calls, waits
    until the server has run that half, then has the server kill this
    connection (``CLIENT KILL ADDR``): the replies of the first half are
    lost and the second half never arrives."""

    armed = False
    fired = 0
    port = 0
    ran_first_half: Any = None

    async def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        cls = type(self)
        data = bytes(command) if isinstance(command, (bytes, bytearray, memoryview)) \
            else b"".join(bytes(c) for c in command)
        starts = _command_starts(data, b"EVALSHA")
        if not (cls.armed and len(starts) >= 2):
            await super().send_packed_command(command, check_health)
            return
        cls.armed = False
        cls.fired += 1
        half = len(starts) // 2
        await super().send_packed_command(data[:starts[half]], check_health)
        await cls.ran_first_half(half)
        host, port = self._writer.get_extra_info("sockname")[:2]  # type: ignore[union-attr]
        killer = redis.Redis(host="127.0.0.1", port=cls.port)
        try:
            assert killer.execute_command("CLIENT", "KILL", "ADDR", f"{host}:{port}")
        finally:
            killer.close()


def _command_starts(data: bytes, name: bytes) -> list[int]:
    """Offsets of the RESP arrays (``*N\\r\\n$L\\r\\nNAME``) calling ``name``."""
    starts, at = [], 0
    marker = b"\r\n" + name + b"\r\n"
    while (hit := data.find(marker, at)) >= 0:
        length = data.rfind(b"$", 0, hit)
        starts.append(data.rfind(b"*", 0, length))
        at = hit + len(marker)
    return starts


@pytest.mark.parametrize("with_client_id", [True, False], ids=["client_id", "no_client_id"])
async def test_a_connection_killed_mid_batch_stores_each_message_once(
    redis_server: RedisServer, plain: aioredis.Redis, with_client_id: bool,
) -> None:
    names = rooms(3)

    async def ran(count: int) -> None:
        async def enough() -> bool:
            total = 0
            for room in names:
                total += await plain.xlen(KEYS.log(room))
            return total >= count
        await async_wait_until(enough, 10, message="the first half of the batch ran")

    conn_class = type("Kill", (KillMidBatch,), {"port": redis_server.port,
                                                "ran_first_half": staticmethod(ran)})
    retries = 0

    def count_retry() -> None:
        nonlocal retries
        retries += 1

    r = client(redis_server.port, conn_class)
    log = RoomLog(r, KEYS, 10000, RetryPolicy(5.0, on_retry=count_retry))
    try:
        await log.append(f"{names[0]}-warm", "u", '"warm"', None)  # a pooled connection
        conn_class.armed = True
        n = 60
        sent = [(names[i % 3], json.dumps({"i": i}), f"c{i}-{uuid.uuid4().hex[:6]}"
                 if with_client_id else None) for i in range(n)]
        results = await asyncio.gather(*(log.append(room, "u", body, cid)
                                         for room, body, cid in sent))
        assert conn_class.fired == 1, "the batch was never cut"
        assert retries >= 1, "nothing was retried"
        # The first half ran before the kill: its retries found their records.
        assert sum(res.duplicate for res in results) >= 1
        for room in names:
            mine = [(res, body) for res, (rm, body, _) in zip(results, sent) if rm == room]
            entries = await stored(plain, room)
            assert [(sid, f[b"b"].decode()) for sid, f in entries] == \
                [(res.id, body) for res, body in mine], "not stored exactly once, in order"
    finally:
        await r.aclose()
