"""The Python client's parity features against real instances.

- In-band token refresh: a short token is renewed through the token
  callback before it expires; the connection, its rooms and its positions
  stay (one connection, no replay) and messages keep flowing.
- Connection-state events: connecting, connected, disconnected with the
  close code, resumed with what the rejoin replayed, and closed.
- Presence, members and history (forward and backward) over HTTP.
- The token travels in ``Sec-WebSocket-Protocol`` by default: behind the
  shipped nginx, neither its access log nor the instance's log holds it.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from ops.local import procs
from streamgate_client import (
    Connected,
    ConnectionEvent,
    Connecting,
    Disconnected,
    Message,
    Refreshed,
    Resumed,
    ServerError,
    State,
    connect,
)
from tests.client_support import FAST, ids, take, terminate, urls
from tests.support import Instance, async_wait_until, scaled
from tests.support.http import history_ids
from tests.support.programs import require
from tests.support.tokens import SECRET, make_token

LEEWAY_S = 5  # the server's clock leeway for the expiry close


async def test_a_short_token_is_refreshed_in_band_without_a_reconnect(
    jwt_cluster: tuple[Instance, Instance], room: str, uid: Callable[[str], str]
) -> None:
    ja, jb = jwt_cluster
    user = uid("fresh")
    first_exp = int(time.time()) + 3
    calls: list[float] = []
    events: list[ConnectionEvent] = []

    async def provider() -> str:
        calls.append(time.time())
        return make_token(user, ttl=3600)

    async with connect(ja.ws_url(), token=make_token(user, ttl=first_exp - time.time()),
                       token_provider=provider, options=FAST, on_state=events.append) as c, \
            connect(jb.ws_url(), token=make_token(uid("pub"), ttl=3600), options=FAST) as pub:
        await c.join(room, since="$")
        sent: list[str] = []
        deadline = first_exp + LEEWAY_S + scaled(1.5)
        while time.time() < deadline:  # publish and receive across the old expiry
            sent.append(await pub.publish(room, len(sent)))
            (item,) = await take(c, 1)
            assert isinstance(item, Message) and item.id == sent[-1]
            await asyncio.sleep(0.05)
        assert calls and calls[0] < first_exp  # asked before the old token expired
        refreshed = [e for e in events if isinstance(e, Refreshed)]
        assert refreshed and refreshed[0].exp is not None and refreshed[0].exp > first_exp + 3000
        assert c.connections == 1 and c.state is State.CONNECTED
        assert not any(isinstance(e, Disconnected) for e in events)
        assert sent == await history_ids(ja, room, user=None, token=make_token(user))


async def test_state_events_through_a_restart_and_a_close(
    make_instance: Callable[..., Instance], inst_b: Instance, room: str, uid: Callable[[str], str]
) -> None:
    doomed = make_instance("EV")
    events: list[ConnectionEvent] = []
    other = f"{room}-2"
    client = connect(urls(doomed, inst_b), user=uid("ev"), options=FAST, on_state=events.append)
    async with client as c, connect(inst_b.ws_url(), user=uid("pub"), options=FAST) as pub:
        assert [type(e) for e in events] == [Connecting, Connected]
        assert events[0] == Connecting(doomed.ws_url(), 1)
        assert isinstance(events[1], Connected) and events[1].reconnect is False
        assert c.state is State.CONNECTED
        await c.join(room, since="$")
        await c.join(other, since="$")
        before = [await pub.publish(room, n) for n in range(3)]
        got = await take(c, 3)
        assert ids(got) == before

        await terminate(doomed)  # drains: closes with 1012
        missed = [await pub.publish(room, n) for n in range(5)]
        await async_wait_until(lambda: any(isinstance(e, Resumed) for e in events), timeout=20)
        got = await take(c, 5)
        assert ids(got) == missed
    kinds = [type(e) for e in events]
    assert kinds[:2] == [Connecting, Connected]
    down = events[2]
    assert isinstance(down, Disconnected) and down.code == 1012 and down.reconnecting
    resumed = next(e for e in events if isinstance(e, Resumed))
    assert resumed.url == inst_b.ws_url() and resumed.rooms == 2 and resumed.lost == 0
    assert resumed.replayed >= 0  # missed ones may be replayed or arrive live
    again = next(e for e in events[3:] if isinstance(e, Connected))
    assert again.reconnect is True and again.instance == inst_b.instance_id
    last = events[-1]
    assert isinstance(last, Disconnected) and last.code == 1000 and not last.reconnecting
    assert client.state is State.CLOSED


async def test_presence_members_and_history_pages(
    inst_a: Instance, room: str, uid: Callable[[str], str]
) -> None:
    user = uid("who")
    async with connect(inst_a.ws_url(), user=user, options=FAST) as c:
        await c.join(room, since="$")
        sent = [await c.publish(room, {"n": n}) for n in range(12)]
        assert user in await c.presence()

        async def listed() -> bool:  # presence is written right after `joined`
            return user in await c.members(room)

        await async_wait_until(listed, timeout=5, message="not in the room's members")

        latest = await c.history(room, before="$", limit=5)
        assert [m.id for m in latest.messages] == sent[-5:]
        assert latest.messages[-1].body == {"n": 11} and latest.messages[-1].sender == user
        assert latest.next is None and latest.prev == sent[7]
        walked = [m.id for m in latest.messages]
        page = latest
        for _ in range(5):
            if page.prev is None:
                break
            page = await c.history(room, before=page.prev, limit=5)
            walked = [m.id for m in page.messages] + walked
        assert walked == sent
        forward = await c.history(room, after=sent[3], limit=4)
        assert [m.id for m in forward.messages] == sent[4:8] and forward.next == sent[7]
        with pytest.raises(ValueError):
            await c.history(room, after="0", before="$")


async def test_history_and_presence_with_a_token(
    jwt_cluster: tuple[Instance, Instance], room: str, uid: Callable[[str], str]
) -> None:
    ja, _ = jwt_cluster
    user = uid("tok")
    async with connect(ja.ws_url(), token=make_token(user, rooms=["room-*"]), options=FAST) as c:
        await c.join(room, since="$")
        sent = await c.publish(room, "hi")
        assert [m.id for m in (await c.history(room, before="$")).messages] == [sent]
        assert user in await c.presence()
        with pytest.raises(ServerError) as err:
            await c.history("elsewhere", before="$")
        assert err.value.code == "forbidden"


@pytest.fixture
def behind_nginx(make_instance: Callable[..., Instance], tmp_path: Path) -> Iterator[tuple[Instance, str, Path]]:
    require("nginx")
    inst = make_instance("SG", AUTH_MODE="jwt", JWT_SECRET=SECRET)
    port = procs.free_port()
    proxy = procs.start_nginx(port, [inst.port], tmp_path / "nginx")
    try:
        yield inst, f"ws://127.0.0.1:{port}/ws", tmp_path / "nginx" / "access.log"
    finally:
        procs.stop(proxy.pid, scaled(5), proxy.started)


async def test_the_sdk_token_stays_out_of_the_logs(behind_nginx: tuple[Instance, str, Path]) -> None:
    inst, url, access_log = behind_nginx
    user = f"u-{uuid.uuid4().hex[:8]}"
    token = make_token(user)
    async with connect(url, token=token, options=FAST) as c:
        await c.join("lobby-log", since="$")
        await c.publish("lobby-log", "hi")
        await c.history("lobby-log", before="$")

    def logged() -> bool:
        text = access_log.read_text() if access_log.exists() else ""
        return "GET /ws " in text and "GET /rooms/lobby-log/messages " in text

    await async_wait_until(logged, timeout=5, message="nginx did not log the requests")
    for text in (access_log.read_text(), inst.log_path.read_text()):
        for part in token.split("."):
            assert part not in text
