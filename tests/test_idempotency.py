"""Idempotent publishing is per user: a repeat by the same user with the same
client_id in the same room stores nothing new, while another user's use of
that client_id neither suppresses nor reveals it, over the socket and HTTP."""

from __future__ import annotations

from collections.abc import Callable

from tests.support import Instance, open_client
from tests.support.http import history, post_message


async def test_another_users_client_id_in_a_shared_room_is_a_new_message(
    inst_a: Instance, inst_b: Instance, room: str, uid: Callable[[str], str]
) -> None:
    alice, mallory = uid("alice"), uid("mallory")
    cid = f"{alice}-0001"
    async with await open_client(inst_a, mallory) as m, await open_client(inst_b, alice) as a:
        squat = await m.publish(room, "squatted", cid)
        own = await a.publish(room, "mine", cid)
        assert own["duplicate"] is False
        assert own["id"] != squat["id"]
        # Alice's retry finds her own record, Mallory's finds his.
        retry = await a.publish(room, "mine again", cid)
        assert (retry["id"], retry["duplicate"]) == (own["id"], True)
        again = await m.publish(room, "squat again", cid)
        assert (again["id"], again["duplicate"]) == (squat["id"], True)
    stored = await history(inst_a, room)
    assert [(s["id"], s["from"], s["body"]) for s in stored] == [
        (squat["id"], mallory, "squatted"),
        (own["id"], alice, "mine"),
    ]


async def test_a_client_id_planted_in_an_inbox_does_not_suppress_its_owner(
    inst_a: Instance, inst_b: Instance, uid: Callable[[str], str]
) -> None:
    bob, mallory = uid("bob"), uid("mallory")
    inbox = f"@{bob}"
    cid = "bob|c:0001"  # pipes and colons are ordinary client id characters
    async with await open_client(inst_a, mallory) as m, await open_client(inst_b, bob) as b:
        planted = await m.direct(bob, "planted", cid)
        own = await b.publish(inbox, "note to self", cid)
        assert own["duplicate"] is False
        assert own["id"] != planted["id"]
    stored = await history(inst_a, inbox, user=bob)
    assert [(s["id"], s["from"]) for s in stored] == [(planted["id"], mallory), (own["id"], bob)]


async def test_http_records_are_per_user_and_shared_with_the_socket(
    inst_a: Instance, inst_b: Instance, room: str, uid: Callable[[str], str]
) -> None:
    alice, mallory = uid("alice"), uid("mallory")
    cid = f"{alice}-0002"
    squat = await post_message(inst_a, room, "squatted", cid, user=mallory)
    assert squat.status_code == 201, squat.text
    own = await post_message(inst_b, room, "mine", cid, user=alice)
    assert own.status_code == 201, own.text
    assert own.json()["duplicate"] is False
    assert own.json()["id"] != squat.json()["id"]
    retry = await post_message(inst_a, room, "mine", cid, user=alice)
    assert retry.json() == {"id": own.json()["id"], "duplicate": True}
    # The same user's record holds whichever way the retry travels.
    async with await open_client(inst_b, alice) as a:
        over_socket = await a.publish(room, "mine", cid)
    assert (over_socket["id"], over_socket["duplicate"]) == (own.json()["id"], True)
    stored = await history(inst_a, room)
    assert [(s["id"], s["from"]) for s in stored] == [
        (squat.json()["id"], mallory),
        (own.json()["id"], alice),
    ]
