"""Rooms over WebSocket: cross-instance delivery, frame shapes, reserved rooms, bad frames."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest

from tests.support import Closed, Instance, ServerError, new_client_id, open_client
from tests.support.http import history_ids
from tests.support.ids import ID_RE, assert_ids_equal, id_key

MESSAGE_KEYS = {"type", "room", "id", "from", "body", "ts"}

BODIES: list[Any] = [
    "plain text",
    "ünïcödé ✓ 漢字",
    0,
    -17,
    3.25,
    True,
    None,
    [],
    [1, "two", [3], {"four": 4}],
    {},
    {"text": "hello", "nested": {"list": [None, False, 1.5]}, "quote": "\"'\\"},
]


async def test_message_from_b_reaches_member_on_a_with_contract_fields(
    inst_a: Instance, inst_b: Instance, room: str, uid: Callable[[str], str]
) -> None:
    alice, bob = uid("alice"), uid("bob")
    async with await open_client(inst_a, alice) as sub, await open_client(inst_b, bob) as pub:
        assert sub.welcome is not None
        assert sub.welcome["user"] == alice
        assert sub.welcome["instance"] == "A"
        assert sub.welcome["protocol"] == 1
        assert pub.welcome is not None and pub.welcome["instance"] == "B"

        replay, joined = await sub.join(room, since="$")
        assert replay == []
        assert joined["room"] == room
        assert joined["replayed"] == 0
        assert joined["recovered"] is True

        cid = new_client_id()
        before_ms = time.time() * 1000
        published = await pub.publish(room, {"text": "hi"}, cid)
        after_ms = time.time() * 1000
        assert published["type"] == "published"
        assert published["room"] == room
        assert published["client_id"] == cid
        assert published["duplicate"] is False
        assert ID_RE.match(published["id"]), published

        await sub.wait_for_count(room, 1)
        msg = sub.messages[room][0]
        assert set(msg) == MESSAGE_KEYS, f"message frame fields: {sorted(msg)}"
        assert msg["room"] == room
        assert msg["id"] == published["id"]
        assert msg["from"] == bob
        assert msg["body"] == {"text": "hi"}
        assert isinstance(msg["ts"], int) and not isinstance(msg["ts"], bool)
        # Same machine, same clock: the append happened between send and confirm.
        assert before_ms - 1000 <= msg["ts"] <= after_ms + 1000


async def test_any_json_body_round_trips_in_order(
    inst_a: Instance, inst_b: Instance, room: str, uid: Callable[[str], str]
) -> None:
    async with await open_client(inst_a, uid("sub")) as sub, await open_client(inst_b, uid("pub")) as pub:
        await sub.join(room, since="$")
        published = [await pub.publish(room, body, new_client_id()) for body in BODIES]
        await sub.wait_for_count(room, len(BODIES))
        got = sub.messages[room]
        assert [m["body"] for m in got] == BODIES
        assert_ids_equal(sub.ids[room], [p["id"] for p in published])
        assert sorted(sub.ids[room], key=id_key) == sub.ids[room]


async def test_members_on_both_instances_see_the_same_order_as_history(
    inst_a: Instance, inst_b: Instance, room: str, uid: Callable[[str], str]
) -> None:
    subs = [await open_client(inst, uid(f"sub{n}")) for n, inst in enumerate((inst_a, inst_b, inst_a, inst_b))]
    pubs = [await open_client(inst_a, uid("pa")), await open_client(inst_b, uid("pb"))]
    try:
        for sub in subs:
            await sub.join(room, since="$")
        for n in range(40):
            for k, pub in enumerate(pubs):
                await pub.send({"type": "publish", "room": room, "body": {"p": k, "n": n}, "client_id": f"{k}-{n}"})
        for pub in pubs:
            for _ in range(40):
                await pub.expect("published")
        expected = await history_ids(inst_a, room)
        assert len(expected) == 80
        for sub in subs:
            await sub.wait_for_count(room, 80)
            assert_ids_equal(sub.ids[room], expected, f"ids seen by {sub.name}")
    finally:
        for client in subs + pubs:
            await client.close()


async def test_publisher_that_joined_receives_its_own_message(
    inst_a: Instance, room: str, uid: Callable[[str], str]
) -> None:
    async with await open_client(inst_a, uid("self")) as client:
        await client.join(room, since="$")
        published = await client.publish(room, "echo", new_client_id())
        await client.wait_for_id(room, published["id"])
        assert client.ids[room] == [published["id"]]


async def test_after_leave_no_more_messages_of_that_room(
    inst_a: Instance, inst_b: Instance, uid: Callable[[str], str]
) -> None:
    left_room, kept_room = f"leave-{uid('x')}", f"keep-{uid('x')}"
    async with await open_client(inst_a, uid("sub")) as sub, await open_client(inst_a, uid("pub")) as pub:
        await sub.join(left_room, since="$")
        await sub.join(kept_room, since="$")
        first = await pub.publish(left_room, 1)
        await sub.wait_for_id(left_room, first["id"])

        left = await sub.leave(left_room)
        assert left["room"] == left_room

        await pub.publish(left_room, 2)
        # Same publisher, same instance: the kept room's message is notified after it.
        barrier = await pub.publish(kept_room, "barrier")
        await sub.wait_for_id(kept_room, barrier["id"])
        assert sub.ids[left_room] == [first["id"]]


async def test_direct_message_lands_in_the_inbox_room(
    inst_a: Instance, inst_b: Instance, uid: Callable[[str], str]
) -> None:
    alice, bob = uid("alice"), uid("bob")
    inbox = f"@{alice}"
    async with await open_client(inst_a, alice) as a, await open_client(inst_b, bob) as b:
        await a.join(inbox, since="$")
        cid = new_client_id()
        published = await b.direct(alice, {"dm": 1}, cid)
        assert published["room"] == inbox
        assert published["client_id"] == cid
        await a.wait_for_id(inbox, published["id"])
        msg = a.messages[inbox][0]
        assert msg["room"] == inbox
        assert msg["from"] == bob
        assert msg["body"] == {"dm": 1}


async def test_direct_message_to_an_offline_user_waits_in_the_inbox(
    inst_a: Instance, inst_b: Instance, uid: Callable[[str], str]
) -> None:
    dave, bob = uid("dave"), uid("bob")
    async with await open_client(inst_b, bob) as b:
        published = await b.direct(dave, "while you were away")
    async with await open_client(inst_a, dave) as d:
        replay, joined = await d.join(f"@{dave}", since="0")
        assert [m["id"] for m in replay] == [published["id"]]
        assert replay[0]["from"] == bob
        assert joined["replayed"] == 1


async def test_only_the_owner_may_join_an_inbox(
    inst_a: Instance, inst_b: Instance, uid: Callable[[str], str]
) -> None:
    alice, carol = uid("alice"), uid("carol")
    async with await open_client(inst_b, carol) as c:
        with pytest.raises(ServerError) as err:
            await c.join(f"@{alice}", since="0")
        assert err.value.code == "forbidden"
        assert err.value.ref == f"@{alice}"
        assert (await c.ping())["type"] == "pong"
        # carol's own inbox is fine
        _, joined = await c.join(f"@{carol}", since="$")
        assert joined["room"] == f"@{carol}"


async def test_broadcast_reaches_everyone_in_at_all(
    inst_a: Instance, inst_b: Instance, uid: Callable[[str], str]
) -> None:
    alice, bob, carol = uid("alice"), uid("bob"), uid("carol")
    async with (
        await open_client(inst_a, alice) as a,
        await open_client(inst_b, bob) as b,
        await open_client(inst_a, carol) as c,
    ):
        await a.join("@all", since="$")
        await b.join("@all", since="$")
        marker = {"announcement": uid("news")}
        cid = new_client_id()
        published = await c.broadcast(marker, cid)
        assert published["room"] == "@all"
        for client in (a, b):
            await client.wait_for_id("@all", published["id"])
            msg = next(m for m in client.messages["@all"] if m["id"] == published["id"])
            assert msg["room"] == "@all"
            assert msg["from"] == carol
            assert msg["body"] == marker


# -- bad frames: an error frame, and the socket stays usable ----------------------

BAD_FRAMES: list[tuple[str, Any, str]] = [
    ("invalid json", "{not json", "bad_frame"),
    ("json array", "[1, 2]", "bad_frame"),
    ("json string", '"join"', "bad_frame"),
    ("json number", "42", "bad_frame"),
    ("missing type", {"room": "r"}, "bad_frame"),
    ("unknown type", {"type": "subscribe", "room": "r"}, "unknown_type"),
    ("join without room", {"type": "join"}, "bad_frame"),
    ("join with numeric room", {"type": "join", "room": 17}, "bad_frame"),
    ("join with numeric since", {"type": "join", "room": "ok-room", "since": 5}, "bad_frame"),
    ("publish without body", {"type": "publish", "room": "ok-room"}, "bad_frame"),
    ("publish with numeric client_id", {"type": "publish", "room": "ok-room", "body": 1, "client_id": 7}, "bad_frame"),
    ("publish with list room", {"type": "publish", "room": ["a"], "body": 1}, "bad_frame"),
    ("ack without id", {"type": "ack", "room": "ok-room"}, "bad_frame"),
    ("direct without to", {"type": "direct", "body": 1}, "bad_frame"),
    ("leave without room", {"type": "leave"}, "bad_frame"),
]

INVALID_ROOMS = ["has space", "", "x" * 129, "semi;colon", "slash/room", "@", "@has space", "ünï"]


async def _assert_still_open(client: Any) -> None:
    pong = await client.ping()
    assert pong["type"] == "pong"
    assert not client.closed.is_set()


@pytest.mark.parametrize(("label", "frame", "code"), BAD_FRAMES, ids=[b[0] for b in BAD_FRAMES])
async def test_bad_frame_gets_error_and_socket_stays_open(
    inst_a: Instance, uid: Callable[[str], str], label: str, frame: Any, code: str
) -> None:
    async with await open_client(inst_a, uid("bad")) as client:
        if isinstance(frame, str):
            await client.send_text(frame)
        else:
            await client.send(frame)
        error = await client.expect("error", skip=())
        assert error["code"] == code, f"{label}: {error}"
        assert isinstance(error.get("reason"), str)
        await _assert_still_open(client)


async def test_binary_frame_gets_bad_frame_error(inst_a: Instance, uid: Callable[[str], str]) -> None:
    async with await open_client(inst_a, uid("bin")) as client:
        await client.send_bytes(b'{"type":"ping"}')
        error = await client.expect("error", skip=())
        assert error["code"] == "bad_frame"
        await _assert_still_open(client)


@pytest.mark.parametrize("bad_room", INVALID_ROOMS, ids=lambda r: repr(r[:12]))
async def test_invalid_room_name_is_refused(inst_a: Instance, uid: Callable[[str], str], bad_room: str) -> None:
    async with await open_client(inst_a, uid("inv")) as client:
        with pytest.raises(ServerError) as err:
            await client.join(bad_room, since="$")
        assert err.value.code == "invalid_room"
        assert err.value.ref == bad_room
        await client.send({"type": "publish", "room": bad_room, "body": 1})
        error = await client.expect("error", skip=())
        assert error["code"] == "invalid_room"
        assert error.get("ref") == bad_room
        await _assert_still_open(client)


async def test_many_bad_frames_in_a_row_leave_the_socket_usable(
    inst_a: Instance, inst_b: Instance, room: str, uid: Callable[[str], str]
) -> None:
    async with await open_client(inst_a, uid("noisy")) as client, await open_client(inst_b, uid("pub")) as pub:
        for label, frame, _code in BAD_FRAMES:
            if isinstance(frame, str):
                await client.send_text(frame)
            else:
                await client.send(frame)
            error = await client.expect("error", skip=())
            assert error["type"] == "error", label
        await client.join(room, since="$")
        published = await pub.publish(room, "still works")
        await client.wait_for_id(room, published["id"])


# -- limits: rate, frame size, connection count -----------------------------------


@pytest.fixture(scope="module")
def limited(instance_factory: Any) -> Instance:
    return instance_factory.start(
        "L", PUBLISH_RATE="2", PUBLISH_BURST="3", MAX_FRAME_BYTES="4096"
    )


async def test_publishing_faster_than_the_rate_gets_rate_limited(
    limited: Instance, room: str, uid: Callable[[str], str]
) -> None:
    async with await open_client(limited, uid("fast")) as client:
        cids = [new_client_id() for _ in range(12)]
        for cid in cids:
            await client.send({"type": "publish", "room": room, "body": cid, "client_id": cid})
        answers: list[dict[str, Any]] = []
        while len(answers) < len(cids):
            frame = await client.recv_frame()
            if frame.get("type") in ("published", "error"):
                answers.append(frame)
        limited_frames = [f for f in answers if f["type"] == "error"]
        assert limited_frames, "12 publishes at once against a burst of 3 were all accepted"
        assert all(f["code"] == "rate_limited" for f in limited_frames), limited_frames
        assert all(f.get("ref") in {*cids, room} for f in limited_frames), limited_frames
        accepted = [f for f in answers if f["type"] == "published"]
        assert len(accepted) >= 3
        # Only the accepted publishes are stored.
        stored = set(await history_ids(limited, room))
        assert stored == {f["id"] for f in accepted}


async def test_too_large_frame_is_refused(limited: Instance, room: str, uid: Callable[[str], str]) -> None:
    async with await open_client(limited, uid("big")) as client:
        await client.send({"type": "publish", "room": room, "body": "x" * 8000, "client_id": "big-1"})
        try:
            error = await client.expect("error", skip=())
        except Closed as closed:
            # The contract allows closing with 1009 instead of an error frame.
            assert closed.code == 1009
            return
        assert error["code"] == "too_large"
        await _assert_still_open(client)


async def test_connection_over_the_limit_is_closed_with_1013(
    make_instance: Callable[..., Instance], uid: Callable[[str], str]
) -> None:
    small = make_instance("M", MAX_CONNECTIONS="3")
    clients = [await open_client(small, uid(f"c{n}")) for n in range(3)]
    try:
        extra = await open_client(small, uid("extra"), welcome=False)
        try:
            assert await extra.wait_closed() == 1013
        finally:
            await extra.close()
    finally:
        for client in clients:
            await client.close()
