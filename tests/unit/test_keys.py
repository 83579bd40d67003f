"""Key layout: one hash tag per room, channel names invertible, presence members."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.keys import Keys, presence_member, user_of_member

quick = settings(max_examples=200, deadline=None, database=None)

ordinary_rooms = st.from_regex(r"[A-Za-z0-9_.:-]{1,128}", fullmatch=True)
user_ids = st.from_regex(r"[A-Za-z0-9_.:-]{1,64}", fullmatch=True).filter(lambda u: u != "all")
rooms = st.one_of(ordinary_rooms, user_ids.map(lambda u: "@" + u), st.just("@all"))

ROOMS = ["lobby", "a", "team:eng.backend-1_x", "@alice", "@all", "x" * 128, "9-0"]
PREFIXES = ["sg", "sgtest", "app:v2"]


def hash_tag(key: str) -> str:
    """The part of a key Redis Cluster hashes: the first non-empty ``{...}``."""
    start = key.find("{")
    if start == -1:
        return key
    end = key.find("}", start + 1)
    if end == -1 or end == start + 1:
        return key
    return key[start + 1 : end]


def room_keys(keys: Keys, room: str) -> dict[str, str]:
    return {
        "log": keys.log(room),
        "idem": keys.idem(room, "alice", "c:cid-1"),
        "idem-braces": keys.idem(room, "alice", "c:}{odd}{"),
        "idem-pipe": keys.idem(room, "a.b:c-d_e", "c:x|y:z"),
        "cursor": keys.cursor(room),
        "members": keys.members(room),
        "confirmed": keys.confirmed(room),
        "epoch": keys.epoch(room),
        "channel": keys.channel(room),
    }


@pytest.mark.parametrize("prefix", PREFIXES)
@pytest.mark.parametrize("room", ROOMS)
def test_every_room_key_carries_the_room_hash_tag(prefix: str, room: str) -> None:
    for name, key in room_keys(Keys(prefix), room).items():
        assert key.startswith(prefix + ":"), name
        assert "{" + room + "}" in key, name
        assert hash_tag(key) == room, name


@pytest.mark.parametrize("room", ROOMS)
def test_room_keys_are_distinct(room: str) -> None:
    keys = list(room_keys(Keys(), room).values())
    assert len(set(keys)) == len(keys)


def test_default_layout() -> None:
    k = Keys()
    assert k.prefix == "sg"
    assert k.log("lobby") == "sg:{lobby}:log"
    assert k.idem("lobby", "alice", "c:c1") == "sg:{lobby}:idem:alice|c:c1"
    assert k.cursor("lobby") == "sg:{lobby}:cursor"
    assert k.members("lobby") == "sg:{lobby}:members"
    assert k.confirmed("lobby") == "sg:{lobby}:confirmed"
    assert k.epoch("lobby") == "sg:{lobby}:epoch"
    assert k.channel("lobby") == "sg:{lobby}:live"
    assert k.presence() == "sg:presence"
    assert k.canary("i-1") == "sg:canary:i-1"


def test_different_rooms_different_keys() -> None:
    k = Keys()
    assert k.log("a") != k.log("b")
    assert k.log("@alice") != k.log("alice")


@pytest.mark.parametrize("prefix", PREFIXES)
@pytest.mark.parametrize("room", ROOMS)
def test_room_of_channel_inverts_channel(prefix: str, room: str) -> None:
    k = Keys(prefix)
    assert k.room_of_channel(k.channel(room)) == room


@quick
@given(rooms)
def test_room_of_channel_inverts_channel_property(room: str) -> None:
    k = Keys()
    assert k.room_of_channel(k.channel(room)) == room


@pytest.mark.parametrize(
    "channel",
    [
        "sg:canary:i-1",
        "sg:presence",
        "sg:{lobby}:log",
        "sg:{lobby}:cursor",
        "sgtest:{lobby}:live",
        "other:{lobby}:live",
        "{lobby}:live",
        "sg:lobby:live",
        "",
    ],
)
def test_room_of_channel_rejects_other_channels(channel: str) -> None:
    assert Keys("sg").room_of_channel(channel) is None


@pytest.mark.parametrize(
    ("user", "instance"),
    [
        ("alice", "host-1"),
        ("a.b:c-d_e", "host-1234"),
        ("bob", "weird|instance|name"),
        ("x" * 64, ""),
    ],
)
def test_presence_member_split(user: str, instance: str) -> None:
    member = presence_member(user, instance)
    assert member == f"{user}|{instance}"
    assert user_of_member(member) == user


@quick
@given(user_ids, st.text(max_size=40))
def test_presence_member_split_property(user: str, instance: str) -> None:
    assert user_of_member(presence_member(user, instance)) == user


client_ids = st.from_regex(r"[\x21-\x7e]{1,128}", fullmatch=True)


def test_idempotency_records_are_per_sender() -> None:
    k = Keys()
    assert k.idem("lobby", "alice", "c:1") != k.idem("lobby", "mallory", "c:1")
    assert k.idem("@bob", "alice", "c:1") != k.idem("@bob", "bob", "c:1")
    # Pipes and colons in client ids cannot make two senders' records meet.
    assert k.idem("lobby", "a", "b|c") != k.idem("lobby", "a:b", "c")
    assert k.idem("lobby", "a", "c:b|c") != k.idem("lobby", "a", "c:b")


@quick
@given(rooms, user_ids, client_ids)
def test_idempotency_key_splits_back_into_sender_and_client_id(room: str, user: str, cid: str) -> None:
    """The layout is one-to-one: the first ``|`` after ``idem:`` ends the sender."""
    k = Keys()
    key = k.idem(room, user, cid)
    head = f"sg:{{{room}}}:idem:"
    assert key.startswith(head)
    sender, _, rest = key[len(head):].partition("|")
    assert (sender, rest) == (user, cid)
    assert hash_tag(key) == room
