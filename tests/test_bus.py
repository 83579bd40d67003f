"""The Pub/Sub bus against a real redis-server: its stop is bounded even when a
cancellation is swallowed, and a long-lived link keeps no state for rooms
that are gone.

Faults are injected with a small Connection subclass, not a mock: it talks to
the real server and only adds what redis-py's connect can do in production
(finish without raising although the task was cancelled).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from redis.asyncio.connection import AbstractConnection, Connection
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from streams.bus import Bus
from streams.keys import Keys
from streams.model import Envelope
from tests.support import RedisServer, async_wait_until, scaled

# Long enough that a stop lands inside it; short enough to keep the test quick.
SWALLOW_WINDOW_S = 0.5
STOP_BOUND_S = 3.0  # Bus.stop()'s default bound


class SwallowsCancel(Connection):
    """Connects for real, then sits in a window in which a cancellation is
    caught and dropped, the way redis-py's connect can drop one."""

    entered: asyncio.Event | None = None

    async def connect(self) -> None:
        await super().connect()
        if self.entered is not None:
            self.entered.set()
        try:
            await asyncio.sleep(SWALLOW_WINDOW_S)
        except asyncio.CancelledError:
            pass


def _factory(server: RedisServer, cls: type[Connection] = Connection) -> Callable[[], AbstractConnection]:
    def make() -> AbstractConnection:
        return cls(host="127.0.0.1", port=server.port, protocol=2, retry=Retry(NoBackoff(), 0),
                   socket_timeout=2, socket_connect_timeout=2)
    return make


@pytest.fixture
async def announcer(redis_server: RedisServer) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis(host="127.0.0.1", port=redis_server.port)
    try:
        yield client
    finally:
        await client.aclose()


def _bus(connect: Callable[[], AbstractConnection], announce: aioredis.Redis) -> Bus:
    keys = Keys(f"sgbus-{uuid.uuid4().hex[:8]}")
    return Bus(connect, keys, f"bus-{uuid.uuid4().hex[:6]}", on_entry=lambda env: None,
               on_resync=lambda room: None, announce=announce.publish, ping_interval_s=0.2)


async def test_stop_is_bounded_when_the_connect_swallows_the_cancellation(
    redis_server: RedisServer, announcer: aioredis.Redis
) -> None:
    entered = asyncio.Event()

    class Swallowing(SwallowsCancel):
        pass

    Swallowing.entered = entered
    bus = _bus(_factory(redis_server, Swallowing), announcer)
    bus.start()
    task = bus._task
    assert task is not None
    try:
        await asyncio.wait_for(entered.wait(), scaled(5))
        started = time.monotonic()
        stopper = asyncio.create_task(bus.stop())
        done, _ = await asyncio.wait({stopper}, timeout=scaled(STOP_BOUND_S + 1.5))
        assert stopper in done, "Bus.stop() did not return"
        assert time.monotonic() - started < scaled(STOP_BOUND_S + 0.5)
        # Not merely abandoned: the run loop saw it was stopping and ended.
        await async_wait_until(task.done, 2, message="the bus task is still running")
    finally:
        task.cancel()


async def test_link_keeps_no_state_for_rooms_left(
    redis_server: RedisServer, announcer: aioredis.Redis
) -> None:
    bus = _bus(_factory(redis_server), announcer)
    bus.start()
    try:
        rooms = [f"r{n}-{uuid.uuid4().hex[:6]}" for n in range(300)]
        for room in rooms:
            await bus.subscribe(room, timeout_s=scaled(5))
            await bus.unsubscribe(room)
        link = bus._link
        assert link is not None

        def settled() -> bool:
            # Every UNSUBSCRIBE confirmed: only the canary stays subscribed.
            return not link.pending and len(link.active) == 1

        await async_wait_until(settled, 5, message=lambda: f"pending={len(link.pending)} "
                               f"active={len(link.active)}")
        assert link.pending == {}
        assert bus._wanted == set() and bus._ever == set()
        assert bus._link is link, "the link was rebuilt during the test"
    finally:
        await bus.stop()


def _collecting_bus(connect: Callable[[], AbstractConnection], announce: aioredis.Redis,
                    got: list[Envelope]) -> tuple[Bus, Keys]:
    keys = Keys(f"sgbus-{uuid.uuid4().hex[:8]}")
    bus = Bus(connect, keys, f"bus-{uuid.uuid4().hex[:6]}", on_entry=got.append,
              on_resync=lambda room: None, announce=announce.publish, ping_interval_s=0.2)
    return bus, keys


async def test_a_burst_read_at_once_is_handed_over_whole_and_in_order(
    redis_server: RedisServer, announcer: aioredis.Redis
) -> None:
    """Many notifications arrive in one socket read: each is handed over once,
    in order, with its fields, and a notification split over two reads too."""
    got: list[Envelope] = []
    bus, keys = _collecting_bus(_factory(redis_server), announcer, got)
    bus.start()
    room = f"burst-{uuid.uuid4().hex[:6]}"
    n = 3000
    try:
        await bus.subscribe(room, timeout_s=scaled(5))
        # A body larger than one read of the bus (64 KiB) comes in pieces.
        big = '"' + "x" * 100_000 + '"'
        async with announcer.pipeline(transaction=False) as pipe:
            for i in range(1, n + 1):
                body = big if i == n // 2 else f'{{"i":{i},"t":"a\\nb"}}'
                pipe.publish(keys.channel(room), f"{i}-0\n{i - 1}-0\nu{i}\n{body}")
            await pipe.execute()
        await async_wait_until(lambda: len(got) >= n, scaled(10),
                               message=lambda: f"{len(got)}/{n} handed over")
        assert [e.id for e in got] == [f"{i}-0" for i in range(1, n + 1)]
        assert all(e.room == room and e.prev_key == (i, 0) for i, e in enumerate(got))
        assert got[0].sender == "u1" and got[0].body == '{"i":1,"t":"a\\nb"}'
        assert got[n // 2 - 1].body == big
    finally:
        await bus.stop()


async def test_a_link_that_goes_silent_is_replaced_and_delivers_again(
    redis_server: RedisServer, announcer: aioredis.Redis
) -> None:
    """No read timeout per reply: a link whose PINGs go unanswered for three
    intervals is found by the pinger, rebuilt, and delivers again after."""
    got: list[Envelope] = []
    bus, keys = _collecting_bus(_factory(redis_server), announcer, got)
    bus.start()
    room = f"silent-{uuid.uuid4().hex[:6]}"
    try:
        await bus.subscribe(room, timeout_s=scaled(5))
        await async_wait_until(lambda: bus.healthy, scaled(5), message="bus never healthy")
        before = bus.reconnects
        # Every client's commands wait: the bus's PINGs go unanswered.
        await announcer.execute_command("CLIENT", "PAUSE", "1500", "ALL")
        await async_wait_until(lambda: bus.reconnects > before, scaled(6),
                               message="the silent link was not replaced")
        await async_wait_until(lambda: bus.healthy, scaled(10), message="bus not healthy again")
        await announcer.publish(keys.channel(room), '1-0\n0-0\nu\n"after"')
        await async_wait_until(lambda: [e.id for e in got] == ["1-0"], scaled(5),
                               message=lambda: f"got {[e.id for e in got]}")
    finally:
        await bus.stop()


async def test_a_sharded_link_whose_canary_is_refused_connects_again_until_the_node_serves(
    tmp_path: Path,
) -> None:
    """A cluster node that serves no slot yet (a shard being rebuilt answers
    CLUSTERDOWN) refuses the link's canary. The link must not stay connected
    and forever unready (PINGs still answered): it connects again, and is up
    once the node takes the slots."""
    server = RedisServer(tmp_path, extra_args=("--cluster-enabled", "yes",
                                               "--cluster-config-file", str(tmp_path / "nodes.conf")))
    server.start()
    admin = aioredis.Redis(host="127.0.0.1", port=server.port)
    keys = Keys(f"sgbus-{uuid.uuid4().hex[:8]}")
    instance = f"bus-{uuid.uuid4().hex[:6]}"
    bus = Bus(_factory(server), keys, instance, on_entry=lambda env: None,
              on_resync=lambda room: None, announce=admin.spublish, ping_interval_s=0.2,
              canary_interval_s=0.5, sharded=True, canary=keys.canary(instance, "0"),
              on_lost=lambda room: None)
    bus.start()
    try:
        await async_wait_until(lambda: bus.reconnects >= 2, 10,
                               message=lambda: f"the refused link stayed: reconnects={bus.reconnects}")
        assert not bus.healthy
        await admin.execute_command("CLUSTER", "ADDSLOTSRANGE", 0, 16383)
        await async_wait_until(lambda: bus.healthy, 15, message="never healthy once the node served")
        await bus.subscribe(f"room-{uuid.uuid4().hex[:6]}", timeout_s=scaled(5))
    finally:
        await bus.stop()
        await admin.aclose()
        server.stop()
