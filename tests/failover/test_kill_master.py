"""SIGKILL of the Redis master while both instances publish and deliver.

DURABILITY=replica: a ``published`` answer promises the message survives a
failover. Publishers on both instances repeat a message with the same
client_id after ``unavailable``; subscribers on both instances keep their
sockets. Afterwards every id is accounted for against the history on the
new master, and the longest pause between two confirmations is bounded.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from ops.drill.report import longest_gap
from ops.local.probes import stream_entries
from tests.support.http import history

from .apps import KEYS, Instances
from .topology import Topology
from .traffic import (
    Publisher,
    Subscriber,
    check_account,
    confirmed_count,
    connector,
    shut_down,
    stop_publishers,
    wait_confirmed,
)

pytestmark = [pytest.mark.failover, pytest.mark.timeout(120)]

BEFORE = 100  # confirmations before the kill
AFTER = 100  # confirmations after the failover
MAX_STALL_S = 10.0


async def test_kill_master_loses_nothing_confirmed(topology: Topology, instances: Instances, room: str) -> None:
    a = instances.start("A")
    b = instances.start("B")
    subs = [Subscriber(f"sub-{inst.name}{i}", connector(inst, f"sub-{inst.name}{i}"), room)
            for inst in (a, b) for i in range(2)]
    pubs = [Publisher(f"pub-{inst.name}{i}", connector(inst, f"pub-{inst.name}{i}"), room)
            for inst in (a, b) for i in range(2)]
    stop = asyncio.Event()
    tasks: list[asyncio.Task[None]] = []
    try:
        for s in subs:
            await s.start()
        tasks = [asyncio.create_task(p.run(stop), name=p.name) for p in pubs]
        await wait_confirmed(pubs, tasks, BEFORE)

        old = topology.master()
        killed_at = topology.kill(old)
        new = await asyncio.to_thread(topology.wait_failover, old)
        promoted_after = time.monotonic() - killed_at
        await wait_confirmed(pubs, tasks, confirmed_count(pubs) + AFTER)
        await stop_publishers(stop, tasks)

        stored = await history(a, room)
        with new.client() as r:
            raw = stream_entries(r, KEYS.log(room))
        for s in subs:
            await s.wait_for(stored[-1]["id"])
        times = [m.confirmed_at for p in pubs for m in p.sent if m.confirmed_at is not None]
        stall = longest_gap(times)[0]
        after_kill = [t for t in times if t > killed_at]
        assert after_kill, "nothing was confirmed after the kill"
        assert stall < MAX_STALL_S, (
            f"publishing stalled {stall:.1f}s (promotion took {promoted_after:.1f}s)")
        check_account(stored, raw, pubs, subs)
        assert not any(s.closes for s in subs), {s.name: s.closes for s in subs}
        unavailable = sum(len(m.unavailable) for p in pubs for m in p.sent)
        print(f"{len(stored)} messages, promotion after {promoted_after:.1f}s, "
              f"longest stall {stall:.2f}s, {unavailable} unavailable answers")
    finally:
        await shut_down(stop, tasks, pubs, subs)
