"""The tutorial's routes, driven with the tutorial's own frames, on two instances.

``/ws/{user_id}``: broadcast and direct text arrive as the tutorial formats
them. ``/ws/{room}/{user_id}``: the latest 50 without ``last_message_id``,
exactly the missed messages with one, then live ones.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import signal
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from ops.local import procs
from tests.support import Instance, async_wait_until, new_client_id, scaled
from tests.support.http import history_ids, room_path
from tests.support.tokens import make_token


class TutorialClient:
    """Records every text frame the server sends, in order."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.frames: list[str] = []
        self.closed: tuple[int | None, str] | None = None
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        try:
            async for frame in self.ws:
                assert isinstance(frame, str), f"binary frame from the server: {frame!r}"
                self.frames.append(frame)
        except ConnectionClosed:
            pass
        self.closed = (self.ws.close_code, self.ws.close_reason or "")

    def objects(self) -> list[dict[str, Any]]:
        return [json.loads(f) for f in self.frames]

    async def send(self, frame: dict[str, Any] | str) -> None:
        await self.ws.send(frame if isinstance(frame, str) else json.dumps(frame))

    async def wait_for(self, wanted: Callable[[list[str]], bool], what: str) -> None:
        await async_wait_until(lambda: wanted(self.frames), 5.0,
                               message=lambda: f"{what}; got {self.frames[-10:]}")

    async def wait_closed(self) -> tuple[int | None, str]:
        await asyncio.wait_for(asyncio.shield(self._reader), scaled(5.0))
        assert self.closed is not None
        return self.closed


@contextlib.asynccontextmanager
async def tutorial(inst: Instance | int, path: str, **kwargs: Any) -> AsyncIterator[TutorialClient]:
    """A client of ``path`` on an instance, or on a port (nginx)."""
    port = inst if isinstance(inst, int) else inst.port
    ws = await connect(f"ws://127.0.0.1:{port}{path}", open_timeout=scaled(10),
                       ping_interval=None, **kwargs)
    client = TutorialClient(ws)
    try:
        yield client
    finally:
        await ws.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(client._reader, scaled(3))


async def _ready(client: TutorialClient, user: str) -> None:
    """The server reads frames only once the socket's rooms are joined: a
    broadcast that comes back proves this socket is live."""
    await client.send({"type": "broadcast", "message": f"ready {user}"})
    await client.wait_for(lambda fs: f"{user}: ready {user}" in fs, f"{user}'s own broadcast")


async def test_broadcast_and_direct_arrive_as_the_tutorial_formats_them(
    inst_a: Instance, inst_b: Instance, uid: Callable[[str], str]
) -> None:
    alice, bob, carol = uid("alice"), uid("bob"), uid("carol")
    async with tutorial(inst_a, f"/ws/{alice}") as a, tutorial(inst_b, f"/ws/{bob}") as b, \
            tutorial(inst_b, f"/ws/{carol}") as c:
        for client, user in ((a, alice), (b, bob), (c, carol)):
            await _ready(client, user)

        await a.send({"type": "broadcast", "message": "hi"})
        await a.send({"type": "direct", "to": bob, "message": "psst"})
        await a.send({"type": "broadcast", "message": "done"})
        for client in (a, b, c):
            await client.wait_for(lambda fs: f"{alice}: done" in fs, "the last broadcast")

        mine = lambda fs: [f for f in fs if alice in f and "ready" not in f]  # noqa: E731
        assert mine(b.frames) == [f"{alice}: hi", f"[Private from {alice}]: psst", f"{alice}: done"]
        assert mine(a.frames) == [f"{alice}: hi", f"{alice}: done"]
        assert mine(c.frames) == [f"{alice}: hi", f"{alice}: done"]


async def test_native_bodies_read_as_chat_text_and_bad_frames_get_errors(
    inst_a: Instance, uid: Callable[[str], str]
) -> None:
    alice, bob = uid("alice"), uid("bob")
    async with tutorial(inst_a, f"/ws/{alice}") as a:
        await _ready(a, alice)
        async with inst_a.http() as http:
            for body in ({"text": "from the SDK"}, {"n": 1}):
                r = await http.post(room_path(f"@{alice}", "messages"), params={"user": bob},
                                    json={"body": body, "client_id": new_client_id()})
                assert r.status_code == 201, r.text
        await a.send("not json")
        await a.send({"type": "shout", "message": "x"})
        await a.send({"type": "direct", "to": "no spaces allowed", "message": "x"})
        await a.wait_for(lambda fs: len([f for f in fs if '"error"' in f]) == 3, "three errors")
        await a.wait_for(lambda fs: f'[Private from {bob}]: {{"n":1}}' in fs, "the JSON fallback")
        assert f"[Private from {bob}]: from the SDK" in a.frames
        codes = [json.loads(f)["code"] for f in a.frames if '"error"' in f]
        assert codes == ["bad_frame", "unknown_type", "invalid_room"]
        await _ready(a, alice)  # still open and serving


async def _post(http: httpx.AsyncClient, room: str, user: str, text: str) -> str:
    r = await http.post(room_path(room, "messages"), params={"user": user},
                        json={"body": text, "client_id": new_client_id()})
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


async def test_room_route_resumes_with_exactly_the_missed_messages(
    inst_a: Instance, inst_b: Instance, room: str, uid: Callable[[str], str]
) -> None:
    alice, bob = uid("alice"), uid("bob")
    async with inst_b.http() as http:
        posted = [await _post(http, room, bob, f"old {i}") for i in range(60)]

        # No last_message_id: the latest 50, oldest first, then live ones.
        async with tutorial(inst_a, f"/ws/{room}/{alice}") as a:
            await a.wait_for(lambda fs: len(fs) >= 50, "the latest 50")
            await a.send({"message": "alice here"})
            await a.wait_for(lambda fs: len(fs) >= 51, "alice's own message")
            items = a.objects()
            assert [m["id"] for m in items[:50]] == posted[10:]
            assert [m["message"] for m in items[:2]] == ["old 10", "old 11"]
            assert set(items[0]) == {"id", "user_id", "message", "timestamp"}
            assert items[0]["user_id"] == bob and items[0]["timestamp"].endswith("+00:00")
            assert items[50]["message"] == "alice here" and items[50]["user_id"] == alice
            last_seen = items[-1]["id"]

        # Missed while away: posted over HTTP and by a tutorial client on B.
        missed = [await _post(http, room, bob, f"missed {i}") for i in range(3)]
        async with tutorial(inst_b, f"/ws/{room}/{bob}?last_message_id={posted[5]}") as b:
            await b.wait_for(lambda fs: len(fs) >= 58, "bob's replay")
            await b.send(json.dumps({"message": {"text": "while alice was away"}}))
            await b.wait_for(lambda fs: len(fs) >= 59, "bob's own message")
        missed.append(b.objects()[-1]["id"])

        async with tutorial(inst_a, f"/ws/{room}/{alice}?last_message_id={last_seen}") as a:
            await a.wait_for(lambda fs: len(fs) >= 4, "the missed messages")
            await a.send("plain text is a message too")
            await a.wait_for(lambda fs: len(fs) >= 5, "the live message")
            items = a.objects()
        assert [m["id"] for m in items[:4]] == missed
        assert items[3]["message"] == {"text": "while alice was away"}
        assert items[4]["message"] == "plain text is a message too"
        assert [m["id"] for m in items] == (await history_ids(inst_a, room))[-5:]


async def test_room_route_refuses_a_bad_id_and_a_room_the_token_does_not_allow(
    inst_a: Instance, jwt_cluster: tuple[Instance, Instance], room: str, uid: Callable[[str], str]
) -> None:
    async with tutorial(inst_a, f"/ws/{room}/{uid('a')}?last_message_id=nope") as a:
        assert await a.wait_closed() == (1008, "invalid room or last_message_id")
    alice = uid("alice")
    token = make_token(alice, rooms=["public-*"])
    async with tutorial(jwt_cluster[0], f"/ws/{room}/{alice}",
                        additional_headers={"Authorization": f"Bearer {token}"}) as a:
        assert await a.wait_closed() == (1008, "not allowed in this room")


@pytest.mark.parametrize("path", ["/ws/{user}", "/ws/{room}/{user}"])
async def test_jwt_mode_path_user_must_be_the_token_subject(
    jwt_cluster: tuple[Instance, Instance], room: str, uid: Callable[[str], str], path: str
) -> None:
    inst = jwt_cluster[0]
    alice, mallory = uid("alice"), uid("mallory")
    token = make_token(mallory, broadcast=True)
    async with tutorial(inst, path.format(room=room, user=alice),
                        subprotocols=["bearer." + token]) as m:  # type: ignore[list-item]
        code, reason = await m.wait_closed()
        assert code == 4401 and "not the token's" in reason
    async with tutorial(inst, path.format(room=room, user=mallory),
                        subprotocols=["bearer." + token]) as ok:  # type: ignore[list-item]
        if path == "/ws/{user}":
            await _ready(ok, mallory)
        else:
            await ok.send({"message": "mine"})
            await ok.wait_for(lambda fs: len(fs) == 1, "the message")
            assert json.loads(ok.frames[0])["user_id"] == mallory
    async with tutorial(inst, path.format(room=room, user=alice)) as anon:
        code, _ = await anon.wait_closed()
        assert code == 4401


async def test_tutorial_routes_work_through_the_shipped_nginx(
    inst_a: Instance, inst_b: Instance, room: str, uid: Callable[[str], str], tmp_path: Any
) -> None:
    """The WebSocket upgrade reaches the instances for /ws/... paths too."""
    if shutil.which("nginx") is None:
        pytest.skip("nginx is not installed")
    proxy = procs.start_nginx(procs.free_port(), [inst_a.port, inst_b.port], tmp_path / "nginx")
    try:
        alice = uid("alice")
        async with tutorial(proxy.port, f"/ws/{alice}") as a:
            await _ready(a, alice)
        async with tutorial(proxy.port, f"/ws/{room}/{alice}") as r:
            await r.send({"message": "through nginx"})
            await r.wait_for(lambda fs: len(fs) == 1, "the room message")
            assert json.loads(r.frames[0])["message"] == "through nginx"
    finally:
        assert procs.stop(proxy.pid, scaled(5), proxy.started)


async def test_sigterm_closes_tutorial_sockets_with_1012_and_the_instance_exits(
    make_instance: Callable[..., Instance], room: str, uid: Callable[[str], str]
) -> None:
    """The drain treats tutorial sockets like /ws ones: closed with 1012
    ("restarting": reconnect and resume), then the process exits."""
    inst = make_instance("T", DRAIN_GRACE="0.2")
    alice = uid("alice")
    async with tutorial(inst, f"/ws/{alice}") as chat, tutorial(inst, f"/ws/{room}/{alice}") as r:
        await _ready(chat, alice)
        await r.send({"message": "before the drain"})
        await r.wait_for(lambda fs: len(fs) == 1, "the room message")
        inst.signal_stop()
        assert await chat.wait_closed() == (1012, "instance restarting")
        assert await r.wait_closed() == (1012, "instance restarting")
    assert inst.proc is not None
    code = await asyncio.to_thread(inst.proc.wait, scaled(10))
    # uvicorn re-raises the SIGTERM it handled once it has shut down.
    assert code in (0, -signal.SIGTERM), code
    assert "Application shutdown complete" in inst.log_path.read_text(errors="replace")
