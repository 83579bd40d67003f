"""History backwards: ``before=$`` for the latest page, ``before=ID`` for older ones.

A chat window opens on the latest N messages and scrolls back; each page is
oldest first, and ``prev`` is the ``before`` of the next older page, null
once nothing older is retained. Walking back with ``prev`` gives every
message exactly once.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from tests.support import Instance, open_client
from tests.support.http import room_path


async def _page(inst: Instance, room: str, **params: str) -> dict[str, Any]:
    async with inst.http() as http:
        response = await http.get(room_path(room, "messages"), params=dict(params, user="reader"))
    assert response.status_code == 200, response.text
    page: dict[str, Any] = response.json()
    return page


async def test_latest_page_then_walking_back_gives_every_message_once(
    inst_a: Instance, inst_b: Instance, room: str, uid: Callable[[str], str]
) -> None:
    async with await open_client(inst_b, uid("w")) as pub:
        ids = [p["id"] for p in await pub.publish_many(room, [{"n": n} for n in range(25)])]

    latest = await _page(inst_a, room, before="$", limit="10")
    assert [m["id"] for m in latest["messages"]] == ids[-10:]
    assert [m["body"] for m in latest["messages"]] == [{"n": n} for n in range(15, 25)]
    assert latest["next"] is None
    assert latest["prev"] == ids[15]

    pages = [latest]
    for _ in range(10):
        prev = pages[-1]["prev"]
        if prev is None:
            break
        pages.append(await _page(inst_a, room, before=prev, limit="10"))
    else:
        raise AssertionError("walking back never reached prev=null")
    assert [len(p["messages"]) for p in pages] == [10, 10, 5]
    walked = [m["id"] for page in reversed(pages) for m in page["messages"]]
    assert walked == ids


async def test_before_an_id_excludes_it_and_the_start_is_empty(
    inst_a: Instance, room: str, uid: Callable[[str], str]
) -> None:
    async with await open_client(inst_a, uid("w")) as pub:
        ids = [p["id"] for p in await pub.publish_many(room, list(range(6)))]
    page = await _page(inst_a, room, before=ids[3], limit="100")
    assert [m["id"] for m in page["messages"]] == ids[:3]
    assert page["prev"] is None
    first = await _page(inst_a, room, before=ids[0])
    assert first["messages"] == [] and first["prev"] is None
    assert (await _page(inst_a, room, before="0-0"))["messages"] == []
    # A page that exactly fits says there is nothing older.
    exact = await _page(inst_a, room, before="$", limit="6")
    assert [m["id"] for m in exact["messages"]] == ids and exact["prev"] is None


async def test_latest_of_an_unknown_room_is_empty(inst_a: Instance, room: str) -> None:
    page = await _page(inst_a, room, before="$")
    assert page == {"messages": [], "next": None, "prev": None}


@pytest.mark.parametrize(
    "params",
    [{"before": "soon"}, {"before": "$", "after": "0"}, {"before": "1-x"}, {"before": ""}],
    ids=["not an id", "both", "bad id", "empty"],
)
async def test_bad_before_is_a_client_error(inst_a: Instance, room: str, params: dict[str, str]) -> None:
    async with inst_a.http() as http:
        response = await http.get(room_path(room, "messages"), params=dict(params, user="reader"))
    assert response.status_code == 400, response.text
    assert response.json()["error"] == "bad_request"
