"""Message ids a client sends (history ``after``, join ``since``, ``ack`` id):
any valid stream id is answered as one, up to the largest Redis can
represent; anything else is a client error. Never ``unavailable``, never a
Redis error in the log."""

from __future__ import annotations

import json
import time
from collections.abc import Callable

import pytest

from tests.support import Instance, new_client_id, open_client
from tests.support.http import room_path
from tests.support.timeouts import scaled

U64 = 2**64 - 1
MAX_ID = f"{U64}-{U64}"
OUT_OF_RANGE = [f"{U64 + 1}-0", f"0-{U64 + 1}", "1" * 21, "-1", "+", "1-2-3", ""]


def _log_size(inst: Instance) -> int:
    return inst.log_path.stat().st_size


def _complaints(inst: Instance, since: int) -> list[str]:
    """Log records since ``since`` at warning level or worse."""
    with inst.log_path.open("rb") as f:
        f.seek(since)
        text = f.read().decode(errors="replace")
    bad = []
    for line in text.splitlines():
        try:
            level = json.loads(line).get("level")
        except ValueError:
            level = None
        if level in ("warning", "error", "critical") or "Traceback" in line:
            bad.append(line)
    return bad


async def _publish_some(inst: Instance, room: str, user: str, n: int) -> list[str]:
    async with await open_client(inst, user) as pub:
        return [p["id"] for p in await pub.publish_many(room, list(range(n)))]


@pytest.mark.parametrize("after", [MAX_ID, str(U64), f"{U64}-0", f"{U64 - 1}-{U64}"])
async def test_history_after_an_id_beyond_the_stream_is_an_empty_page(
    inst_a: Instance, room: str, uid: Callable[[str], str], after: str
) -> None:
    await _publish_some(inst_a, room, uid("w"), 3)
    mark = _log_size(inst_a)
    started = time.monotonic()
    async with inst_a.http() as http:
        response = await http.get(room_path(room, "messages"), params={"user": "reader", "after": after})
    assert response.status_code == 200, response.text
    assert response.json() == {"messages": [], "next": None}
    assert time.monotonic() - started < scaled(2)
    assert _complaints(inst_a, mark) == []


async def test_history_after_an_invalid_id_is_400(inst_a: Instance, room: str) -> None:
    mark = _log_size(inst_a)
    async with inst_a.http() as http:
        for after in OUT_OF_RANGE:
            response = await http.get(room_path(room, "messages"), params={"user": "reader", "after": after})
            assert response.status_code == 400, (after, response.text)
            assert response.json()["error"] == "bad_request", after
    assert _complaints(inst_a, mark) == []


async def test_join_since_the_largest_id_starts_live_and_says_not_recovered(
    inst_a: Instance, inst_b: Instance, room: str, uid: Callable[[str], str]
) -> None:
    await _publish_some(inst_b, room, uid("w"), 3)
    mark = _log_size(inst_a)
    async with await open_client(inst_a, uid("reader")) as reader:
        replay, joined = await reader.join(room, since=MAX_ID)
        assert (replay, joined["replayed"], joined["recovered"]) == ([], 0, False)
        # The room is joined: the next message arrives live.
        async with await open_client(inst_b, uid("w")) as pub:
            live = await pub.publish(room, "live", new_client_id())
        await reader.wait_for_id(room, live["id"])
        assert reader.ids[room] == [live["id"]]
    assert _complaints(inst_a, mark) == []


async def test_out_of_range_since_and_ack_ids_are_bad_frames(
    inst_a: Instance, room: str, uid: Callable[[str], str]
) -> None:
    mark = _log_size(inst_a)
    async with await open_client(inst_a, uid("c")) as client:
        for bad in OUT_OF_RANGE:
            await client.send({"type": "join", "room": room, "since": bad})
            error = await client.expect("error", skip=())
            assert (error["code"], error["ref"]) == ("bad_frame", room), (bad, error)
            await client.send({"type": "ack", "room": room, "id": bad})
            error = await client.expect("error", skip=())
            assert (error["code"], error["ref"]) == ("bad_frame", room), (bad, error)
        assert (await client.ping())["type"] == "pong"
    assert _complaints(inst_a, mark) == []
