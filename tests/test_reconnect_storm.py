"""Subscribers keep dropping and resuming on random instances while publishers publish.

Every subscriber must end up with exactly the room history: no gap, no
duplicate, same order. Randomness comes from a seeded RNG per subscriber
(`STORM_SEED` overrides the seed); nothing waits on a timer, every wait is
for an observable event with a deadline.
"""

from __future__ import annotations

import asyncio
import os
import random
from collections.abc import Callable
from dataclasses import dataclass, field

from tests.support import Instance, WsClient, open_client, scaled
from tests.support.http import history_ids
from tests.support.ids import assert_ids_equal, id_key

SEED = int(os.environ.get("STORM_SEED", "20240611"))
PUBLISHERS = 3
PER_PUBLISHER = 300
SUBSCRIBERS = 4
MAX_CONNECTIONS_PER_SUBSCRIBER = 2000


@dataclass
class Target:
    """The last id of the room, known once every publish is confirmed."""

    last_id: str | None = None


@dataclass
class Subscriber:
    name: str
    user: str
    room: str
    instances: list[Instance]
    rng: random.Random
    ids: list[str] = field(default_factory=list)
    connections: int = 0
    aborts: int = 0
    replayed_total: int = 0

    def caught_up(self, target: Target, current: WsClient | None = None) -> bool:
        last = None
        if current is not None and current.ids[self.room]:
            last = current.ids[self.room][-1]
        elif self.ids:
            last = self.ids[-1]
        return target.last_id is not None and last == target.last_id

    async def run(self, target: Target) -> None:
        while not self.caught_up(target):
            assert self.connections < MAX_CONNECTIONS_PER_SUBSCRIBER, f"{self.name}: too many reconnects"
            inst = self.rng.choice(self.instances)
            since = self.ids[-1] if self.ids else "0"
            budget = self.rng.randint(0, 25)
            abort = self.rng.random() < 0.25
            self.connections += 1
            client = await open_client(inst, self.user, name=f"{self.name}#{self.connections}@{inst.name}")
            try:
                replay, joined = await client.join(self.room, since=since, timeout=10)
                assert joined["recovered"] is True, f"{self.name}: {joined}"
                assert joined["replayed"] == len(replay), f"{self.name}: {joined} after {len(replay)} messages"
                self.replayed_total += len(replay)
                await client.wait_for(
                    lambda: len(client.ids[self.room]) >= budget or self.caught_up(target, client),
                    timeout=30,
                    message=lambda: f"{self.name}: stalled at {len(client.ids[self.room])}/{budget}",
                )
            finally:
                if abort:
                    self.aborts += 1
                    await client.abort()
                else:
                    await client.close()
            _assert_connection_order(client, self.room)
            self.ids.extend(client.ids[self.room])


def _assert_connection_order(client: WsClient, room: str) -> None:
    """On one connection: N replayed messages, `joined` with replayed=N, then live ones."""
    kinds = [f["type"] for f in client.log if isinstance(f, dict) and f.get("room") == room]
    assert kinds.count("joined") == 1, f"{client.name}: {kinds}"
    position = kinds.index("joined")
    joined = next(f for f in client.log if isinstance(f, dict) and f.get("type") == "joined")
    assert joined["replayed"] == position, f"{client.name}: joined {joined} at position {position}"
    assert set(kinds) <= {"message", "joined"}, kinds


async def test_reconnect_storm_every_subscriber_gets_exact_history(
    inst_a: Instance, inst_b: Instance, room: str, uid: Callable[[str], str]
) -> None:
    instances = [inst_a, inst_b]
    target = Target()
    subscribers = [
        Subscriber(f"sub{n}", uid(f"sub{n}"), room, instances, random.Random(SEED * 100 + n))
        for n in range(SUBSCRIBERS)
    ]
    sub_tasks = [asyncio.create_task(s.run(target), name=s.name) for s in subscribers]

    publishers = [await open_client(instances[k % 2], uid(f"pub{k}")) for k in range(PUBLISHERS)]
    try:
        confirmed = await asyncio.gather(
            *(
                pub.publish_many(
                    room,
                    [{"p": k, "n": n} for n in range(PER_PUBLISHER)],
                    [f"p{k}-{n}" for n in range(PER_PUBLISHER)],
                    # One at a time: the instance answers a socket's publishes
                    # as fast as Redis takes them, and the storm must outlast
                    # the publishing for every subscriber to resume often.
                    window=1,
                    timeout=60,
                )
                for k, pub in enumerate(publishers)
            )
        )
    finally:
        for pub in publishers:
            await pub.close()

    published_ids = [f["id"] for frames in confirmed for f in frames]
    assert not any(f["duplicate"] for frames in confirmed for f in frames)
    for frames in confirmed:  # each publisher's messages are stored in its order
        ids = [f["id"] for f in frames]
        assert ids == sorted(ids, key=id_key)

    expected = await history_ids(inst_a, room)
    assert len(expected) == PUBLISHERS * PER_PUBLISHER
    assert set(expected) == set(published_ids)
    target.last_id = expected[-1]

    done, pending = await asyncio.wait(sub_tasks, timeout=scaled(60))
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    for task in done:
        task.result()  # re-raise a subscriber's failure
    assert not pending, f"subscribers not caught up: {[t.get_name() for t in pending]}"

    for sub in subscribers:
        assert_ids_equal(sub.ids, expected, f"{sub.name} ({sub.connections} connections, {sub.aborts} aborted)")
        # The storm really happened: many resumes, and some of them replayed.
        assert sub.connections >= 5, f"{sub.name} reconnected only {sub.connections} times"
    assert sum(s.replayed_total for s in subscribers) > 0
