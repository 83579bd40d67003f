"""Replica durability covers the watermark, not only the entry.

Every read stops at the room's confirmed watermark. If the watermark's move
were not on the replicas when a publish is confirmed and announced, a
failover right then would hide delivered entries from history (until the
next publish moved it again). So the watermark gets its own WAIT before the
entry is announced, and a publish whose watermark did not reach a replica is
answered ``unavailable``, like one whose entry did not.

The fault: the replica freezes (SIGSTOP) between the entry's WAIT and the
watermark's, through a small RoomLog subclass; the real master and replica
do the rest.
"""

from __future__ import annotations

import os
import signal
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from streams.keys import Keys
from streams.log import NotConfirmed, ReplicaAcks, RoomLog
from streams.retry import RetryPolicy
from tests.support import RedisServer


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RedisServer, RedisServer]]:
    master = RedisServer(Path(tmp_path_factory.mktemp("wm-master"))).start()
    replica: RedisServer | None = None
    try:
        replica = master.start_replica(Path(tmp_path_factory.mktemp("wm-replica")))
        yield master, replica
    finally:
        if replica is not None:
            replica.stop()
        master.stop()


class FreezesReplicaBeforeTheWatermark(RoomLog):
    replica_pid = 0

    async def _confirm_replicated(self, room: str, sid: str, acks: ReplicaAcks) -> None:
        os.kill(self.replica_pid, signal.SIGSTOP)
        try:
            await super()._confirm_replicated(room, sid, acks)
        finally:
            os.kill(self.replica_pid, signal.SIGCONT)


async def test_a_watermark_not_on_the_replicas_is_not_confirmed(
    pair: tuple[RedisServer, RedisServer],
) -> None:
    master, replica = pair
    client = aioredis.Redis(host="127.0.0.1", port=master.port)
    keys = Keys(f"sgwm-{uuid.uuid4().hex[:8]}")
    log = FreezesReplicaBeforeTheWatermark(client, keys, 1000, RetryPolicy(0.5),
                                           replica_acks=ReplicaAcks(1, 200))
    log.replica_pid = replica.pid
    try:
        with pytest.raises(NotConfirmed):
            await log.append("room", "alice", '"hi"', "cid-1")
    finally:
        await client.aclose()


async def test_a_confirmed_publish_has_its_watermark_on_the_replica(
    pair: tuple[RedisServer, RedisServer],
) -> None:
    master, replica = pair
    client = aioredis.Redis(host="127.0.0.1", port=master.port)
    on_replica = aioredis.Redis(host="127.0.0.1", port=replica.port, decode_responses=True)
    keys = Keys(f"sgwm-{uuid.uuid4().hex[:8]}")
    log = RoomLog(client, keys, 1000, RetryPolicy(2.0), replica_acks=ReplicaAcks(1, 2000))
    try:
        for n in range(20):
            sid = (await log.append("room", "alice", str(n), None)).id
            assert await on_replica.get(keys.confirmed("room")) == sid
    finally:
        await client.aclose()
        await on_replica.aclose()


async def test_reading_backwards_stops_at_the_watermark(
    pair: tuple[RedisServer, RedisServer],
) -> None:
    """An entry past the confirmed watermark (appended, its WAIT not done: here
    written straight into the stream) is not read backwards either, whether
    the page starts at the newest entry or at an id beyond it."""
    master, _replica = pair
    client = aioredis.Redis(host="127.0.0.1", port=master.port)
    keys = Keys(f"sgwm-{uuid.uuid4().hex[:8]}")
    log = RoomLog(client, keys, 1000, RetryPolicy(2.0), replica_acks=ReplicaAcks(1, 2000))
    try:
        assert await log.read_before("room", None, 10) == []  # no watermark yet
        confirmed = [(await log.append("room", "alice", str(n), None)).id for n in range(5)]
        pending = (await client.xadd(keys.log("room"), {"x": "unconfirmed"})).decode()
        newest = [e.id for e in await log.read_before("room", None, 3)]
        assert newest == confirmed[-3:]
        beyond = [e.id for e in await log.read_before("room", "99999999999999-0", 10)]
        assert beyond == confirmed and pending not in beyond
        assert [e.id for e in await log.read_before("room", confirmed[2], 10)] == confirmed[:2]
    finally:
        await client.aclose()
