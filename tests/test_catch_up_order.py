"""Leaving or re-joining a room while its catch-up waits for the socket.

A client joins a room with a long history (``since: "0"``) and stops
reading, so the catch-up fills the socket and waits for room in its outbox.
Then, still not reading, it leaves the room or joins it again from ``"$"``.
The contract, checked on the frames in the order the client reads them:
no message of the room after ``left`` until a new ``joined``, and nothing
older than ``joined.last_id`` after ``joined``.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from streams.model import parse_id
from tests.conftest import BASE_ENV
from tests.hostile.rawws import OP_CLOSE, OP_PING, OP_TEXT, RawWebSocket
from tests.support import Instance, async_wait_until
from tests.support.history import fill_room
from tests.hostile.support import metric
from tests.support.timeouts import scaled

pytestmark = pytest.mark.slow

ENTRIES = 11_000  # far more than the kernel's socket buffers and the outbox hold
BODY = 2000
QUIET_S = 1.0  # the catch-up has queued nothing new for this long: it waits for the socket


@pytest.fixture(scope="module")
def narrow(instance_factory: Any) -> Instance:
    return instance_factory.start("N", OUTBOUND_QUEUE="8", SLOW_CONSUMER_TIMEOUT="60",
                                  ROOM_HISTORY_MAXLEN=str(2 * ENTRIES))


@pytest.fixture
def history(redis_client: Any) -> tuple[str, list[str]]:
    room = f"deep-{uuid.uuid4().hex[:10]}"
    return room, fill_room(redis_client, BASE_ENV["KEY_PREFIX"], room, ENTRIES, BODY)


@pytest.fixture
async def stalled(narrow: Instance, history: tuple[str, list[str]]) -> AsyncIterator[RawWebSocket]:
    """A client that joined the deep room from "0" and whose catch-up has
    filled everything between the server and it."""
    room, _ = history
    ws = await RawWebSocket.connect("127.0.0.1", narrow.port, f"/ws?user=deep-{uuid.uuid4().hex[:6]}",
                                    rcvbuf=4096)
    try:
        await ws.expect_json("welcome")
        await ws.send_json({"type": "join", "room": room, "since": "0"})
        await _until_catch_up_waits(narrow)
        yield ws
    finally:
        await ws.aclose()


async def _until_catch_up_waits(inst: Instance) -> None:
    """Poll the instance's count of message frames queued until it stops growing."""
    samples: list[tuple[float, float]] = []

    async def quiet_for_a_while() -> bool:
        now = time.monotonic()
        samples.append((now, await metric(inst, "websocket_messages_sent_total", type="message")))
        quiet = [v for t, v in samples if t >= now - QUIET_S]
        return samples[0][0] <= now - QUIET_S and quiet[-1] > 0 and quiet[0] == quiet[-1]

    await async_wait_until(quiet_for_a_while, 20, interval=0.1,
                           message=lambda: f"the catch-up never stopped queueing: {samples[-5:]}")


async def _read_until(ws: RawWebSocket, done: Callable[[dict[str, Any]], bool],
                      out: list[dict[str, Any]], timeout: float = 30) -> None:
    deadline = time.monotonic() + scaled(timeout)
    while True:
        got = await ws.recv(timeout=max(0.1, deadline - time.monotonic()))
        if got.opcode == OP_PING:
            continue
        assert got.opcode != OP_CLOSE, f"closed with {got.close_code} after {len(out)} frames"
        assert got.opcode == OP_TEXT
        frame = got.json()
        out.append(frame)
        if done(frame):
            return


async def _rejoin_and_publish(ws: RawWebSocket, room: str, frames: list[dict[str, Any]]) -> str:
    """Join again from "$", then publish a marker and read until it arrives live."""
    await ws.send_json({"type": "join", "room": room, "since": "$"})
    await _read_until(ws, lambda f: f["type"] == "joined" and f["room"] == room, frames)
    await ws.send_json({"type": "publish", "room": room, "body": "marker", "client_id": uuid.uuid4().hex})
    await _read_until(ws, lambda f: f["type"] == "published", frames)
    marker = frames[-1]["id"]
    if not any(f["type"] == "message" and f["id"] == marker for f in frames):
        await _read_until(ws, lambda f: f["type"] == "message" and f["id"] == marker, frames)
    return marker


def _replayed_prefix(frames: list[dict[str, Any]], room: str, history: list[str]) -> None:
    ids = [f["id"] for f in frames if f["type"] == "message" and f["room"] == room]
    assert ids, "the catch-up sent nothing before the client acted"
    assert ids == history[:len(ids)], "the catch-up before leaving skipped or repeated entries"


def _after_joined_only_newer(frames: list[dict[str, Any]], room: str, marker: str) -> None:
    joined_at = max(i for i, f in enumerate(frames) if f["type"] == "joined")
    joined = frames[joined_at]
    assert joined["replayed"] == 0
    after = [f["id"] for f in frames[joined_at + 1:] if f["type"] == "message" and f["room"] == room]
    older = [i for i in after if parse_id(i) <= parse_id(joined["last_id"])]
    assert not older, f"{len(older)} messages older than joined.last_id {joined['last_id']} after joined"
    assert after == [marker]
    assert not any(f["type"] == "error" for f in frames)


async def test_no_message_after_left_until_joined_again(
    stalled: RawWebSocket, history: tuple[str, list[str]]
) -> None:
    room, ids = history
    await stalled.send_json({"type": "leave", "room": room})
    frames: list[dict[str, Any]] = []
    await _read_until(stalled, lambda f: f["type"] == "left", frames)
    _replayed_prefix(frames[:-1], room, ids)
    left_at = len(frames) - 1

    marker = await _rejoin_and_publish(stalled, room, frames)
    joined_at = max(i for i, f in enumerate(frames) if f["type"] == "joined")
    between = [f.get("id", f["type"]) for f in frames[left_at + 1:joined_at] if f.get("room") == room]
    assert between == [], f"{len(between)} frames of the room between left and joined: {between[:3]}"
    assert not any(f["type"] == "joined" for f in frames[:left_at]), "the first join never finished"
    _after_joined_only_newer(frames, room, marker)


async def test_rejoin_from_dollar_gets_nothing_older_than_joined(
    stalled: RawWebSocket, history: tuple[str, list[str]]
) -> None:
    room, ids = history
    frames: list[dict[str, Any]] = []
    marker = await _rejoin_and_publish(stalled, room, frames)
    assert [f["type"] for f in frames].count("joined") == 1, "the first join's replay finished after all"
    joined_at = next(i for i, f in enumerate(frames) if f["type"] == "joined")
    _replayed_prefix(frames[:joined_at], room, ids)
    _after_joined_only_newer(frames, room, marker)
