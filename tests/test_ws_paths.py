"""Both ways of serving /ws behave the same to a client.

``lean``: streamgate's own protocol class (app/lean.py, what ``python -m
app`` runs); ``asgi``: ``uvicorn app.main:app`` with uvicorn's default
WebSocket class, /ws through the ASGI app (app/asgi_socket.py). The whole
WebSocket-facing suite runs on either (``STREAMGATE_TEST_WS``, see
tests/support/instance.py; ``make test`` runs it both ways); this module runs the
essentials on both in every run.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from tests.support import Instance, ServerError, WsClient, new_client_id, open_client, scaled
from tests.support.http import history_ids
from tests.support.ids import assert_ids_equal
from tests.support.instance import LEAN_WS

FRAME_LIMIT = 4096
ORIGIN = "https://chat.example"
PATHS = {"lean": LEAN_WS, "asgi": "asgi"}


@pytest.fixture(scope="module", params=sorted(PATHS))
def served(request: pytest.FixtureRequest, instance_factory: Any) -> Instance:
    inst: Instance = instance_factory.start(
        f"P{request.param}", ws=PATHS[request.param], MAX_FRAME_BYTES=str(FRAME_LIMIT),
        ALLOWED_ORIGINS=ORIGIN)
    return inst


async def test_publish_fan_out_and_resume(served: Instance, room: str, uid: Callable[[str], str]) -> None:
    """Live delivery, pipelined publishes answered in order, then a resume
    from the middle that gets exactly the rest."""
    sub = await open_client(served, uid("sub"))
    pub = await open_client(served, uid("pub"))
    try:
        await sub.join(room, since="$")
        await pub.join(room, since="$")
        ids = [(await pub.publish(room, {"n": n}, new_client_id()))["id"] for n in range(5)]
        answers = await pub.publish_many(room, [{"n": n} for n in range(5, 105)])
        ids += [a["id"] for a in answers]
        await sub.wait_for_count(room, len(ids), timeout=10)
        assert_ids_equal(sub.ids[room], ids, "subscriber")
        assert_ids_equal(await history_ids(served, room), ids, "history")
    finally:
        await sub.close()
        await pub.close()
    again = await open_client(served, uid("sub"))
    try:
        replay, joined = await again.join(room, since=ids[49])
        assert [f["id"] for f in replay] == ids[50:]
        assert joined["recovered"] is True
    finally:
        await again.close()


async def test_subprotocol_and_token_offers(served: Instance, uid: Callable[[str], str]) -> None:
    """``streamgate.v1`` is chosen when offered; a ``bearer.`` offer alone is
    never echoed back (it would put the token in the response)."""
    url = served.ws_url(user=uid("u"))
    async with connect(url, subprotocols=["streamgate.v1", "bearer.abc"], compression=None) as ws:  # type: ignore[list-item]
        assert ws.subprotocol == "streamgate.v1"
        assert json.loads(await ws.recv())["type"] == "welcome"
    async with connect(url, subprotocols=["bearer.abc"], compression=None) as ws:  # type: ignore[list-item]
        assert ws.subprotocol is None
        assert ws.response is not None
        assert "Sec-WebSocket-Protocol" not in ws.response.headers
        assert json.loads(await ws.recv())["type"] == "welcome"


async def test_refusals_close_with_their_codes(served: Instance, uid: Callable[[str], str]) -> None:
    for url, headers, code in [
        (served.ws_url(user=uid("u")), {"Origin": "https://evil.example"}, 4403),
        (served.ws_url(user="not a valid user"), {"Origin": ORIGIN}, 4401),
    ]:
        async with connect(url, additional_headers=headers, compression=None) as ws:
            with pytest.raises(Exception):
                await asyncio.wait_for(ws.recv(), scaled(5))
            assert ws.close_code == code, (url, headers)


async def test_oversized_frames_get_an_error(served: Instance, uid: Callable[[str], str]) -> None:
    """Over MAX_FRAME_BYTES (but under uvicorn's ws_max_size, past which the
    framer closes with 1009: tests/hostile/test_limits.py): a ``too_large``
    error, and the socket goes on."""
    client = await open_client(served, uid("big"))
    try:
        await client.send_text(json.dumps({"type": "ping", "pad": "x" * FRAME_LIMIT}))
        with pytest.raises(ServerError) as refused:
            await client.ping()
        assert refused.value.code == "too_large"
        await client.ping()
    finally:
        await client.close()


async def test_binary_frames_get_an_error(served: Instance, uid: Callable[[str], str]) -> None:
    client = await open_client(served, uid("bin"))
    try:
        await client.send_bytes(b"\x00\x01")
        assert (await client.expect("error"))["code"] == "bad_frame"
        await client.ping()
    finally:
        await client.close()


async def test_fragmented_text_is_one_frame(served: Instance, uid: Callable[[str], str]) -> None:
    url = served.ws_url(user=uid("frag"))
    async with connect(url, compression=None) as ws:
        assert json.loads(await ws.recv())["type"] == "welcome"
        await ws.send(iter(['{"type":', '"ping"}']))
        assert json.loads(await asyncio.wait_for(ws.recv(), scaled(5)))["type"] == "pong"


async def test_other_websocket_paths_and_http_stay_with_the_app(served: Instance) -> None:
    """Only /ws is served by the protocol class; another WebSocket path goes
    to the ASGI app, which has no such route."""
    with pytest.raises(InvalidStatus) as refused:
        async with connect(served.ws_url().replace("/ws", "/elsewhere"), compression=None):
            pass
    assert refused.value.response.status_code == 403
    async with served.http() as http:
        assert (await http.get("/healthz")).status_code == 200


async def test_peer_close_is_answered(served: Instance, uid: Callable[[str], str]) -> None:
    client = await WsClient.open(served.ws_url(user=uid("bye")))
    await client.ws.close(1000, "bye")
    assert client.ws.close_code == 1000
    async with served.http() as http:
        assert (await http.get("/readyz")).status_code == 200
