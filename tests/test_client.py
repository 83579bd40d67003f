"""The Python client SDK (client/python) against real processes.

Its pure modules (ids, frames, the per-room delivery state) are tested in
client/python/tests. These tests run the client against real uvicorn
instances and a real redis-server, injects faults by signalling processes
(SIGKILL, SIGTERM, SIGSTOP), and accounts by id against the room's HTTP
history: every message exactly once, in order, or a Gap where the server
says some were lost.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from streamgate_client import AuthError, Gap, Message, ServerError, connect, parse_id
from tests.client_support import (FAST, assert_no_silent_hole, frozen, gaps, ids, kill, take,
                                  take_through_reconnect, take_until, terminate, urls)
from tests.support import Instance, RedisServer, async_wait_until, scaled
from tests.support.http import history
from tests.support.ids import assert_ids_equal, id_key
from tests.support.tokens import make_token

# ---------------------------------------------------------------------------
# Real processes
# ---------------------------------------------------------------------------


async def test_join_publish_receive_across_two_instances(
    inst_a: Instance, inst_b: Instance, room: str, uid: Callable[[str], str]
) -> None:
    sub_user, pub_user = uid("sub"), uid("pub")
    async with connect(inst_a.ws_url(), user=sub_user, options=FAST) as sub, \
            connect(inst_b.ws_url(), user=pub_user, options=FAST) as pub:
        assert (sub.user, sub.instance, pub.instance) == (sub_user, inst_a.instance_id, inst_b.instance_id)
        first = await sub.join(room, since="$")
        assert first.recovered is True and first.replayed == 0 and first.last_id == "0-0"
        assert (await sub.join(room)).room == room  # joining again is a no-op

        sent = [await pub.publish(room, {"n": n, "big": 2**70}) for n in range(20)]
        got = await take(sub, 20)
        assert ids(got) == sent
        assert all(isinstance(m, Message) and m.room == room and m.sender == pub_user for m in got)
        assert [m.body for m in got] == [{"n": n, "big": 2**70} for n in range(20)]  # type: ignore[union-attr]
        assert all(m.ts == parse_id(m.id)[0] for m in got)  # type: ignore[union-attr]
        assert sub.position(room) == sent[-1]

        await sub.join(f"@{sub_user}", since="$")
        direct_id = await pub.direct(sub_user, "psst")
        (item,) = await take(sub, 1)
        assert isinstance(item, Message) and (item.room, item.id, item.body) == (f"@{sub_user}", direct_id, "psst")

        await sub.leave(room)
        await pub.publish(room, "after leave")
        marker = await pub.direct(sub_user, "marker")
        (item,) = await take(sub, 1)
        assert isinstance(item, Message) and item.id == marker  # nothing from the room it left

        assert_ids_equal(sent, [m["id"] for m in await history(inst_a, room)][:20], "history")


async def test_broadcast_and_refusals(inst_a: Instance, room: str, uid: Callable[[str], str]) -> None:
    async with connect(inst_a.ws_url(), user=uid("caster"), options=FAST) as c:
        await c.join("@all", since="$")
        sent = await c.broadcast({"to": "everyone", "room": room})
        item = await c.receive(timeout=scaled(10))
        while isinstance(item, Message) and item.id != sent:  # other tests broadcast too
            item = await c.receive(timeout=scaled(10))
        assert isinstance(item, Message) and item.room == "@all"
        with pytest.raises(ServerError) as refused:
            await c.join(f"@{uid('someone-else')}")
        assert refused.value.code == "forbidden"
        with pytest.raises(ValueError):
            await c.publish("bad room!", 1)  # checked before sending
        with pytest.raises(ValueError):
            await c.publish(room, "x" * 70_000)  # larger than the server takes
        with pytest.raises(ValueError):
            await c.publish(room, float("nan"))  # not JSON
        assert c.connected  # refusals do not end the connection


async def test_ack_moves_the_cursor_used_by_a_join_without_since(
    inst_a: Instance, inst_b: Instance, room: str, uid: Callable[[str], str]
) -> None:
    user = uid("acker")
    async with connect(inst_b.ws_url(), user=uid("pub"), options=FAST) as pub:
        sent = [await pub.publish(room, n) for n in range(6)]
    async with connect(inst_a.ws_url(), user=user, options=FAST) as c:
        await c.join(room, since="0")
        await take(c, 6)
        await c.ack(room, sent[2])
        await c.join(f"{room}-barrier", since="$")  # answered after the ack was handled
    eager = dataclasses.replace(FAST, ack_batch=1)
    async with connect(inst_b.ws_url(), user=user, options=eager, auto_ack=True) as c:
        replay = await c.join(room)  # from the cursor
        assert replay.replayed == 3
        got = await take(c, 3)
        assert ids(got) == sent[3:]
        # auto_ack: taking the next item acknowledges the previous one, so the
        # last message taken counts as still being handled.
        await c.join(f"{room}-barrier2", since="$")  # answered after those acks were handled
        async with connect(inst_a.ws_url(), user=user, options=FAST) as other:
            assert (await other.join(room)).replayed == 1
            assert ids(await take(other, 1)) == sent[5:]


async def test_slow_application_gets_everything_through_a_small_queue(
    inst_a: Instance, inst_b: Instance, room: str, uid: Callable[[str], str]
) -> None:
    """The reader never blocks on the application: a full queue stalls the
    room, and it is re-subscribed from the last delivered id later."""
    small = dataclasses.replace(FAST, max_queue=8)
    async with connect(inst_a.ws_url(), user=uid("slow"), options=small) as sub, \
            connect(inst_b.ws_url(), user=uid("pub"), options=FAST) as pub:
        await sub.join(room, since="$")
        sent = [await pub.publish(room, n) for n in range(120)]
        # A publish answered while 100+ messages wait: the reader kept going.
        assert await sub.publish(f"{room}-other", "mine")
        got: list[Any] = []
        await take_until(sub, sent[-1], got)
        assert ids(got) == sent and gaps(got) == []


async def test_kill_and_sigterm_while_publishing_every_message_once_in_order(
    make_instance: Callable[..., Instance], room: str, uid: Callable[[str], str]
) -> None:
    a, b, c = make_instance("KA"), make_instance("KB"), make_instance("KC")
    async with connect(urls(a, b, c), user=uid("sub"), options=FAST) as sub, \
            connect(urls(c, b), user=uid("pub"), options=FAST) as pub:
        assert sub.instance == a.instance_id and pub.instance == c.instance_id
        await sub.join(room, since="$")
        published: list[str] = []
        stop = asyncio.Event()

        async def publisher() -> None:
            while not stop.is_set() and len(published) < 20_000:
                published.append(await pub.publish(room, f"m{len(published)}"))

        task = asyncio.create_task(publisher())
        got: list[Any] = []
        try:
            got.extend(await take(sub, 100))
            await kill(a)  # the instance the subscriber is on
            await take_through_reconnect(sub, 2, got)
            got.extend(await take(sub, 200))
            assert sub.connections >= 2 and sub.instance != a.instance_id
            victim = b if sub.instance == b.instance_id else c
            await terminate(victim)  # graceful: 1012, resume elsewhere
            await take_through_reconnect(sub, 3, got)
            got.extend(await take(sub, 200))
            assert sub.connections >= 3
        finally:
            stop.set()
            await asyncio.wait_for(task, scaled(30))
        await take_until(sub, published[-1], got)
        survivor = c if victim is b else b
        stored = await history(survivor, room)
        assert gaps(got) == []
        assert_ids_equal(ids(got), [m["id"] for m in stored], "received vs history")
        assert_ids_equal(published, [m["id"] for m in stored], "published vs history")
        assert [m["body"] for m in stored] == [f"m{n}" for n in range(len(stored))]


BURST = 3000


async def test_publishes_in_flight_during_a_kill_are_stored_once(
    make_instance: Callable[..., Instance], room: str, uid: Callable[[str], str]
) -> None:
    x, y = make_instance("PX"), make_instance("PY")
    async with connect(urls(x, y), user=uid("burst"), options=FAST) as pub:
        assert pub.instance == x.instance_id
        # Enough that the instance, answering a socket's publishes as fast as
        # Redis takes them, is still busy with them when it is killed.
        tasks = [asyncio.create_task(pub.publish(room, f"b{n}")) for n in range(BURST)]
        await async_wait_until(lambda: sum(t.done() for t in tasks) >= 30, 20, interval=0.001)
        # Counted while X is stopped (it can answer nothing more), then
        # killed: once it is gone the client resumes on Y and may have every
        # publish answered before kill() returns.
        os.kill(x.pid, signal.SIGSTOP)
        in_flight = sum(not t.done() for t in tasks)
        await kill(x)  # SIGKILL ends a stopped process too
        returned = await asyncio.wait_for(asyncio.gather(*tasks), scaled(60))
    assert in_flight > 0
    stored = await history(y, room)
    bodies = [m["body"] for m in stored]
    assert sorted(bodies) == sorted(f"b{n}" for n in range(BURST)), "each body stored exactly once"
    by_body = {m["body"]: m["id"] for m in stored}
    assert returned == [by_body[f"b{n}"] for n in range(BURST)]


async def test_a_stored_but_unconfirmed_publish_is_not_stored_again_after_the_kill(
    make_instance: Callable[..., Instance], room: str, uid: Callable[[str], str]
) -> None:
    """X stores every message but can never confirm one: it waits for a
    replica that does not exist. The client's publish is therefore in flight
    with the message already stored when X is killed; the retry on Y with the
    same client_id must return the stored id and store nothing new."""
    x = make_instance("RX", DURABILITY="replica", MIN_REPLICAS="1", REPLICA_ACK_TIMEOUT_MS="1500")
    y = make_instance("RY")
    async with connect(urls(x, y), user=uid("pub"), options=FAST) as pub:
        task = asyncio.create_task(pub.publish(room, "once"))

        async def stored() -> list[dict[str, Any]]:
            return await history(y, room)  # y reads the stream itself, not x's confirmed mark

        first: list[dict[str, Any]] = await async_wait_until(stored, 10)
        assert not task.done()
        await kill(x)
        returned = await asyncio.wait_for(task, scaled(30))
    after = await history(y, room)
    assert [m["body"] for m in after] == ["once"]
    assert returned == first[0]["id"] == after[0]["id"]


async def test_trimmed_history_is_reported_as_a_gap(
    make_instance: Callable[..., Instance], room: str, uid: Callable[[str], str]
) -> None:
    """The client is cut off (its instance frozen) while 300 messages go into
    a room that keeps about 10: on resume it yields Gap, then exactly the
    retained messages after its resume point, then live ones."""
    g = make_instance("GG", ROOM_HISTORY_MAXLEN="10")
    p = make_instance("GP", ROOM_HISTORY_MAXLEN="10")
    async with connect(g.ws_url(), user=uid("sub"), options=FAST) as sub, \
            connect(p.ws_url(), user=uid("pub"), options=FAST) as pub:
        await sub.join(room, since="$")
        before = [await pub.publish(room, f"pre{n}") for n in range(5)]
        got = await take(sub, 5)
        assert ids(got) == before
        with frozen(g):
            await async_wait_until(lambda: not sub.connected, 15, message="client still thinks it is connected")
            for n in range(300):
                await pub.publish(room, f"mid{n}")
        retained = await history(p, room)
        assert len(retained) < 300
        await take_until(sub, retained[-1]["id"], got, timeout=30)
        assert sub.connections >= 2
        assert gaps(got) == [5] and got[5] == Gap(room, before[-1])
        assert_ids_equal(ids(got[6:]), [m["id"] for m in retained if id_key(m["id"]) > id_key(before[-1])])
        live = await pub.publish(room, "live")
        (item,) = await take(sub, 1)
        assert isinstance(item, Message) and item.id == live


async def test_a_live_client_is_told_when_its_instance_lost_trimmed_messages(
    make_instance: Callable[..., Instance], tmp_path: Path, room: str, uid: Callable[[str], str]
) -> None:
    """The client stays connected while its instance is frozen and loses its
    Pub/Sub connection, and the room is trimmed past what the instance had
    handed over. The contract allows a Gap (e.g. after a 4408 and a resume
    with recovered:false), never a silent hole. A private redis-server keeps
    the Pub/Sub kill away from the other tests' instances."""
    with RedisServer(tmp_path / "redis") as private:
        g = make_instance("HG", REDIS_URL=private.url, ROOM_HISTORY_MAXLEN="10")
        p = make_instance("HP", REDIS_URL=private.url, ROOM_HISTORY_MAXLEN="10")
        patient = dataclasses.replace(FAST, ping_interval=scaled(30), ping_timeout=scaled(30))
        try:
            async with connect(g.ws_url(), user=uid("sub"), options=patient) as sub, \
                    connect(p.ws_url(), user=uid("pub"), options=FAST) as pub:
                await sub.join(room, since="$")
                published = [await pub.publish(room, f"pre{n}") for n in range(3)]
                got = await take(sub, 3)
                with frozen(g):
                    private.client().client_kill_filter(_type="pubsub")
                    published += [await pub.publish(room, f"mid{n}") for n in range(300)]
                published.append(await pub.publish(room, "after"))
                await take_until(sub, published[-1], got, timeout=30)
        finally:
            await terminate(g)
            await terminate(p)
    assert_no_silent_hole(got, published)


@pytest.mark.parametrize("transport", ["query", "subprotocol"])
async def test_expired_token_is_refreshed_through_the_provider(
    jwt_cluster: tuple[Instance, Instance], room: str, uid: Callable[[str], str], transport: Any
) -> None:
    ja, jb = jwt_cluster
    user = uid("jwt")
    calls: list[float] = []

    async def provider() -> str:
        calls.append(time.time())
        return make_token(user, ttl=3600)

    expired = make_token(user, ttl=-60)
    options = dataclasses.replace(FAST, token_transport=transport)
    async with connect(urls(ja, jb), token=expired, token_provider=provider, options=options) as c, \
            connect(jb.ws_url(), token=make_token(uid("pub"), ttl=3600), options=FAST) as pub:
        assert len(calls) == 1 and c.user == user
        await c.join(room, since="$")
        sent = await pub.publish(room, "hello")
        (item,) = await take(c, 1)
        assert isinstance(item, Message) and item.id == sent


async def test_unauthorized_without_a_provider_is_fatal(
    jwt_cluster: tuple[Instance, Instance], uid: Callable[[str], str]
) -> None:
    ja, _ = jwt_cluster
    with pytest.raises(AuthError):
        async with connect(ja.ws_url(), token=make_token(uid("late"), ttl=-60), options=FAST):
            pass  # pragma: no cover - never entered

    async def bad_provider() -> str:
        return make_token(uid("late"), ttl=-60)

    with pytest.raises(AuthError):
        async with connect(ja.ws_url(), token_provider=bad_provider, options=FAST):
            pass  # pragma: no cover - never entered


async def test_token_expiry_close_is_resumed_with_a_fresh_token(
    jwt_cluster: tuple[Instance, Instance], room: str, uid: Callable[[str], str]
) -> None:
    """A server that closes with 4401 when the token expires: the client asks
    for a fresh token and resumes without a gap or a duplicate."""
    ja, jb = jwt_cluster
    user = uid("short")
    calls: list[float] = []

    async def provider() -> str:
        calls.append(time.time())
        return make_token(user, ttl=3600)

    # In-band refresh off: this is the path of a client that did not refresh in time.
    no_refresh = dataclasses.replace(FAST, refresh_margin=0)
    async with connect(ja.ws_url(), token=make_token(user, ttl=2), token_provider=provider,
                       options=no_refresh) as c, \
            connect(jb.ws_url(), token=make_token(uid("pub"), ttl=3600), options=FAST) as pub:
        await c.join(room, since="$")
        published: list[str] = []
        stop = asyncio.Event()

        async def publisher() -> None:
            # Paced (about 200/s), so that the room's history (10,000 entries)
            # outlasts the token's lifetime plus the server's leeway.
            while not stop.is_set() and len(published) < 5_000:
                published.append(await pub.publish(room, len(published)))
                await asyncio.sleep(0.005)

        task = asyncio.create_task(publisher())
        try:
            try:
                await async_wait_until(lambda: calls and c.connections >= 2, 15)
            except AssertionError:
                pytest.skip("this server does not close sockets when their token expires")
            at_refresh = len(published)
            await async_wait_until(lambda: len(published) > at_refresh + 50, 10)
        finally:
            stop.set()
            await asyncio.wait_for(task, scaled(30))
        got: list[Any] = []
        await take_until(c, published[-1], got)
    assert gaps(got) == []
    assert_ids_equal(ids(got), published, "received across the token refresh")
