"""SIGKILL of one app instance behind a real nginx, while messages keep flowing.

Clients only know nginx. When an instance dies, nginx drops the sockets it
proxied to it; those clients reconnect through nginx (which sends them to
the survivor) and resume with ``since`` = the last id they received. Every
subscriber must end with exactly the room's history: no gap, no duplicate.
The publisher, also behind nginx, repeats a message with the same client_id
until it is confirmed, so nothing is stored twice either.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from ops.local import procs
from ops.local.probes import stream_entries
from ops.local.procs import Proc
from streams.keys import Keys
from tests.support import Instance, RedisServer
from tests.support.client import WsClient
from tests.support.http import history
from tests.support.programs import require
from tests.support.waiting import async_wait_until

from .traffic import (
    Connect,
    Publisher,
    Subscriber,
    check_account,
    confirmed_count,
    shut_down,
    stop_publishers,
    wait_confirmed,
)

pytestmark = [pytest.mark.failover, pytest.mark.timeout(90)]

KEYS = Keys("sgtest")  # the key prefix of the shared test harness (tests/conftest.py)
SUBSCRIBERS = 6
BEFORE = 100
AFTER = 150


@pytest.fixture
def pair(make_instance: Callable[..., Instance]) -> tuple[Instance, Instance]:
    require("nginx")  # before the instances start, not after
    return make_instance("A"), make_instance("B")


@pytest.fixture
def nginx(pair: tuple[Instance, Instance], tmp_path: Path) -> Iterator[Proc]:
    proxy = procs.start_nginx(procs.free_port(), [inst.port for inst in pair], tmp_path / "nginx")
    try:
        yield proxy
    finally:
        procs.stop(proxy.pid, 5.0, proxy.started)


def through(proxy: Proc, user: str) -> Connect:
    async def connect() -> WsClient:
        return await WsClient.open(f"ws://127.0.0.1:{proxy.port}/ws?user={user}", name=f"{user}@nginx")

    return connect


async def test_clients_resume_through_nginx_after_an_instance_dies(
    pair: tuple[Instance, Instance], nginx: Proc, redis_server: RedisServer, room: str
) -> None:
    a, b = pair
    subs = [Subscriber(f"sub{i}", through(nginx, f"sub{i}"), room, reconnect=True)
            for i in range(SUBSCRIBERS)]
    pubs = [Publisher(f"pub{i}", through(nginx, f"pub{i}"), room) for i in range(2)]
    stop = asyncio.Event()
    tasks: list[asyncio.Task[None]] = []
    try:
        for s in subs:
            await s.start()
        on_a = [s for s in subs if s.instances[0] == a.instance_id]
        assert on_a and len(on_a) < len(subs), f"nginx did not spread the sockets: {[s.instances for s in subs]}"
        tasks = [asyncio.create_task(p.run(stop), name=p.name) for p in pubs]
        await wait_confirmed(pubs, tasks, BEFORE)

        a.kill()
        await async_wait_until(lambda: all(len(s.joined) >= 2 for s in on_a), 20, interval=0.05,
                               message=lambda: str({s.name: (s.instances, s.closes) for s in on_a}))
        await wait_confirmed(pubs, tasks, confirmed_count(pubs) + AFTER)
        await stop_publishers(stop, tasks)

        stored = await history(b, room)
        with redis_server.client() as r:
            raw = stream_entries(r, KEYS.log(room))
        for s in subs:
            await s.wait_for(stored[-1]["id"])
        check_account(stored, raw, pubs, subs)
        for s in on_a:
            assert s.instances[1:] == [b.instance_id], (s.name, s.instances)
            assert s.closes, f"{s.name} on the killed instance saw no close"
        for s in subs:
            if s not in on_a:
                assert not s.closes, (s.name, s.closes)
        print(f"{len(stored)} messages; {len(on_a)} subscribers resumed on B; "
              f"publisher reconnects {[p.reconnects for p in pubs]}")
    finally:
        await shut_down(stop, tasks, pubs, subs)
