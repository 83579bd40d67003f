"""A socket's publishes are pipelined (app/ws.py): answered in frame order,
stored in frame order per room, and any other frame answered after the
publishes sent before it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tests.support import Instance, new_client_id, open_client
from tests.support.http import history


async def test_back_to_back_publishes_are_answered_and_stored_in_frame_order(
    inst_a: Instance, room: str, uid: Callable[[str], str]
) -> None:
    rooms = [f"{room}-{i}" for i in range(3)]
    cids = [new_client_id() for _ in range(150)]
    frames: list[dict[str, Any]] = [
        {"type": "publish", "room": rooms[i % 3], "body": {"i": i}, "client_id": cid}
        for i, cid in enumerate(cids)
    ]
    # A repeat in the middle is answered in its turn, as a duplicate.
    frames.insert(100, dict(frames[10]))
    async with await open_client(inst_a, uid("fast")) as client:
        for frame in frames:
            await client.send(frame)
        await client.send({"type": "ping"})
        answers = []
        while len(answers) < len(frames) + 1:
            got = await client.recv_frame()
            if got.get("type") in ("published", "error", "pong"):
                answers.append(got)
    assert [a.get("type") for a in answers] == ["published"] * len(frames) + ["pong"], answers
    assert [a["client_id"] for a in answers[:-1]] == [f["client_id"] for f in frames]
    assert [a["duplicate"] for a in answers[:-1]] == [i == 100 for i in range(len(frames))]
    assert answers[100]["id"] == answers[10]["id"]
    for r in rooms:
        stored = await history(inst_a, r)
        mine = [a for a, f in zip(answers, frames) if f["room"] == r and not a["duplicate"]]
        assert [(s["id"], s["body"]) for s in stored] == \
            [(a["id"], f["body"]) for a, f in zip(answers, frames) if f["room"] == r
             and not a["duplicate"]]
        assert len(mine) == 50


async def test_a_refused_frame_behind_publishes_is_answered_in_its_turn(
    inst_a: Instance, room: str, uid: Callable[[str], str]
) -> None:
    """Invalid JSON, an unknown type and an oversized body are refused before
    they are handled; with publishes in flight their errors still come in
    the order of the frames."""
    async with await open_client(inst_a, uid("mixed")) as client:
        sent = []
        for i in range(40):
            await client.send({"type": "publish", "room": room, "body": i,
                               "client_id": new_client_id()})
            sent.append("published")
            if i % 10 == 3:
                await client.send_text("{not json")
                sent.append("error:bad_frame")
            if i % 10 == 6:
                await client.send({"type": "nope"})
                sent.append("error:unknown_type")
        await client.send({"type": "ping"})
        sent.append("pong")
        answers: list[str] = []
        while len(answers) < len(sent):
            got = await client.recv_frame()
            kind = got.get("type")
            if kind in ("published", "pong"):
                answers.append(kind)
            elif kind == "error":
                answers.append(f"error:{got.get('code')}")
    assert answers == sent
