"""``python -m ops.load.membench``: what sockets that never read cost an instance.

One instance on a private Redis (cores as in ``ops.load.bench``), rooms of
``--entries`` x ``--body`` bytes written straight into their streams. Each
client connects with a small receive buffer and an internet-sized MSS (so
that the kernel, which buffers a few MB per socket on loopback's 64 KB MSS,
holds little and the instance's own buffers are what is measured), joins its
rooms with ``since`` and never reads again.

1. ``one``: one socket joins ``--rooms`` rooms from ``"0"``.
2. ``many``: ``--sockets`` sockets each join ``--many-rooms`` rooms, each
   from its own point in the history, so that no two share a page (the
   worst case; sockets replaying the same stretch share their pages).

For each: the instance's RSS before (after a warm-up replay by a reading
client), at its peak and once the catch-up has stopped queueing (no new
message frames queued for ``--quiet`` seconds), against the documented
bound per socket (see docs/design.md): ``OUTBOUND_BYTES`` + 64 KiB transport
slice + 64 KiB high-water mark + per-connection overhead.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import re
import socket
import struct
import sys
import time
import urllib.request
import uuid
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import redis

from ops.load import loadtest
from ops.local import procs
from ops.load.bench import Stack, _cores
from ops.load.client import raise_nofile
from streams.keys import Keys

MSS = 1460
RCVBUF = 4096
SLICE = 64 * 1024
HIGH_WATER = 64 * 1024
IDLE_KIB = 48  # an idle connection (the `idle` phase of docs/benchmarks.md: 39-48 KiB)


def rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def queued_messages(url: str) -> float:
    """Message frames the instance has queued for its sockets (a counter)."""
    with urllib.request.urlopen(f"{url}/metrics", timeout=10) as r:
        text = r.read().decode()
    m = re.search(r'^websocket_messages_sent_total\{[^}]*type="message"[^}]*\} (\S+)$', text, re.M)
    return float(m.group(1)) if m else 0.0


def fill(client: redis.Redis, prefix: str, room: str, entries: int, body: int) -> list[str]:
    key = Keys(prefix).log(room)
    pad = "x" * max(0, body - 20)
    ids: list[str] = []
    for start in range(0, entries, 1000):
        pipe = client.pipeline(transaction=False)
        for n in range(start, min(entries, start + 1000)):
            pipe.xadd(key, {"u": "membench", "b": json.dumps({"n": n, "pad": pad})})
        ids.extend(v.decode() for v in pipe.execute())
    return ids


def _text_frame(obj: dict[str, Any]) -> bytes:
    data = json.dumps(obj).encode()
    n = len(data)
    head = bytes([0x81]) + (bytes([0x80 | n]) if n < 126 else bytes([0x80 | 126]) + struct.pack("!H", n))
    return head + b"\0\0\0\0" + data  # a zero mask leaves the payload as it is


class Stalled:
    """A WebSocket client that joins, then never reads."""

    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self.writer = writer

    @classmethod
    async def connect(cls, port: int, user: str) -> Stalled:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RCVBUF)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG, MSS)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
        reader, writer = await asyncio.open_connection(sock=sock, limit=2**16)
        key = base64.b64encode(os.urandom(16)).decode()
        writer.write((f"GET /ws?user={user} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                      "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                      f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30)
        if b" 101 " not in head.split(b"\r\n", 1)[0]:
            raise RuntimeError(f"handshake refused: {head[:80]!r}")
        return cls(writer)

    async def join(self, room: str, since: str) -> None:
        self.writer.write(_text_frame({"type": "join", "room": room, "since": since}))
        await self.writer.drain()

    def close(self) -> None:
        self.writer.transport.abort()


async def _warm_up(port: int, room: str, entries: int) -> None:
    """A client that reads a whole replay, so the baseline includes what any replay allocates once."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=2**20)
    key = base64.b64encode(os.urandom(16)).decode()
    writer.write((f"GET /ws?user=warm-{uuid.uuid4().hex[:6]} HTTP/1.1\r\nHost: x\r\n"
                  "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                  f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
    await reader.readuntil(b"\r\n\r\n")
    writer.write(_text_frame({"type": "join", "room": room, "since": "0"}))
    got = 0
    async with asyncio.timeout(120):
        while True:
            b0, b1 = await reader.readexactly(2)
            n = b1 & 0x7F
            if n == 126:
                n = struct.unpack("!H", await reader.readexactly(2))[0]
            elif n == 127:
                n = struct.unpack("!Q", await reader.readexactly(8))[0]
            data = await reader.readexactly(n)
            if b'"type":"joined"' in data:
                break
            got += b'"type":"message"' in data
    writer.transport.abort()
    if got != entries:
        raise RuntimeError(f"warm-up replayed {got} of {entries}")


async def _settle(url: str, pid: int, quiet_s: float, timeout_s: float) -> dict[str, Any]:
    """Sample RSS until the instance has queued nothing new for ``quiet_s``."""
    peak = 0
    samples: list[tuple[float, float]] = []
    t0 = time.monotonic()
    while True:
        now = time.monotonic()
        peak = max(peak, rss(pid))
        samples.append((now, queued_messages(url)))
        recent = [v for t, v in samples if t >= now - quiet_s]
        if now - t0 >= quiet_s and recent[0] == recent[-1]:
            break
        if now - t0 > timeout_s:
            raise RuntimeError(f"the catch-up did not stop within {timeout_s} s")
        await asyncio.sleep(0.2)
    return {"peak_rss": max(peak, rss(pid)), "settled_rss": rss(pid), "queued": samples[-1][1],
            "settle_seconds": round(time.monotonic() - t0, 1)}


async def _phase(stack: Stack, room_ids: dict[str, list[str]], sockets: int, rooms: list[str],
                 spread: bool, quiet_s: float, outbound_bytes: int) -> dict[str, Any]:
    url, port, pid = stack.urls[0], stack.apps[0].port, stack.apps[0].pid
    first = rooms[0]
    await _warm_up(port, first, len(room_ids[first]))
    await asyncio.sleep(1.0)  # let the warm-up's socket be released
    base_rss, base_queued = rss(pid), queued_messages(url)
    clients: list[Stalled] = []
    requested = 0
    t0 = time.monotonic()
    try:
        for i in range(sockets):
            c = await Stalled.connect(port, f"stalled-{i}")
            clients.append(c)
            for room in rooms:
                ids = room_ids[room]
                # Spread: each socket from its own point in the first half of the history.
                start = (i * 7) % (len(ids) // 2) + 1 if spread else 0
                await c.join(room, ids[start - 1] if start else "0")
                requested += len(ids) - start
        connect_s = time.monotonic() - t0
        settled = await _settle(url, pid, quiet_s, timeout_s=600)
    finally:
        for c in clients:
            c.close()
    per_socket_bound = outbound_bytes + SLICE + HIGH_WATER + IDLE_KIB * 1024
    return {
        "sockets": sockets, "rooms_each": len(rooms), "since": "spread" if spread else "0",
        "outbound_bytes": outbound_bytes,
        "connect_seconds": round(connect_s, 1), "settle_seconds": settled["settle_seconds"],
        "entries_requested": requested,
        "entries_queued": int(settled["queued"] - base_queued),
        "rss_mib_before": round(base_rss / 2**20, 1),
        "growth_mib_peak": round((settled["peak_rss"] - base_rss) / 2**20, 2),
        "growth_mib_settled": round((settled["settled_rss"] - base_rss) / 2**20, 2),
        "growth_kib_per_socket_peak": round((settled["peak_rss"] - base_rss) / 1024 / sockets, 1),
        "bound_kib_per_socket": round(per_socket_bound / 1024, 1),
        "bound_mib": round(per_socket_bound * sockets / 2**20 + 4, 2),  # + shared page cache
    }


def run(a: argparse.Namespace) -> dict[str, Any]:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    out_dir = Path(a.out) / f"mem-{stamp}"
    out_dir.mkdir(parents=True, exist_ok=True)
    raise_nofile(a.sockets + 1000)
    server_cores, other_cores = _cores()
    if other_cores:
        os.sched_setaffinity(0, set(other_cores))
    prefix = f"membench-{uuid.uuid4().hex[:6]}"
    # uvicorn's keepalive off (its CLI default closes a socket that answers no
    # ping within 40 s, and these never read): the sockets stay, as they would
    # for a client that still answers pings but reads slower than it is fed.
    env = {"UVICORN_WS_PING_INTERVAL": "0",
           "KEY_PREFIX": prefix, "OUTBOUND_BYTES": str(a.outbound_bytes),
           "SLOW_CONSUMER_TIMEOUT": "3600", "MAX_JOINS": "100",
           "ROOM_HISTORY_MAXLEN": str(a.entries * 2)}
    stack = Stack(out_dir / "procs", server_cores, other_cores, Path(a.app_cwd), env)
    results: dict[str, Any] = {"started": stamp, "entries": a.entries, "body": a.body,
                               "mss": MSS, "rcvbuf": RCVBUF, "phases": {}}
    try:
        stack.start_redis()
        assert stack.redis is not None
        client = redis.Redis(host="127.0.0.1", port=stack.redis.port)
        names = [f"deep-{k}" for k in range(max(a.rooms, a.many_rooms))]
        room_ids = {r: fill(client, prefix, r, a.entries, a.body) for r in names}
        client.close()
        for phase in a.phases.split(","):
            stack.start_apps(a.ws, n=1)
            try:
                if phase == "one":
                    r = asyncio.run(_phase(stack, room_ids, 1, names[:a.rooms], False, a.quiet,
                                           a.outbound_bytes))
                elif phase == "many":
                    r = asyncio.run(_phase(stack, room_ids, a.sockets, names[:a.many_rooms], True,
                                           a.quiet, a.outbound_bytes))
                else:
                    raise SystemExit(f"unknown phase {phase!r}")
            finally:
                stack.stop_apps()
            results["phases"][phase] = r
            print(f"  {phase}: {json.dumps(r)}", flush=True)
    finally:
        stack.stop()
    (out_dir / "summary.json").write_text(json.dumps(results, indent=1) + "\n")
    print(f"membench: results in {out_dir}", flush=True)
    return results


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m ops.load.membench", description=__doc__.split("\n")[0])
    ap.add_argument("--phases", default="one,many")
    ap.add_argument("--ws", default="lean")
    ap.add_argument("--entries", type=int, default=10_000)
    ap.add_argument("--body", type=int, default=2000)
    ap.add_argument("--rooms", type=int, default=5)
    ap.add_argument("--sockets", type=int, default=1000)
    ap.add_argument("--many-rooms", type=int, default=2)
    ap.add_argument("--outbound-bytes", type=int, default=2**20)
    ap.add_argument("--quiet", type=float, default=3.0, help="seconds without new frames queued")
    ap.add_argument("--app-cwd", default=str(procs.REPO_ROOT),
                    help="run the instance from this checkout (to measure a change)")
    ap.add_argument("--out", default=str(loadtest.RESULTS_DIR))
    return ap.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    run(parse_args(argv))
    return 0


if __name__ == "__main__":
    sys.exit(main())
