"""Cluster mode: key layout by slot, and which cluster errors are retried."""

from __future__ import annotations

import pytest
from redis import exceptions as rex
from redis.crc import key_slot

from streams.keys import Keys
from streams.retry import is_transient

SHARDED = Keys("sg", presence_buckets=16)


def slot(key: str) -> int:
    return int(key_slot(key.encode()))


@pytest.mark.parametrize("room", ["lobby", "@all", "@alice", "a:b|c", "x{y}z"])
def test_every_key_of_a_room_and_its_channel_share_one_slot(room: str) -> None:
    k = SHARDED
    keys = [k.log(room), k.idem(room, "alice", "c:1"), k.cursor(room), k.members(room),
            k.confirmed(room), k.epoch(room), k.channel(room)]
    assert len({slot(key) for key in keys}) == 1


def test_presence_buckets_spread_and_keep_a_user_in_one() -> None:
    buckets = SHARDED.presence_all()
    assert len(buckets) == 16 and len(set(buckets)) == 16
    assert len({slot(b) for b in buckets}) == 16  # 16 slots, so over every shard of 3
    users = [f"user-{n}" for n in range(500)]
    assert {SHARDED.presence(u) for u in users} == set(buckets)
    assert all(SHARDED.presence(u) == SHARDED.presence(u) for u in users)


def test_one_bucket_keeps_the_single_redis_names() -> None:
    plain = Keys("sg")
    assert plain.presence("anyone") == "sg:presence" and plain.presence_all() == ["sg:presence"]
    assert plain.canary("i1") == "sg:canary:i1"


def test_canary_tag_pins_the_slot_and_not_the_instance() -> None:
    assert slot(SHARDED.canary("i1", "7")) == slot(SHARDED.canary("i2", "7"))
    assert SHARDED.room_of_channel(SHARDED.canary("i1", "7")) is None


@pytest.mark.parametrize("exc", [
    rex.MovedError("3999 127.0.0.1:7001"),
    rex.AskError("3999 127.0.0.1:7001"),
    rex.TryAgainError("TRYAGAIN"),
    rex.ClusterDownError("CLUSTERDOWN The cluster is down"),
    rex.SlotNotCoveredError("slot 5 not covered"),
    rex.ResponseError("MOVED 3999 127.0.0.1:7001"),
    rex.ResponseError("TRYAGAIN Multiple keys request during rehashing of slot"),
    rex.ConnectionError("refused"),
])
def test_cluster_failover_errors_are_retried(exc: BaseException) -> None:
    assert is_transient(exc)


def test_a_refusal_is_not_retried() -> None:
    assert not is_transient(rex.ResponseError("NOPERM this user has no permissions"))
    assert not is_transient(rex.ResponseError("CROSSSLOT Keys in request don't hash to the same slot"))
