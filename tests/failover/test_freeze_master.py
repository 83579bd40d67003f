"""The master frozen (SIGSTOP) long enough for Sentinel to promote a replica, then resumed.

A frozen master is worse than a dead one: its sockets stay open, commands
sent to it wait in its buffers, and when it resumes it still believes it is
the master until Sentinel demotes it (several seconds). The nodes run with
``min-replicas-to-write 1`` and a short ``min-replicas-max-lag``, so the
resumed old master must refuse writes: nothing may be stored there that the
new master never sees.

Besides the two busy instances, a third instance C published before the
freeze, so its connection pool holds connections to the old master; after
the failover its publishes must succeed, on the new master, within the
retry budget.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
import redis

from ops.drill.report import longest_gap
from ops.local.probes import stream_entries
from tests.support.http import history
from tests.support.timeouts import scaled

from .apps import KEYS, Instances
from .topology import Node, Topology
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

pytestmark = [pytest.mark.failover, pytest.mark.timeout(150)]

FREEZE_S = 5.0
MAX_LAG_S = 3  # < FREEZE_S: on resume the old master's replicas are all "lagging"
BEFORE = 100
AFTER = 100
IDLE_PUBLISHERS = 4  # concurrent publishes on C: several pooled connections
RETRY_BUDGET_S = 10.0
MAX_STALL_S = 10.0


@pytest.fixture(scope="module")
def redis_args() -> tuple[str, ...]:
    return ("--min-replicas-to-write", "1", "--min-replicas-max-lag", str(MAX_LAG_S))


def watch_old_master(node: Node, room: str, after_ms: int, r: redis.Redis,
                     timeout: float) -> dict[str, Any]:
    """Poll the resumed old master until it is a replica again.

    Returns the room's entries with an id time from ``after_ms`` on that it
    held while it still reported itself master (writes it accepted after
    the freeze), and how many writes it refused with NOREPLICAS.
    """
    key = KEYS.log(room)
    accepted: dict[str, dict[str, str]] = {}
    refused = 0
    polls = 0
    deadline = time.monotonic() + scaled(timeout)
    while time.monotonic() < deadline:
        try:
            pipe = r.pipeline(transaction=True)
            pipe.execute_command("ROLE")
            pipe.xrange(key, min=str(after_ms), max="+")
            pipe.info("errorstats")
            role, rows, errors = pipe.execute()
        except redis.RedisError:
            time.sleep(0.02)
            continue
        polls += 1
        refused = int(errors.get("errorstat_NOREPLICAS", {}).get("count", refused))
        if role[0] != "master":
            return {"accepted": accepted, "refused": refused, "demoted": True, "polls": polls}
        for sid, fields in rows:
            accepted[str(sid)] = dict(fields)
        time.sleep(0.02)
    return {"accepted": accepted, "refused": refused, "demoted": False, "polls": polls}


async def test_frozen_master_is_replaced_and_refuses_writes_on_resume(
    topology: Topology, instances: Instances, room: str
) -> None:
    a = instances.start("A")
    b = instances.start("B")
    c = instances.start("C")
    subs = [Subscriber(f"sub-{inst.name}{i}", connector(inst, f"sub-{inst.name}{i}"), room)
            for inst in (a, b) for i in range(2)]
    pubs = [Publisher(f"pub-{inst.name}{i}", connector(inst, f"pub-{inst.name}{i}"), room)
            for inst in (a, b) for i in range(2)]
    idle = [Publisher(f"idle-C{i}", connector(c, f"idle-C{i}"), room, pace=0)
            for i in range(IDLE_PUBLISHERS)]
    stop = asyncio.Event()
    tasks: list[asyncio.Task[None]] = []
    old = topology.master()
    probe = old.client(timeout=1.0)
    try:
        for s in subs:
            await s.start()
        await asyncio.gather(*(p.publish_one({"phase": "before"}) for p in idle))
        tasks = [asyncio.create_task(p.run(stop), name=p.name) for p in pubs]
        await wait_confirmed(pubs, tasks, BEFORE)

        probe.ping()  # connected before the freeze
        frozen_ms = int(time.time() * 1000)
        topology.freeze(old)
        frozen_at = time.monotonic()
        new = await asyncio.to_thread(topology.wait_failover, old)
        promoted_after = time.monotonic() - frozen_at
        await asyncio.sleep(max(0.0, frozen_at + FREEZE_S - time.monotonic()))  # the fault lasts FREEZE_S
        topology.resume(old)
        resumed_at = time.monotonic()

        watcher = asyncio.create_task(asyncio.to_thread(
            watch_old_master, old, room, frozen_ms + 1, probe, 30.0))
        idle_results = await asyncio.gather(*(p.publish_one({"phase": "after"}) for p in idle))
        idle_took = max(s.confirmed_at or 0.0 for s in idle_results) - resumed_at
        await wait_confirmed(pubs, tasks, confirmed_count(pubs) + AFTER)
        old_view = await watcher
        await stop_publishers(stop, tasks)

        stored = await history(a, room)
        with new.client() as r:
            raw = stream_entries(r, KEYS.log(room))
        for s in subs:
            await s.wait_for(stored[-1]["id"])
        assert idle_took < RETRY_BUDGET_S + 5, f"C took {idle_took:.1f}s to publish after the resume"
        assert not old_view["accepted"], (
            f"the resumed old master accepted writes the new master never saw: "
            f"{sorted(old_view['accepted'])[:5]} ({len(old_view['accepted'])} entries; "
            f"{old_view['refused']} refused with NOREPLICAS)")
        assert old_view["demoted"], "the old master was not turned into a replica in time"

        times = [m.confirmed_at for p in pubs for m in p.sent if m.confirmed_at is not None]
        stall = longest_gap(times)[0]
        assert stall < MAX_STALL_S, f"publishing stalled {stall:.1f}s (promotion took {promoted_after:.1f}s)"
        check_account(stored, raw, [*pubs, *idle], subs)
        assert not any(s.closes for s in subs), {s.name: s.closes for s in subs}
        print(f"{len(stored)} messages, promotion after {promoted_after:.1f}s, longest stall "
              f"{stall:.2f}s, C published {idle_took:.2f}s after the resume, old master refused "
              f"{old_view['refused']} writes in {old_view['polls']} polls")
    finally:
        topology.resume(old)
        probe.close()
        await shut_down(stop, tasks, [*pubs, *idle], subs)
