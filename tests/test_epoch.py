"""Room stream epochs and bounded ack cursors, over a real instance on a
private redis-server that the tests may flush (lost and recreated streams)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis.asyncio as aioredis

from streamgate_client import Gap, Message, connect
from tests.client_support import FAST, frozen, take
from tests.conftest import BASE_ENV, InstanceFactory
from tests.support import Instance, RedisServer, ServerError, WsClient, async_wait_until, open_client


@pytest.fixture(scope="module")
def epoch_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("epoch-redis")).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def epoch_factory(epoch_redis: RedisServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[InstanceFactory]:
    factory = InstanceFactory(epoch_redis.url, tmp_path_factory.mktemp("epoch-instances"))
    yield factory
    factory.stop_all()


@pytest.fixture(scope="module")
def lone(epoch_factory: InstanceFactory) -> Instance:
    return epoch_factory.start("E")


@pytest.fixture(scope="module")
def other(epoch_factory: InstanceFactory) -> Instance:
    return epoch_factory.start("F")


@pytest.fixture
async def raw(epoch_redis: RedisServer) -> Any:
    client = aioredis.Redis(host="127.0.0.1", port=epoch_redis.port, decode_responses=True)
    yield client
    await client.aclose()


def key(kind: str, room: str) -> str:
    return f"{BASE_ENV['KEY_PREFIX']}:{{{room}}}:{kind}"


async def publish_n(pub: WsClient, room: str, n: int, tag: str) -> list[str]:
    frames = await pub.publish_many(room, [f"{tag}{k}" for k in range(n)])
    return [f["id"] for f in frames]


def ids(replay: list[dict[str, Any]]) -> list[str]:
    return [m["id"] for m in replay]


async def test_a_stream_lost_and_recreated_is_never_a_recovered_resume(
    lone: Instance, raw: Any, room: str, uid: Callable[[str], str]
) -> None:
    user = uid("sub")
    async with await open_client(lone, uid("pub")) as pub:
        seen = await publish_n(pub, room, 3, "seen")
        async with await open_client(lone, user) as sub:
            replay, joined = await sub.join(room, since="0")
            assert ids(replay) == seen and joined["recovered"] is True
            first_epoch = joined.get("epoch")
        await publish_n(pub, room, 2, "lost")

        assert await raw.flushall() is True  # Redis restarted empty, as far as the room can tell
        (fresh,) = await publish_n(pub, room, 1, "fresh")

        async with await open_client(lone, user) as again:
            # Without the epoch: the id alone is below the new stream's first entry.
            replay, joined = await again.join(room, since=seen[-1])
            assert (joined["recovered"], ids(replay)) == (False, [fresh])
            new_epoch = joined.get("epoch")
            await again.leave(room)

            # With the old epoch: another incarnation, whatever the id says.
            replay, joined = await again.join(room, since=seen[-1], epoch=first_epoch)
            assert (joined["recovered"], ids(replay), joined["epoch"]) == (False, [fresh], new_epoch)
            await again.leave(room)

            # The matching epoch after normal traffic: a clean resume.
            later = await publish_n(pub, room, 4, "later")
            replay, joined = await again.join(room, since=fresh, epoch=new_epoch)
            assert (joined["recovered"], ids(replay), joined["epoch"]) == (True, later, new_epoch)
    assert isinstance(first_epoch, str) and isinstance(new_epoch, str)
    assert first_epoch != new_epoch


async def test_the_old_epoch_is_refused_even_when_its_id_looks_current(
    lone: Instance, raw: Any, room: str, uid: Callable[[str], str]
) -> None:
    """An id of the lost stream that falls inside the new one (a clock that
    went back) is only caught by the epoch."""
    async with await open_client(lone, uid("pub")) as pub:
        old = await publish_n(pub, room, 2, "old")
        async with await open_client(lone, uid("sub")) as sub:
            _, joined = await sub.join(room, since="0")
            old_epoch = joined["epoch"]
            await raw.delete(key("log", room))
            # The new incarnation's entries straddle the old id.
            first = await raw.xadd(key("log", room), {"u": "x", "b": '"early"'}, id="1-0")
            await raw.delete(key("epoch", room))
            await raw.hset(key("epoch", room), mapping={"token": "recreated", "born": first})
            late = await publish_n(pub, room, 1, "late")
            await sub.leave(room)
            replay, joined = await sub.join(room, since=old[-1], epoch=old_epoch)
            assert (joined["recovered"], ids(replay), joined["epoch"]) == (False, [first, *late], "recreated")


async def test_join_of_a_room_without_a_stream_has_no_epoch_until_the_first_message(
    lone: Instance, room: str, uid: Callable[[str], str]
) -> None:
    async with await open_client(lone, uid("sub")) as sub, await open_client(lone, uid("pub")) as pub:
        _, joined = await sub.join(room, since="$")
        assert joined["epoch"] is None and joined["recovered"] is True
        (first,) = await publish_n(pub, room, 1, "m")
        await sub.wait_for_id(room, first)
        await sub.leave(room)
        replay, joined = await sub.join(room, since="0")
        assert ids(replay) == [first] and isinstance(joined["epoch"], str)


async def test_a_stream_older_than_epochs_is_given_one_with_born_unknown(
    lone: Instance, raw: Any, room: str, uid: Callable[[str], str]
) -> None:
    async with await open_client(lone, uid("pub")) as pub:
        sent = await publish_n(pub, room, 3, "m")
        await raw.delete(key("epoch", room))  # as written before epochs existed
        async with await open_client(lone, uid("sub")) as sub:
            replay, joined = await sub.join(room, since=sent[0])
            assert (joined["recovered"], ids(replay)) == (True, sent[1:])
            adopted = joined["epoch"]
            assert isinstance(adopted, str) and adopted
            assert await raw.hgetall(key("epoch", room)) == {"token": adopted, "born": "0-0"}
            more = await publish_n(pub, room, 1, "n")
            await sub.wait_for_id(room, more[0])
            await sub.leave(room)
            replay, joined = await sub.join(room, since=sent[-1], epoch=adopted)
            assert (joined["recovered"], ids(replay), joined["epoch"]) == (True, more, adopted)


async def ack_refused(client: WsClient, room: str, id_: str) -> dict[str, Any]:
    await client.ack(room, id_)
    with pytest.raises(ServerError) as caught:
        await client.ping()  # the error comes first: frames are answered in order
    await client.expect("pong")
    return caught.value.frame


async def test_ack_beyond_the_stream_end_is_refused_and_the_cursor_kept(
    lone: Instance, room: str, uid: Callable[[str], str]
) -> None:
    user = uid("sub")
    async with await open_client(lone, uid("pub")) as pub:
        sent = await publish_n(pub, room, 3, "m")
        async with await open_client(lone, user) as sub:
            await sub.ack(room, sent[1])
            await sub.ping()
            ms = int(sent[-1].split("-")[0])
            for beyond in (f"{ms}-{int(sent[-1].split('-')[1]) + 1}", f"{ms + 1}-0", f"{ms + 10**9}-0"):
                err = await ack_refused(sub, room, beyond)
                assert (err["code"], err["ref"]) == ("bad_frame", room)
            err = await ack_refused(sub, f"never-{room}", "1-0")  # no stream at all
            assert (err["code"], err["ref"]) == ("bad_frame", f"never-{room}")
            await sub.ack(f"never-{room}", "0-0")  # not beyond: nothing to store, no answer
            await sub.ack(room, sent[0])  # behind the cursor: no answer
            await sub.ping()  # the connection stays open, nothing else was answered
        async with await open_client(lone, user) as again:
            replay, joined = await again.join(room)  # from the cursor
            assert (joined["recovered"], ids(replay)) == (True, sent[2:])


async def test_a_cursor_beyond_the_end_is_replaced_by_the_next_ack(
    lone: Instance, raw: Any, room: str, uid: Callable[[str], str]
) -> None:
    """A cursor the stream no longer reaches (its entries were erased by a
    failover, or an earlier version stored a made-up id) must not block
    every later ack."""
    user = uid("sub")
    async with await open_client(lone, uid("pub")) as pub:
        sent = await publish_n(pub, room, 4, "m")
        await raw.hset(key("cursor", room), user, "99999999999999-0")
        async with await open_client(lone, user) as sub:
            replay, joined = await sub.join(room)
            assert (joined["recovered"], replay) == (False, [])
            await sub.ack(room, sent[1])
            await sub.ping()
        async with await open_client(lone, user) as again:
            replay, joined = await again.join(room)
            assert (joined["recovered"], ids(replay)) == (True, sent[2:])


async def test_a_cursor_from_another_incarnation_is_not_a_recovered_resume(
    lone: Instance, raw: Any, room: str, uid: Callable[[str], str]
) -> None:
    user = uid("sub")
    async with await open_client(lone, uid("pub")) as pub:
        old = await publish_n(pub, room, 3, "old")
        async with await open_client(lone, user) as sub:
            await sub.ack(room, old[-1])
            await sub.ping()
        # The stream and its epoch are lost; the cursor survives.
        await raw.delete(key("log", room), key("epoch", room))
        new = await publish_n(pub, room, 2, "new")
        async with await open_client(lone, user) as again:
            replay, joined = await again.join(room)
            assert (joined["recovered"], ids(replay)) == (False, new)
            await again.ack(room, new[0])
            await again.ping()
        async with await open_client(lone, user) as third:
            replay, joined = await third.join(room)
            assert (joined["recovered"], ids(replay)) == (True, new[1:])
        stored = await raw.hget(key("cursor", room), user)
        assert stored == f"{new[0]}/{joined['epoch']}"


async def test_a_cursor_of_another_epoch_is_replaced_even_when_ahead(
    lone: Instance, raw: Any, room: str, uid: Callable[[str], str]
) -> None:
    user = uid("sub")
    async with await open_client(lone, uid("pub")) as pub:
        sent = await publish_n(pub, room, 3, "m")
        # Ahead of what is acked next, but from a lost incarnation.
        await raw.hset(key("cursor", room), user, f"{sent[-1]}/lost-epoch")
        async with await open_client(lone, user) as sub:
            await sub.ack(room, sent[0])
            await sub.ping()
        async with await open_client(lone, user) as again:
            replay, joined = await again.join(room)
            assert (joined["recovered"], ids(replay)) == (True, sent[1:])


@pytest.mark.parametrize("epoch", ["", "a b", "x" * 65, 7])
async def test_join_with_a_malformed_epoch_is_a_bad_frame(
    lone: Instance, room: str, uid: Callable[[str], str], epoch: Any
) -> None:
    async with await open_client(lone, uid("sub")) as sub:
        with pytest.raises(ServerError) as caught:
            await sub.join(room, since="0", epoch=epoch)
        assert (caught.value.frame["code"], caught.value.frame["ref"]) == ("bad_frame", room)
        await sub.ping()


async def test_the_python_client_resumes_with_its_epoch_and_reports_the_loss(
    lone: Instance, other: Instance, raw: Any, room: str, uid: Callable[[str], str]
) -> None:
    async with connect(lone.ws_url(), user=uid("sub"), options=FAST) as sub, \
            connect(other.ws_url(), user=uid("pub"), options=FAST) as pub:
        seen = [await pub.publish(room, f"seen{n}") for n in range(3)]
        joined = await sub.join(room, since="0")
        assert [m.id for m in await take(sub, 3)] == seen  # type: ignore[union-attr]
        first_epoch = sub.epoch(room)
        assert first_epoch is not None and first_epoch == joined.epoch
        with frozen(lone):
            await async_wait_until(lambda: not sub.connected, 15, message="client still thinks it is connected")
            await pub.publish(room, "lost")
            assert await raw.flushall() is True
            fresh = await pub.publish(room, "fresh")
        # The client resumes by itself from (seen[-1], first_epoch).
        gap, message = await take(sub, 2)
        assert gap == Gap(room, seen[-1])
        assert isinstance(message, Message) and message.id == fresh
        new_epoch = sub.epoch(room)
        assert new_epoch not in (None, first_epoch)
        live = await pub.publish(room, "live")
        (item,) = await take(sub, 1)
        assert isinstance(item, Message) and item.id == live

    # An application that kept (position, epoch) resumes cleanly with them.
    async with connect(other.ws_url(), user=uid("sub"), options=FAST) as again:
        later = await pub_once(other, room, uid("pub2"))
        resumed = await again.join(room, since=fresh, epoch=new_epoch)
        assert (resumed.recovered, resumed.replayed, resumed.epoch) == (True, 2, new_epoch)
        assert [m.id for m in await take(again, 2)] == [live, later]  # type: ignore[union-attr]


async def pub_once(inst: Instance, room: str, user: str) -> str:
    async with connect(inst.ws_url(), user=user, options=FAST) as pub:
        return await pub.publish(room, "later")


# -- DURABILITY=replica -------------------------------------------------------------------


@pytest.fixture(scope="module")
def replicated(epoch_redis: RedisServer, epoch_factory: InstanceFactory,
               tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Instance, RedisServer]]:
    """An instance confirming through WAIT, and the replica that acknowledges."""
    replica = epoch_redis.start_replica(tmp_path_factory.mktemp("epoch-replica"))
    inst = epoch_factory.start("R", DURABILITY="replica", MIN_REPLICAS="1", REPLICA_ACK_TIMEOUT_MS="3000")
    yield inst, replica
    replica.stop()


async def test_replica_mode_the_epoch_is_confirmed_with_the_first_entry(
    replicated: tuple[Instance, RedisServer], raw: Any, room: str, uid: Callable[[str], str]
) -> None:
    inst, replica = replicated
    on_replica = aioredis.Redis(host="127.0.0.1", port=replica.port, decode_responses=True)
    try:
        async with await open_client(inst, uid("pub")) as pub, await open_client(inst, uid("sub")) as sub:
            (first,) = await publish_n(pub, room, 1, "a")
            # `published` came after WAIT: the replica holds the epoch record too.
            record = await on_replica.hgetall(key("epoch", room))
            assert record["born"] == first
            replay, joined = await sub.join(room, since="0")
            assert (ids(replay), joined["epoch"]) == ([first], record["token"])
            await sub.leave(room)

            assert await raw.flushall() is True
            (fresh,) = await publish_n(pub, room, 1, "b")
            replay, joined = await sub.join(room, since=first, epoch=record["token"])
            assert (joined["recovered"], ids(replay)) == (False, [fresh])
            assert joined["epoch"] == (await on_replica.hgetall(key("epoch", room)))["token"] != record["token"]
            live = await publish_n(pub, room, 1, "c")
            await sub.wait_for_id(room, live[0])
    finally:
        await on_replica.aclose()
