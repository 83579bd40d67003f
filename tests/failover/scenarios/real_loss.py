"""Real loss: the master accepts writes its replicas never get, then dies.

Run inside a network namespace of its own (``ip netns exec NS python -m
tests.failover.scenarios.real_loss --durability replica --root DIR``); the
test in ``test_real_loss.py`` sets the namespace up and tears it down. Here
the master listens on 127.0.0.2 and the replicas on 127.0.0.3 and .4 (each
also on 127.0.0.1, where the sentinels, the instances and this script
live), and nftables drops every packet between the master's address and the
replicas' in both directions: the replication stream and the replicas' ACKs.

Phases: traffic with the link intact; the cut, during which each publisher
tries a few new messages once; the old master's stream is read directly
(what it accepted during the cut); SIGKILL of the master and Sentinel's
failover; with ``leader`` durability a client resumes with an erased id as
``since`` before anything new is written; traffic on the new master, with
the messages of the cut repeated under their client_ids. The last line on
stdout is a JSON report, which the test asserts on; progress goes to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import time
import traceback
import uuid
from pathlib import Path
from typing import Any

from ops.local.probes import stream_entries
from tests.support.client import WsClient
from tests.support.http import history
from tests.support.ids import id_key
from tests.support.timeouts import scaled

from ..apps import KEYS, Instances
from ..topology import Node, Topology
from ..traffic import (
    Publisher,
    Subscriber,
    check_account,
    confirmed_count,
    connector,
    stop_publishers,
    wait_confirmed,
)

MASTER, REPLICAS = "127.0.0.2", ("127.0.0.3", "127.0.0.4")
TABLE = "sgcut"
BEFORE = 40  # confirmations with the link intact
CUT_MESSAGES = 3  # new messages each publisher tries once during the cut
AFTER = 40  # new confirmations after the failover
BUDGET_S = 3


def log(msg: str) -> None:
    print(f"[real_loss {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def nft(script: str) -> None:
    subprocess.run(["nft", "-f", "-"], input=script, text=True, check=True, timeout=10)


def cut_replication() -> None:
    """Drop everything between the master and the replicas, both directions."""
    replicas = ", ".join(REPLICAS)
    nft(f"""
add table inet {TABLE}
add chain inet {TABLE} out {{ type filter hook output priority 0; policy accept; }}
add rule inet {TABLE} out ip saddr {MASTER} ip daddr {{ {replicas} }} drop
add rule inet {TABLE} out ip saddr {{ {replicas} }} ip daddr {MASTER} drop
""")


def heal() -> None:
    subprocess.run(["nft", "delete", "table", "inet", TABLE], capture_output=True, timeout=10)


def offsets(topo: Topology) -> dict[str, int]:
    """Replication offset of each live node (master_repl_offset)."""
    out = {}
    for node in topo.nodes:
        if topo.alive(node):
            with node.client() as r:
                out[node.name] = int(r.info("replication")["master_repl_offset"])
    return out


async def resume_with(inst: Any, room: str, since: str) -> dict[str, Any]:
    """A client that last saw ``since`` reconnects and joins with it."""
    client = await WsClient.open(inst.ws_url(user=f"resumer-{uuid.uuid4().hex[:6]}"))
    try:
        replay, joined = await client.join(room, since=since, timeout=scaled(15))
        return {"since": since, "joined": joined, "replayed": [m["id"] for m in replay]}
    finally:
        await client.close()


async def scenario(durability: str, root: Path) -> dict[str, Any]:
    topo = Topology(root / "topology", hosts=(MASTER, *REPLICAS))
    apps = Instances(topo, root / "instances")
    report: dict[str, Any] = {"durability": durability}
    subs: list[Subscriber] = []
    pubs: list[Publisher] = []
    stop = asyncio.Event()
    tasks: list[asyncio.Task[None]] = []
    try:
        topo.start()
        a = apps.start("A", durability, RETRY_BUDGET=str(BUDGET_S))
        b = apps.start("B", durability, RETRY_BUDGET=str(BUDGET_S))
        room = f"loss-{uuid.uuid4().hex[:10]}"
        subs = [Subscriber(f"sub-{i.name}", connector(i, f"sub-{i.name}"), room) for i in (a, b)]
        pubs = [Publisher(f"pub-{i.name}", connector(i, f"pub-{i.name}"), room, reply_timeout=20)
                for i in (a, b)]
        for s in subs:
            await s.start()

        log("traffic with the replication link intact")
        tasks = [asyncio.create_task(p.run(stop), name=p.name) for p in pubs]
        await wait_confirmed(pubs, tasks, BEFORE)
        await stop_publishers(stop, tasks)
        old: Node = topo.master()
        with old.client() as r:
            before_cut = [sid for sid, _f in stream_entries(r, KEYS.log(room))]
        for s in subs:
            await s.wait_for(before_cut[-1])

        log("cutting master <-> replicas")
        offsets_before = offsets(topo)
        cut_replication()
        cut_sent = [p.new_message({"phase": "cut"}) for p in pubs for _ in range(CUT_MESSAGES)]
        owners = {id(m): p for p in pubs for m in p.sent}
        answers: dict[str, dict[str, Any]] = {}

        async def try_cut(p: Publisher) -> None:
            for m in [m for m in cut_sent if owners[id(m)] is p]:
                answers[m.cid] = await p.attempt(m)

        await asyncio.gather(*(try_cut(p) for p in pubs))
        report["cut_answers"] = answers
        published_in_cut = [f["id"] for f in answers.values() if f.get("type") == "published"]
        if durability == "leader" and published_in_cut:
            last = max(published_in_cut, key=id_key)
            for s in subs:
                await s.wait_for(last)
        with old.client() as r:
            accepted = [sid for sid, _f in stream_entries(r, KEYS.log(room)) if sid not in set(before_cut)]
        offsets_after = offsets(topo)
        report["accepted_in_cut"] = accepted
        report["offsets"] = {"before": offsets_before, "after": offsets_after, "master": old.name}
        # The proof of the cut: the replicas hold none of what the master
        # accepted meanwhile, and lag behind its replication offset.
        on_replicas = {}
        for node in topo.nodes:
            if node is not old:
                with node.client() as r:
                    on_replicas[node.name] = [sid for sid, _f in stream_entries(r, KEYS.log(room))
                                              if sid in set(accepted)]
        report["accepted_on_replicas"] = on_replicas
        report["cut_effective"] = not any(on_replicas.values()) and all(
            offsets_after[n.name] < offsets_after[old.name] for n in topo.nodes if n is not old)

        log(f"killing {old.name}; {len(accepted)} entries exist only on it")
        killed_at = time.monotonic()
        topo.kill(old)
        new = await asyncio.to_thread(topo.wait_failover, old, 30.0)
        report["failover_s"] = round(time.monotonic() - killed_at, 2)
        log(f"{new.name} promoted after {report['failover_s']}s")

        # Before anything new reaches the new master: a client that holds
        # the newest id the old master handed out resumes with it.
        held = [i for s in subs for i in s.received if i in set(accepted)]
        if held:
            report["resume_before_writes"] = await resume_with(a, room, max(held, key=id_key))

        log("traffic on the new master; the messages of the cut again, same client_ids")
        for m in cut_sent:
            if not m.ids:
                await owners[id(m)].deliver(m)
        stop = asyncio.Event()
        tasks = [asyncio.create_task(p.run(stop), name=p.name) for p in pubs]
        await wait_confirmed(pubs, tasks, confirmed_count(pubs) + AFTER)
        await stop_publishers(stop, tasks)
        if held:
            report["resume_after_writes"] = await resume_with(b, room, max(held, key=id_key))

        stored = await history(a, room)
        with new.client() as r:
            raw = stream_entries(r, KEYS.log(room))
        final = [m["id"] for m in stored]
        for s in subs:
            await s.wait_for(final[-1])
        report["final_ids"] = final
        report["raw_ids"] = [sid for sid, _f in raw]
        report["received"] = {s.name: s.received for s in subs}
        report["closes"] = {s.name: s.closes for s in subs}
        report["published"] = {m.cid: m.ids for p in pubs for m in p.sent}
        report["erased"] = sorted(set(accepted) - set(report["raw_ids"]), key=id_key)
        if durability == "replica":
            try:
                check_account(stored, raw, pubs, subs)
                report["account_error"] = None
            except AssertionError as exc:
                report["account_error"] = str(exc)
        return report
    finally:
        stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)
        for p in pubs:
            await p.close()
        for s in subs:
            await s.close()
        apps.stop_all()
        topo.stop()
        heal()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--durability", choices=["replica", "leader"], required=True)
    ap.add_argument("--root", type=Path, required=True)
    args = ap.parse_args()
    try:
        report = asyncio.run(scenario(args.durability, args.root))
    except BaseException as exc:  # the test shows this instead of a bare exit code
        report = {"durability": args.durability, "error": f"{exc!r}",
                  "traceback": traceback.format_exc()}
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
