"""Only one sentinel of three alive when the master dies: no promotion, clean refusals.

With quorum 2 a lone sentinel can only think the master is down; it can
neither agree an objective failure nor win an election. Meanwhile the
service must answer every publish with ``unavailable`` within its retry
budget (never hang, never drop the socket) and keep /healthz at 200. Once
the two sentinels are back, from the config files they rewrote while they
ran, the failover happens and the same client_ids are stored once.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx
import pytest

from ops.local import probes
from ops.local.probes import stream_entries
from tests.support.client import ServerError, WsClient
from tests.support.http import history
from tests.support.timeouts import scaled

from .apps import KEYS, Instances
from .topology import Topology

pytestmark = [pytest.mark.failover, pytest.mark.timeout(120)]

BUDGET_S = 3.0
NO_PROMOTION_S = 4.0
REFUSALS = 3


async def test_no_quorum_means_no_promotion_and_clean_refusals(
    topology: Topology, instances: Instances, room: str
) -> None:
    a = instances.start("A", RETRY_BUDGET=str(BUDGET_S))
    client = await WsClient.open(a.ws_url(user="writer"), name="writer@A")
    others = [await WsClient.open(a.ws_url(user=f"w{n}"), name=f"w{n}@A") for n in range(REFUSALS)]
    try:
        before = (await client.publish(room, {"cid": "before"}, "before"))["id"]
        old = topology.master()
        topology.stop_sentinel(1)
        topology.stop_sentinel(2)
        for proc in topology.sentinels[1:]:
            # What they learnt while running is in their config copies, so a
            # restart knows the replicas and the other sentinels at once.
            conf = (Path(proc.log).parent / "sentinel.conf").read_text()
            assert "known-replica" in conf and "known-sentinel" in conf, conf
        topology.kill(old)

        # While the lone sentinel keeps naming the dead master, publishes on
        # several sockets at once are refused within the budget. (Kept short:
        # once replicas have lost their master for 10 x down-after, a freshly
        # started sentinel deems them too stale to promote and retries later.)
        cids = [f"during-{n}" for n in range(REFUSALS)]
        refusals = asyncio.gather(*(_refused(c, room, cid) for c, cid in zip(others, cids)))
        views: list[object] = []
        watch_until = time.monotonic() + NO_PROMOTION_S
        while time.monotonic() < watch_until:
            views.append(probes.sentinel_master_addr(topology.sentinels[0].port))
            await asyncio.sleep(0.2)
        took = await refusals
        assert set(views) == {old.addr}, f"a lone sentinel changed the master: {set(views)}"
        assert max(took) < BUDGET_S + 3, f"unavailable after {took}s with a {BUDGET_S}s budget"
        for c in others:
            await c.ping()
        await client.ping()  # the socket stayed open and answers
        async with httpx.AsyncClient(base_url=a.url, timeout=scaled(5)) as http:
            assert (await http.get("/healthz")).status_code == 200

        restarted_at = time.monotonic()
        topology.restart_sentinel(1)
        topology.restart_sentinel(2)
        new = await asyncio.to_thread(topology.wait_failover, old, 30.0)
        print(f"promoted {time.monotonic() - restarted_at:.1f}s after the sentinels restarted")

        # The refused messages again, same client_ids, then a new one.
        stored_ids: dict[str, str] = {"before": before}
        for cid in [*cids, "after"]:
            stored_ids[cid] = await _publish_until_stored(client, room, cid)

        stored = await history(a, room)
        assert [m["body"]["cid"] for m in stored] == ["before", *cids, "after"], stored
        assert [m["id"] for m in stored] == list(stored_ids.values())
        with new.client() as r:
            raw = stream_entries(r, KEYS.log(room))
        assert [f.get("c") for _sid, f in raw] == [f"c:{c}" for c in stored_ids], raw
    finally:
        for c in [client, *others]:
            await c.close()


async def _refused(client: WsClient, room: str, cid: str) -> float:
    """Publish once; the answer must be `unavailable` for this client_id. Returns seconds taken."""
    started = time.monotonic()
    await client.send({"type": "publish", "room": room, "body": {"cid": cid}, "client_id": cid})
    frame = await client.recv_frame(timeout=BUDGET_S + 5)
    assert frame.get("type") == "error" and frame.get("code") == "unavailable", frame
    assert frame.get("ref") == cid, frame
    return time.monotonic() - started


async def _publish_until_stored(client: WsClient, room: str, cid: str, within: float = 20.0) -> str:
    deadline = time.monotonic() + scaled(within)
    while True:
        try:
            return str((await client.publish(room, {"cid": cid}, cid, timeout=BUDGET_S + 5))["id"])
        except ServerError as exc:
            if exc.code != "unavailable" or time.monotonic() > deadline:
                raise
