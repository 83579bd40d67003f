"""``python -m ops.load.bare``: a bare Python ``websockets`` room server, the
benchmark's yardstick for one big room (``ops.load.bench --ws bare``).

It stores nothing, talks to no Redis, runs no retry, presence or limits: a
message is numbered in memory and handed to ``websockets.broadcast`` for
the room's sockets in this process. What it costs per delivery is what
plain Python asyncio and the ``websockets`` library cost, so streamgate's
deliveries per server CPU-second can be set against it in the same run on
the same cores. It speaks just enough of the protocol (``welcome``,
``join``/``joined``, ``publish``/``published``, ``message``) for the load
generator, which verifies its deliveries as it verifies streamgate's.

One process holds every room: run it as the only instance.
"""

from __future__ import annotations

import argparse
import asyncio
import http
import json
import sys
import time
from collections.abc import Sequence
from typing import Any

from websockets.asyncio.server import Request, Response, ServerConnection, broadcast, serve
from websockets.datastructures import Headers

SUBPROTOCOL = "streamgate.v1"


class Rooms:
    """Members per room and the last id handed out, stream-id shaped."""

    def __init__(self) -> None:
        self.members: dict[str, set[ServerConnection]] = {}
        self.last = (0, -1)

    def next_id(self) -> str:
        ms = time.time_ns() // 1_000_000
        last_ms, seq = self.last
        self.last = (ms, 0) if ms > last_ms else (last_ms, seq + 1)
        return f"{self.last[0]}-{self.last[1]}"

    def last_id(self) -> str:
        return f"{self.last[0]}-{max(self.last[1], 0)}"


def _ready(conn: ServerConnection, request: Request) -> Response | None:
    """Answer the readiness probe over plain HTTP; anything else upgrades."""
    if request.path.split("?", 1)[0] == "/readyz":
        return Response(http.HTTPStatus.OK, "OK", Headers({"Content-Type": "application/json"}),
                        b'{"ready":true}')
    return None


async def _session(conn: ServerConnection, rooms: Rooms) -> None:
    joined: list[str] = []
    await conn.send(json.dumps({"type": "welcome", "instance": "bare"}))
    try:
        async for raw in conn:
            try:
                m: dict[str, Any] = json.loads(raw)
                kind = m["type"]
                room = str(m["room"])
            except (ValueError, KeyError, TypeError):
                await conn.send('{"type":"error","code":"bad_frame"}')
                continue
            if kind == "join":
                rooms.members.setdefault(room, set()).add(conn)
                joined.append(room)
                await conn.send(json.dumps({"type": "joined", "room": room, "last_id": rooms.last_id(),
                                            "replayed": 0, "recovered": True}))
            elif kind == "publish":
                sid = rooms.next_id()
                await conn.send(json.dumps({"type": "published", "room": room, "id": sid,
                                            "client_id": m.get("client_id"), "duplicate": False}))
                broadcast(rooms.members.get(room, ()), json.dumps(
                    {"type": "message", "room": room, "id": sid, "user": "bench",
                     "body": m.get("body")}))
    finally:
        for room in joined:
            rooms.members.get(room, set()).discard(conn)


async def serve_forever(host: str, port: int) -> None:
    rooms = Rooms()
    async with serve(lambda c: _session(c, rooms), host, port, process_request=_ready,
                     subprotocols=[SUBPROTOCOL], compression=None, max_queue=64) as server:
        await server.serve_forever()


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m ops.load.bare", description=__doc__.split("\n\n")[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    a = ap.parse_args(argv)
    try:
        asyncio.run(serve_forever(a.host, a.port))
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
