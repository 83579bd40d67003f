"""The subscriber worker process of the load generator.

One process holds a share of the subscribers (``--procs`` of them). It
connects them, tells the orchestrator it is ready, and from ``go`` on
reports once a second (deliveries so far, the last second's latency
histogram, the recent steps' histograms), so the orchestrator can print
progress without waiting for the end. On ``finish`` it closes its sockets
and sends everything it recorded (:func:`_final`).

Pipes are read in a thread with blocking reads: an fd watched by the event
loop may be made non-blocking, which breaks reading a large message.
"""

from __future__ import annotations

import asyncio
import gc
import os
import threading
import time
from collections.abc import Sequence
from typing import Any

from ops.load.client import SubState, Tally, open_many, raise_nofile, use_uvloop
from ops.load.stats import sparse
from ops.load.traffic import Endpoint

_mono = time.monotonic_ns

def _snapshot(tally: Tally, upto_sec: int | None) -> dict[str, Any]:
    """What the worker tells the orchestrator every second (small)."""
    last = {}
    if upto_sec is not None and upto_sec in tally.sec_hist:
        last = sparse(tally.sec_hist[upto_sec])
    recent = sorted(tally.step_hist)[-2:]
    return {
        "delivered": tally.delivered,
        "by_step": dict(tally.step_count),
        "sec": upto_sec,
        "sec_hist": last,
        "step_hist": {k: sparse(tally.step_hist[k]) for k in recent},
    }


def _final(tally: Tally, states: Sequence[SubState], open_errors: list[str]) -> dict[str, Any]:
    return {
        "delivered": tally.delivered,
        "id_mismatch": tally.id_mismatch,
        "ids": tally.ids,
        "step_hist": {k: sparse(h) for k, h in tally.step_hist.items()},
        "step_max": dict(tally.step_max),
        "step_count": dict(tally.step_count),
        "sec_hist": {k: sparse(h) for k, h in tally.sec_hist.items()},
        "open_errors": open_errors,
        "subs": [
            {"name": s.name, "room": s.room, "instance": s.instance, "received": s.received,
             "duplicates": s.duplicates, "disorder": s.disorder, "foreign": s.foreign,
             "errors": s.errors, "closed": s.closed, "close_code": s.close_code,
             "socket": s.socket or s.name,
             # Trailing zero bytes carry nothing (little-endian bitmaps).
             "bits": {p: bytes(b).rstrip(b"\0") for p, b in s.bits.items()}}
            for s in states
        ],
    }


def _states(subs: Sequence[tuple[str, Sequence[str], str]]) -> list[SubState]:
    """One state per (socket, room): a socket in k rooms is k subscribers."""
    out = []
    for name, rooms, url in subs:
        if len(rooms) == 1:
            out.append(SubState(name, rooms[0], url))
        else:
            out.extend(SubState(f"{name}/{room}", room, url, socket=name) for room in rooms)
    return out


def worker_main(conn: Any, spec: dict[str, Any]) -> None:
    """Entry point of one subscriber process (``multiprocessing``, spawn)."""
    raise_nofile()
    use_uvloop()
    asyncio.run(_worker(conn, spec))


async def _worker(conn: Any, spec: dict[str, Any]) -> None:
    loop = asyncio.get_running_loop()
    inbox: asyncio.Queue[Any] = asyncio.Queue()

    def read_commands() -> None:  # blocking reads in a thread, see Workers.listen
        while True:
            try:
                cmd = conn.recv()
            except (EOFError, OSError):
                cmd = ("finish",)
            loop.call_soon_threadsafe(inbox.put_nowait, cmd)
            if cmd[0] == "finish":
                return

    threading.Thread(target=read_commands, daemon=True).start()
    tally = Tally()
    endpoints = {u: Endpoint(u, spec.get("token")) for u in spec["urls"]}
    states = _states(spec["subs"])
    last_report = 0.0

    def progress(ok: int, bad: int) -> None:
        nonlocal last_report
        now = time.monotonic()
        if now - last_report > 0.5 or ok + bad == len(states):
            last_report = now
            conn.send(("connecting", ok, bad))

    conns, errors = await open_many(tally, states, endpoints, client=spec["client"],
                                    concurrency=spec["concurrency"],
                                    timeout=spec["connect_timeout"], on_progress=progress)
    # The sockets and their states live until the end: keep them out of the
    # collector's full scans, which would otherwise pause the receive path.
    gc.collect()
    gc.freeze()
    conn.send(("ready", len(conns), errors[:20], len(errors), os.getpid()))
    ticker: asyncio.Task[None] | None = None
    try:
        while True:
            cmd = await inbox.get()
            if cmd[0] == "go":
                tally.t0 = cmd[1]
                ticker = asyncio.create_task(_tick(conn, tally))
            elif cmd[0] == "finish":
                break
    finally:
        if ticker is not None:
            ticker.cancel()
        for c in conns:
            c.close()
    conn.send(("final", _final(tally, states, errors)))


async def _tick(conn: Any, tally: Tally) -> None:
    """Report once per second, aligned on the run's clock."""
    while True:
        now = _mono()
        sec = (now - tally.t0) // 1_000_000_000
        next_at = tally.t0 + (sec + 1) * 1_000_000_000 + 20_000_000
        await asyncio.sleep(max(0.0, (next_at - now) / 1e9))
        conn.send(("tick", _snapshot(tally, sec)))
