"""The per-socket feed as tables: one input, what it answers, the phase after."""

from __future__ import annotations

from app.feed import Feed, FeedPhase, Joined
from streams.model import MAX, ZERO, Envelope, StreamId


def sid(n: int) -> StreamId:
    return StreamId(n, 0)


def env(n: int) -> Envelope:
    return Envelope("r", f"{n}-0", "", "u", "null")


def test_join_without_replay_is_live_at_the_head_and_owes_joined() -> None:
    feed = Feed("r", None)
    assert feed.attached(sid(7)) == Joined("r", 0, True, sid(7), "")
    assert feed.live and feed.wants(sid(8)) and not feed.wants(sid(7))


def test_join_with_replay_catches_up_then_owes_joined_with_the_count() -> None:
    feed = Feed("r", sid(2), recovered=True, epoch="E")
    assert feed.attached(sid(9)) is None and feed.phase is FeedPhase.CATCHING_UP
    assert not feed.wants(sid(10))  # live hand-overs wait until caught up
    assert feed.caught_up(sid(9)) is False
    assert feed.gap(ZERO, "E") is False
    assert [e.key for e in feed.fresh([env(1), env(2), env(3)])] == [sid(3)]
    feed.page_queued(sid(9), 7)
    assert feed.caught_up(sid(9)) == Joined("r", 7, True, sid(9), "E")
    assert feed.caught_up(sid(9)) is False  # joined is owed once


def test_a_full_outbox_turns_a_live_feed_into_a_catch_up_without_a_second_joined() -> None:
    feed = Feed("r", None)
    feed.attached(sid(1))
    feed.overflowed()
    assert feed.phase is FeedPhase.CATCHING_UP
    assert feed.caught_up(sid(1)) is True


def test_a_left_feed_wants_nothing_and_never_goes_live() -> None:
    feed = Feed("r", sid(0))
    feed.attached(sid(5))
    feed.left()
    assert not feed.active and not feed.wants(sid(6))
    assert feed.caught_up(sid(0)) is False and feed.exhausted() is False
    assert feed.lost(MAX) is False


def test_trim_past_the_position_is_a_gap_unless_the_client_was_told() -> None:
    feed = Feed("r", sid(3), recovered=False, floor=sid(10))
    feed.attached(sid(20))
    assert feed.gap(sid(10), "") is False  # told at join: recovered false
    assert feed.gap(sid(11), "") is True


def test_another_epoch_while_catching_up_is_a_gap() -> None:
    feed = Feed("r", sid(3), epoch="E1")
    feed.attached(sid(20))
    assert feed.gap(ZERO, "E2") is True


def test_loss_below_a_live_position_falls_behind_and_a_lost_stream_always_does() -> None:
    live = Feed("r", None)
    live.attached(sid(5))
    assert live.lost(sid(3)) is False
    assert live.lost(sid(6)) is True and live.fell_behind
    catching = Feed("r", sid(1))
    catching.attached(sid(9))
    assert catching.lost(sid(6)) is False  # its own next read checks the trim
    assert catching.lost(MAX) is True


def test_an_empty_read_below_the_head_goes_live_from_where_the_stream_ends() -> None:
    feed = Feed("r", sid(3))
    feed.attached(sid(9))  # the head came from entries a failover erased
    assert feed.exhausted() == Joined("r", 0, True, sid(3), "")
