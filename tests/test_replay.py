"""Replay on join: `since`, ack cursors, idempotent publish, trimmed history."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from tests.support import Instance, WsClient, async_wait_until, new_client_id, open_client
from tests.support.http import history, history_ids
from tests.support.ids import assert_ids_equal


async def _publish_n(pub: WsClient, room: str, n: int, tag: str = "m") -> list[str]:
    frames = await pub.publish_many(room, [f"{tag}{k}" for k in range(n)])
    return [f["id"] for f in frames]


@pytest.mark.parametrize("resume_on", ["same", "other"])
async def test_reconnect_with_since_gets_exactly_the_missed_messages_then_live(
    inst_a: Instance, inst_b: Instance, room: str, uid: Callable[[str], str], resume_on: str
) -> None:
    user = uid("sub")
    async with await open_client(inst_b, uid("pub")) as pub:
        async with await open_client(inst_a, user) as first:
            await first.join(room, since="$")
            seen = await _publish_n(pub, room, 5, "before")
            await first.wait_for_count(room, 5)
            assert first.ids[room] == seen
        last = first.ids[room][-1]

        missed = await _publish_n(pub, room, 7, "missed")

        target = inst_a if resume_on == "same" else inst_b
        async with await open_client(target, user) as again:
            replay, joined = await again.join(room, since=last)
            assert [m["id"] for m in replay] == missed
            assert [m["body"] for m in replay] == [f"missed{k}" for k in range(7)]
            assert joined["replayed"] == 7
            assert joined["recovered"] is True

            live = await pub.publish(room, "live", new_client_id())
            await again.wait_for_id(room, live["id"])
            # The reader saw the replay, then `joined`, then exactly one live message.
            assert_ids_equal(again.ids[room], [*missed, live["id"]])
            frames = [f for f in again.log if isinstance(f, dict) and f.get("room") == room]
            assert [f["type"] for f in frames] == ["message"] * 7 + ["joined", "message"]

        assert_ids_equal([*seen, *missed, live["id"]], await history_ids(inst_a, room), "history")


async def test_since_zero_replays_everything_retained(
    inst_a: Instance, inst_b: Instance, room: str, uid: Callable[[str], str]
) -> None:
    async with await open_client(inst_b, uid("pub")) as pub:
        ids = await _publish_n(pub, room, 9)
    async with await open_client(inst_a, uid("late")) as late:
        replay, joined = await late.join(room, since="0")
        assert [m["id"] for m in replay] == ids
        assert all(m["room"] == room and m["type"] == "message" for m in replay)
        assert joined["replayed"] == 9
        assert joined["recovered"] is True


async def test_since_dollar_gives_only_new_messages(
    inst_a: Instance, inst_b: Instance, room: str, uid: Callable[[str], str]
) -> None:
    async with await open_client(inst_b, uid("pub")) as pub:
        await _publish_n(pub, room, 4, "old")
        async with await open_client(inst_a, uid("sub")) as sub:
            replay, joined = await sub.join(room, since="$")
            assert replay == []
            assert joined["replayed"] == 0
            new = await _publish_n(pub, room, 3, "new")
            await sub.wait_for_count(room, 3)
            assert sub.ids[room] == new


async def test_omitted_since_without_cursor_means_dollar(
    inst_a: Instance, inst_b: Instance, room: str, uid: Callable[[str], str]
) -> None:
    async with await open_client(inst_b, uid("pub")) as pub:
        await _publish_n(pub, room, 4, "old")
        async with await open_client(inst_a, uid("fresh")) as sub:
            replay, joined = await sub.join(room)
            assert replay == []
            assert joined["replayed"] == 0
            new = await pub.publish(room, "new")
            await sub.wait_for_id(room, new["id"])
            assert sub.ids[room] == [new["id"]]


async def _replay_without_since(inst: Instance, user: str, room: str) -> list[str]:
    async with await open_client(inst, user) as client:
        replay, joined = await client.join(room)
        assert joined["replayed"] == len(replay)
        return [m["id"] for m in replay]


async def test_omitted_since_resumes_from_the_ack_cursor_on_any_instance(
    inst_a: Instance, inst_b: Instance, room: str, uid: Callable[[str], str]
) -> None:
    user = uid("acker")
    async with await open_client(inst_b, uid("pub")) as pub:
        ids = await _publish_n(pub, room, 10)
    async with await open_client(inst_a, user) as client:
        await client.join(room, since="0")
        await client.ack(room, ids[3])
        # The ack has no reply: the cursor becomes visible when it is stored.
        await client.ping()

    for inst in (inst_b, inst_a):
        await async_wait_until(
            lambda inst=inst: _expect_replay(inst, user, room, ids[4:]),
            timeout=5,
            message=f"join without since on {inst.name} did not resume after the acked id",
        )


async def _expect_replay(inst: Instance, user: str, room: str, expected: list[str]) -> bool:
    return await _replay_without_since(inst, user, room) == expected


async def test_older_ack_never_moves_the_cursor_back(
    inst_a: Instance, inst_b: Instance, room: str, uid: Callable[[str], str]
) -> None:
    user = uid("acker")
    marker_room = f"{room}-marker"
    async with await open_client(inst_b, uid("pub")) as pub:
        ids = await _publish_n(pub, room, 10)
        marker_ids = await _publish_n(pub, marker_room, 3)

    async with await open_client(inst_a, user) as client:
        await client.ack(room, ids[6])
    await async_wait_until(lambda: _expect_replay(inst_b, user, room, ids[7:]), timeout=5)

    async with await open_client(inst_b, user) as client:
        await client.ack(room, ids[2])
        # A later ack on the same connection: once it is visible, the older
        # one was processed before it.
        await client.ack(marker_room, marker_ids[0])
    await async_wait_until(lambda: _expect_replay(inst_a, user, marker_room, marker_ids[1:]), timeout=5)

    assert await _replay_without_since(inst_a, user, room) == ids[7:]
    assert await _replay_without_since(inst_b, user, room) == ids[7:]


async def test_same_client_id_on_two_instances_is_stored_once(
    inst_a: Instance, inst_b: Instance, room: str, uid: Callable[[str], str]
) -> None:
    """One user's retry through another instance (records are per user)."""
    cid = new_client_id()
    publisher = uid("pub")
    async with (
        await open_client(inst_a, uid("sub")) as sub,
        await open_client(inst_a, publisher) as pa,
        await open_client(inst_b, publisher) as pb,
    ):
        await sub.join(room, since="$")
        first = await pa.publish(room, {"once": True}, cid)
        second = await pb.publish(room, {"once": True}, cid)
        assert first["duplicate"] is False
        assert second["duplicate"] is True
        assert second["id"] == first["id"]
        assert second["client_id"] == cid

        barrier = await pb.publish(room, "after", new_client_id())
        await sub.wait_for_id(room, barrier["id"])
        assert sub.ids[room] == [first["id"], barrier["id"]]

    stored = await history(inst_b, room)
    assert [m["id"] for m in stored] == [first["id"], barrier["id"]]
    assert stored[0]["body"] == {"once": True}


async def test_same_client_id_in_another_room_is_a_new_message(
    inst_a: Instance, inst_b: Instance, room: str, uid: Callable[[str], str]
) -> None:
    cid = new_client_id()
    async with await open_client(inst_a, uid("pa")) as pa, await open_client(inst_b, uid("pb")) as pb:
        first = await pa.publish(room, 1, cid)
        other = await pb.publish(f"{room}-other", 1, cid)
        assert other["duplicate"] is False
        assert other["room"] == f"{room}-other"
    assert await history_ids(inst_a, room) == [first["id"]]
    assert await history_ids(inst_a, f"{room}-other") == [other["id"]]


async def test_since_beyond_anything_the_room_had_is_not_recovered(
    inst_a: Instance, inst_b: Instance, room: str, uid: Callable[[str], str]
) -> None:
    async with await open_client(inst_b, uid("pub")) as pub:
        await _publish_n(pub, room, 3)
        async with await open_client(inst_a, uid("future")) as sub:
            replay, joined = await sub.join(room, since="99999999999999-0")
            assert replay == []
            assert joined["replayed"] == 0
            assert joined["recovered"] is False


# -- trimmed history ----------------------------------------------------------------


@pytest.fixture(scope="module")
def trimming(instance_factory: Any) -> Instance:
    """An instance keeping only ~10 entries per room (approximate trimming)."""
    return instance_factory.start("T", ROOM_HISTORY_MAXLEN="10")


async def test_since_before_trimmed_history_is_not_recovered(
    trimming: Instance, room: str, uid: Callable[[str], str]
) -> None:
    async with await open_client(trimming, uid("pub")) as pub:
        ids = await _publish_n(pub, room, 300)
    retained = await history_ids(trimming, room)
    assert len(retained) < 300, "ROOM_HISTORY_MAXLEN=10 did not trim 300 entries at all"
    assert retained == ids[-len(retained):]
    assert ids[1] not in retained

    async with await open_client(trimming, uid("late")) as late:
        replay, joined = await late.join(room, since=ids[1])
        assert joined["recovered"] is False
        assert joined["replayed"] == len(replay)
        # Whatever is still there is given in order, and nothing older than the trim point.
        assert [m["id"] for m in replay] == retained

    # A since that is still inside the retained tail is recovered.
    async with await open_client(trimming, uid("recent")) as recent:
        replay, joined = await recent.join(room, since=retained[-4])
        assert [m["id"] for m in replay] == retained[-3:]
        assert joined["replayed"] == 3
        assert joined["recovered"] is True
