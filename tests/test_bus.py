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

import pytest
import redis.asyncio as aioredis
from redis.asyncio.connection import AbstractConnection, Connection
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from streams.bus import Bus
from streams.keys import Keys
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
