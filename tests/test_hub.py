"""The hub's failure paths against a real redis-server, a real Bus and a real
RoomLog. Faults come from a small RoomLog subclass that fails where told to.

- A room whose open failed must not unsubscribe a newer room of the same
  name (both use the same channel).
- A fill that fails with something other than an outage must not leave the
  room filling for ever (live delivery would stop without a word): it
  retries, and after repeated failures gives the room up, telling its
  members they lost entries so they close and resume.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Callable

import pytest
import redis.asyncio as aioredis
from redis.asyncio.connection import AbstractConnection, Connection
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from app.hub import FILL_FAILURES, Hub
from streams.bus import Bus
from streams.keys import Keys
from streams.log import RoomLog
from streams.model import MAX, Envelope, StreamId
from streams.retry import RetryPolicy, StorageUnavailable
from tests.support import RedisServer, async_wait_until, scaled


class FaultyLog(RoomLog):
    """A RoomLog that fails on command: ``last_id`` once, held until released;
    ``bounds`` a number of times with a programming error; it also counts the
    stream reads in flight at once."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.hold_last_id: asyncio.Event | None = None
        self.last_id_entered = asyncio.Event()
        self.bounds_failures = 0
        self.read_delay = 0.0  # a slow Redis: reads overlap if allowed to
        self.in_flight = 0
        self.most = 0  # most stream reads in flight at once

    async def read_after(self, room: str, after: str, count: int):  # type: ignore[no-untyped-def]
        self.in_flight += 1
        self.most = max(self.most, self.in_flight)
        try:
            if self.read_delay:
                await asyncio.sleep(self.read_delay)
            return await super().read_after(room, after, count)
        finally:
            self.in_flight -= 1

    async def last_id(self, room: str) -> str:
        hold, self.hold_last_id = self.hold_last_id, None
        if hold is not None:
            self.last_id_entered.set()
            await hold.wait()
            raise StorageUnavailable("failed on purpose")
        return await super().last_id(room)

    async def bounds(self, room: str):  # type: ignore[no-untyped-def]
        if self.bounds_failures > 0:
            self.bounds_failures -= 1
            raise RuntimeError("a bug in reading the bounds")
        return await super().bounds(room)


class Member:
    def __init__(self, user: str) -> None:
        self.user = user
        self.got: list[str] = []
        self.lost_marks: list[StreamId] = []

    def deliver(self, env: Envelope, key: StreamId, frame: str, wire: bytes) -> None:
        self.got.append(env.id)

    def lost(self, room: str, mark: StreamId) -> None:
        self.lost_marks.append(mark)


def _connect(server: RedisServer) -> Callable[[], AbstractConnection]:
    def make() -> AbstractConnection:
        return Connection(host="127.0.0.1", port=server.port, protocol=2,
                          retry=Retry(NoBackoff(), 0), socket_timeout=2, socket_connect_timeout=2)
    return make


@pytest.fixture
async def stack(redis_server: RedisServer) -> AsyncIterator[tuple[Hub, FaultyLog]]:
    client = aioredis.Redis(host="127.0.0.1", port=redis_server.port)
    keys = Keys(f"sghub-{uuid.uuid4().hex[:8]}")
    log = FaultyLog(client, keys, 10_000, RetryPolicy(1.0))
    hub = Hub(log, subscribe_timeout_s=scaled(5.0))
    bus = Bus(_connect(redis_server), keys, f"hub-{uuid.uuid4().hex[:6]}",
              on_entry=hub.on_entry, on_resync=hub.on_resync, announce=client.publish,
              ping_interval_s=0.2)
    hub.bind(bus)
    bus.start()
    try:
        yield hub, log
    finally:
        await hub.close()
        await bus.stop()
        await client.aclose()


async def test_a_failed_open_leaves_a_newer_room_of_the_same_name_subscribed(
    stack: tuple[Hub, FaultyLog],
) -> None:
    hub, log = stack
    room = f"r-{uuid.uuid4().hex[:6]}"
    release = asyncio.Event()
    log.hold_last_id = release
    early, late = Member("a"), Member("b")
    first = asyncio.create_task(hub.attach(room, early))
    await asyncio.wait_for(log.last_id_entered.wait(), scaled(5.0))
    hub.detach(room, early)  # the room goes while its open is still running
    await hub.attach(room, late)  # a newer room of the same name opens fine
    release.set()  # now the first open fails
    with pytest.raises(StorageUnavailable):
        await first
    sid = (await log.append(room, "p", '"after"', None)).id
    await async_wait_until(lambda: sid in late.got, scaled(5.0),
                           message="the newer room lost its subscription")


async def test_a_fill_that_fails_with_a_bug_retries_and_delivers(stack: tuple[Hub, FaultyLog]) -> None:
    hub, log = stack
    room = f"r-{uuid.uuid4().hex[:6]}"
    member = Member("a")
    await hub.attach(room, member)
    first = (await log.append(room, "p", "1", None)).id
    await async_wait_until(lambda: first in member.got, scaled(5.0))
    log.bounds_failures = FILL_FAILURES - 1
    hub.on_resync(room)  # as after a Pub/Sub reconnect: the room fills
    second = (await log.append(room, "p", "2", None)).id
    await async_wait_until(lambda: second in member.got, scaled(10.0),
                           message="live delivery stopped after a failed fill")
    assert member.got == [first, second] and member.lost_marks == []


async def test_a_fill_that_keeps_failing_gives_the_room_up_and_says_so(
    stack: tuple[Hub, FaultyLog],
) -> None:
    hub, log = stack
    room = f"r-{uuid.uuid4().hex[:6]}"
    member = Member("a")
    await hub.attach(room, member)
    log.bounds_failures = 1000
    hub.on_resync(room)
    await async_wait_until(lambda: member.lost_marks == [MAX], scaled(10.0),
                           message="members of a room given up were not told")
    assert room not in hub.rooms()


async def test_joined_that_cannot_be_queued_closes_the_socket_instead_of_vanishing(
    stack: tuple[Hub, FaultyLog],
) -> None:
    """A socket whose control slack is used up cannot be sent ``joined``: it is
    closed as too slow (4408), never left joined without knowing it."""
    from app.auth import Principal
    from app.outbox import Outbox, TooSlow
    from app.session import Session

    hub, log = stack
    room = f"r-{uuid.uuid4().hex[:6]}"

    async def never_sent(frame: str) -> None:  # a peer that never reads
        await asyncio.Event().wait()

    outbox = Outbox(never_sent, limit=8, stall_timeout_s=30.0, control_slack=4)
    session = Session(Principal("alice", None, False), outbox, hub, log)
    while outbox.push('{"type":"pong"}'):
        pass
    await asyncio.sleep(0)  # the writer takes one frame and waits on the peer for good
    while outbox.push('{"type":"pong"}'):
        pass
    try:
        with pytest.raises(TooSlow):
            await session.join_from(room, None, True)
    finally:
        session.detach_all()
        writer = outbox.close()
        if writer is not None:
            writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await writer


async def test_after_a_resync_rooms_fill_a_few_at_a_time_and_all_go_live(
    stack: tuple[Hub, FaultyLog],
) -> None:
    from app.hub import FILL_SLOTS

    hub, log = stack
    log.read_delay = 0.005
    rooms = [f"r{n}" for n in range(120)]
    members = {room: Member("a") for room in rooms}
    await asyncio.gather(*(hub.attach(room, members[room]) for room in rooms))
    log.most = 0
    for room in rooms:
        hub.on_resync(room)  # as after the Pub/Sub link was rebuilt
    sids = {room: (await log.append(room, "p", '"x"', None)).id for room in rooms}
    await async_wait_until(
        lambda: all(sids[room] in members[room].got for room in rooms), scaled(20.0),
        message="some rooms never went live again")
    assert 1 < log.most <= FILL_SLOTS < len(rooms)
