"""The Python client's pure modules, table-style: ids, frames, backoff and the
per-room delivery state, plus a model check of the delivery rules against an
in-memory server. No process, no socket: ``pytest client/python/tests``.

The same client against real instances and a real redis-server is tested by
the server repository's tests/test_client.py.
"""

from __future__ import annotations

from collections import deque
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamgate_client import Gap, Joined, Message, format_id, parse_id
from streamgate_client.backoff import Backoff
from streamgate_client.ids import ZERO, check_epoch
from streamgate_client.protocol import (
    BadFrame,
    CloseAction,
    ErrorReply,
    Other,
    Published,
    Welcome,
    close_action,
    decode,
    with_identity,
)
from streamgate_client.state import AckBook, Delivery, Phase

# ---------------------------------------------------------------------------
# Pure: ids and frames
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("smaller", "larger"),
    [("9-0", "10-0"), ("1-9", "1-10"), ("99-99", "100-0"), ("5", "5-1"), ("0-0", "0-1")],
)
def test_ids_compare_as_numbers_not_text(smaller: str, larger: str) -> None:
    assert parse_id(smaller) < parse_id(larger)


@pytest.mark.parametrize("bad", ["", "-", "1-", "a-1", "1-2-3", "1 -2", str(2**64) + "-0", None])
def test_bad_ids_are_refused(bad: Any) -> None:
    with pytest.raises(ValueError):
        parse_id(bad)


def test_format_id_round_trips() -> None:
    assert format_id(parse_id("1700000000000-42")) == "1700000000000-42"
    assert format_id(parse_id("7")) == "7-0"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ('{"type":"message","room":"r","id":"5-1","from":"u","body":{"a":[1]},"ts":5}',
         Message("r", "5-1", "u", {"a": [1]}, 5)),
        ('{"type":"joined","room":"r","replayed":3,"recovered":false,"last_id":"9-0"}',
         Joined("r", 3, False, "9-0")),
        ('{"type":"joined","room":"r","replayed":0,"recovered":true}', Joined("r", 0, True, None)),
        ('{"type":"joined","room":"r","replayed":0,"recovered":true,"last_id":"1-0","epoch":"e1"}',
         Joined("r", 0, True, "1-0", "e1")),
        ('{"type":"joined","room":"r","replayed":0,"recovered":true,"last_id":"0-0","epoch":null}',
         Joined("r", 0, True, "0-0", None)),
        ('{"type":"joined","room":"r","replayed":0,"recovered":true,"epoch":7}', Joined("r", 0, True, None, None)),
        ('{"type":"published","room":"r","id":"1-0","client_id":"c","duplicate":true}',
         Published("r", "1-0", "c", True)),
        ('{"type":"error","code":"forbidden","reason":"no","ref":"r"}', ErrorReply("forbidden", "no", "r")),
        ('{"type":"error","code":"bad_frame","reason":"x","ref":null}', ErrorReply("bad_frame", "x", None)),
        ('{"type":"welcome","user":"u","instance":"A","protocol":1}', Welcome("u", "A")),
        ('{"type":"pong"}', Other("pong")),
        ('{"type":"presence","users":[]}', Other("presence")),
    ],
)
def test_server_frames_decode(raw: str, expected: object) -> None:
    assert decode(raw) == expected


def test_big_integers_in_bodies_stay_exact() -> None:
    frame = decode('{"type":"message","room":"r","id":"1-0","from":"u","body":123456789012345678901234567890,"ts":1}')
    assert isinstance(frame, Message) and frame.body == 123456789012345678901234567890


@pytest.mark.parametrize(
    "raw",
    [b"\x00", "not json", "[]", '{"no":"type"}', '{"type":"message","room":"r","id":"x","from":"u","body":1,"ts":1}',
     '{"type":"message","room":"r","id":"1-0","from":"u","ts":1}', '{"type":"joined"}'],
)
def test_unusable_frames_are_refused(raw: str | bytes) -> None:
    with pytest.raises(BadFrame):
        decode(raw)


@pytest.mark.parametrize(
    ("code", "action"),
    [(4401, CloseAction.REFRESH_TOKEN), (4403, CloseAction.FATAL), (4408, CloseAction.RECONNECT),
     (1012, CloseAction.RECONNECT), (1006, CloseAction.RECONNECT), (1011, CloseAction.RECONNECT),
     (1013, CloseAction.RECONNECT), (1000, CloseAction.RECONNECT), (None, CloseAction.RECONNECT)],
)
def test_close_codes(code: int | None, action: CloseAction) -> None:
    assert close_action(code) is action


def test_identity_goes_into_the_query() -> None:
    assert with_identity("ws://h:1/ws?x=1&token=old", token="t.k.n") == "ws://h:1/ws?x=1&token=t.k.n"
    assert with_identity("ws://h:1/ws", user="alice") == "ws://h:1/ws?user=alice"
    assert with_identity("ws://h:1/ws", token="t", user="ignored") == "ws://h:1/ws?token=t"


def test_backoff_window_doubles_up_to_the_cap_and_resets() -> None:
    backoff = Backoff(base=0.1, cap=0.8)
    windows = [0.1, 0.2, 0.4, 0.8, 0.8, 0.8]
    for window in windows:
        assert 0 <= backoff.next_delay() <= window
    assert backoff.attempt == len(windows) + 1
    backoff.reset()
    assert backoff.attempt == 1 and backoff.next_delay() <= 0.1


# ---------------------------------------------------------------------------
# Pure: the delivery state
# ---------------------------------------------------------------------------


def msg(id_: str, room: str = "r") -> Message:
    return Message(room, id_, "u", f"body {id_}", int(id_.split("-")[0]))


def joined(room: str = "r", recovered: bool = True, last_id: str | None = None, replayed: int = 0,
           epoch: str | None = None) -> Joined:
    return Joined(room, replayed, recovered, last_id, epoch)


def drain(d: Delivery) -> list[Any]:
    out = []
    while (item := d.pop()) is not None:
        out.append(item)
    return out


def live(limit: int = 100, since: str | None = "$", last_id: str = "0-0") -> Delivery:
    """A state with room "r" joined and live."""
    d = Delivery(limit)
    d.connected()
    assert d.join("r", since) == [{"type": "join", "room": "r", "since": since}]
    assert d.on_joined(joined(last_id=last_id))
    assert d.rooms["r"].phase is Phase.LIVE
    return d


def test_live_messages_in_order_and_duplicates_dropped() -> None:
    d = live()
    for id_ in ["1-0", "2-0", "2-0", "1-0", "10-0", "9-0", "10-1"]:
        d.on_message(msg(id_))
    assert [m.id for m in drain(d)] == ["1-0", "2-0", "10-0", "10-1"]
    assert d.position("r") == "10-1"


def test_resume_point_is_the_last_delivered_id_else_joined_last_id() -> None:
    d = live(last_id="7-3")
    assert d.position("r") == "7-3"  # nothing received yet: the join's position
    d.disconnected()
    assert d.connected() == [{"type": "join", "room": "r", "since": "7-3"}]
    d.on_joined(joined(last_id="7-3"))
    d.on_message(msg("8-0"))
    d.disconnected()
    assert d.connected() == [{"type": "join", "room": "r", "since": "8-0"}]


def test_without_last_id_the_first_since_is_kept_until_something_arrives() -> None:
    d = Delivery(10)
    d.join("r", "0")
    assert d.connected() == [{"type": "join", "room": "r", "since": "0"}]
    d.on_joined(joined(last_id=None))
    d.disconnected()
    assert d.connected() == [{"type": "join", "room": "r", "since": "0"}]


def test_replay_overlapping_what_was_delivered_is_deduplicated() -> None:
    d = live()
    for id_ in ["1-0", "2-0", "3-0"]:
        d.on_message(msg(id_))
    d.disconnected()
    d.connected()
    for id_ in ["2-0", "3-0", "4-0", "5-0"]:  # a server replaying too much
        d.on_message(msg(id_))
    d.on_joined(joined(last_id="5-0", replayed=4))
    d.on_message(msg("5-0"))  # and a live duplicate of the last replayed one
    d.on_message(msg("6-0"))
    assert [m.id for m in drain(d)] == ["1-0", "2-0", "3-0", "4-0", "5-0", "6-0"]


def test_replay_is_held_until_joined_and_a_gap_goes_before_it() -> None:
    d = live()
    d.on_message(msg("1-0"))
    assert [m.id for m in drain(d)] == ["1-0"]
    d.disconnected()
    d.connected()
    for id_ in ["50-0", "51-0"]:
        assert d.on_message(msg(id_)) is False  # held, not yet visible
    assert d.pop() is None
    assert d.on_joined(joined(recovered=False, last_id="51-0", replayed=2))
    items = drain(d)
    assert items[0] == Gap("r", "1-0")
    assert [m.id for m in items[1:]] == ["50-0", "51-0"]


@pytest.mark.parametrize(
    ("since", "epoch", "frame"),
    [
        ("5-0", "e1", {"type": "join", "room": "r", "since": "5-0", "epoch": "e1"}),
        ("0", "e1", {"type": "join", "room": "r", "since": "0", "epoch": "e1"}),
        ("$", "e1", {"type": "join", "room": "r", "since": "$"}),
        (None, "e1", {"type": "join", "room": "r"}),
        ("5-0", None, {"type": "join", "room": "r", "since": "5-0"}),
    ],
)
def test_the_epoch_goes_with_an_id_only(since: str | None, epoch: str | None, frame: dict[str, Any]) -> None:
    d = Delivery(10)
    d.connected()
    assert d.join("r", since, epoch) == [frame]


def test_the_epoch_of_the_last_joined_goes_back_with_the_resume_point() -> None:
    d = Delivery(10)
    d.connected()
    d.join("r", "0")
    d.on_message(msg("1-0"))
    d.on_joined(joined(last_id="1-0", replayed=1, epoch="e1"))
    assert d.epoch("r") == "e1"
    d.on_message(msg("2-0"))
    d.disconnected()
    assert d.connected() == [{"type": "join", "room": "r", "since": "2-0", "epoch": "e1"}]
    # The stream was lost and recreated: a Gap, then the new incarnation.
    d.on_message(msg("9-0"))
    assert d.on_joined(joined(recovered=False, last_id="9-0", replayed=1, epoch="e2"))
    assert drain(d) == [msg("1-0"), msg("2-0"), Gap("r", "2-0"), msg("9-0")]
    assert (d.position("r"), d.epoch("r")) == ("9-0", "e2")
    d.disconnected()
    assert d.connected() == [{"type": "join", "room": "r", "since": "9-0", "epoch": "e2"}]


def test_a_new_incarnation_received_live_is_not_yielded_again() -> None:
    """Live across the loss, the client already has the new entries; the
    rejoin with the old epoch replays the whole incarnation."""
    d = Delivery(10)
    d.connected()
    d.join("r", "$")
    d.on_joined(joined(last_id="5-0", epoch="e1"))
    for id_ in ["5-1", "20-0", "21-0"]:  # 20-0 and 21-0: the recreated stream
        d.on_message(msg(id_))
    d.disconnected()
    assert d.connected() == [{"type": "join", "room": "r", "since": "21-0", "epoch": "e1"}]
    for id_ in ["20-0", "21-0", "22-0"]:
        d.on_message(msg(id_))
    d.on_joined(joined(recovered=False, last_id="22-0", replayed=3, epoch="e2"))
    assert drain(d) == [msg("5-1"), msg("20-0"), msg("21-0"), Gap("r", "21-0"), msg("22-0")]


def test_a_position_beyond_the_stream_gives_way_to_the_servers() -> None:
    """An id erased by a failover: the server joins live at its own last id,
    and the entries after it must not be taken for duplicates."""
    d = live(last_id="9-0")
    d.on_message(msg("10-0"))
    d.disconnected()
    d.connected()
    d.on_joined(joined(recovered=False, last_id="9-5"))
    d.on_message(msg("9-6"))
    assert drain(d) == [msg("10-0"), Gap("r", "10-0"), msg("9-6")]
    assert d.position("r") == "9-6"


def test_a_room_whose_stream_is_gone_forgets_its_epoch() -> None:
    d = Delivery(10)
    d.connected()
    d.join("r", "$")
    d.on_joined(joined(last_id="5-0", epoch="e1"))
    d.disconnected()
    assert d.connected() == [{"type": "join", "room": "r", "since": "5-0", "epoch": "e1"}]
    d.on_joined(joined(recovered=False, last_id="0-0", epoch=None))
    d.disconnected()
    assert d.connected() == [{"type": "join", "room": "r", "since": "0-0"}]


@pytest.mark.parametrize("epoch", ["", "a b", "x" * 65, 5])
def test_a_malformed_epoch_is_refused_before_sending(epoch: Any) -> None:
    with pytest.raises(ValueError):
        check_epoch(epoch)


def test_a_gap_is_not_repeated_while_no_message_followed_it() -> None:
    d = live()
    d.on_message(msg("1-0"))
    d.disconnected()
    d.connected()
    d.on_joined(joined(recovered=False, last_id="1-0"))
    d.disconnected()
    d.connected()
    d.on_joined(joined(recovered=False, last_id="1-0"))
    assert [type(i).__name__ for i in drain(d)] == ["Message", "Gap"]
    d.on_message(msg("60-0"))
    d.disconnected()
    d.connected()
    d.on_joined(joined(recovered=False, last_id="60-0"))
    assert [type(i).__name__ for i in drain(d)] == ["Message", "Gap"]


def test_messages_before_joined_or_of_other_rooms_are_ignored() -> None:
    d = Delivery(10)
    assert d.on_message(msg("1-0")) is False  # no room
    d.join("r", "$")  # offline: pending
    assert d.rooms["r"].phase is Phase.PENDING
    assert d.on_message(msg("2-0")) is False
    assert d.on_joined(joined()) is False
    assert drain(d) == []


def test_a_full_queue_stalls_the_room_and_resubscribes_from_the_last_delivered() -> None:
    d = live(limit=4)
    for n in range(1, 8):
        d.on_message(msg(f"{n}-0"))
    assert d.rooms["r"].phase is Phase.STALLED
    assert d.resubscribe() == []  # still full
    assert [d.pop().id for _ in range(2)] == ["1-0", "2-0"]  # type: ignore[union-attr]
    assert d.resubscribe() == [
        {"type": "leave", "room": "r"},
        {"type": "join", "room": "r", "since": "4-0"},
    ]
    d.on_message(msg("8-0"))  # sent by the old subscription before `left`: dropped
    d.on_left("r")
    for n in range(5, 10):  # the new replay from 4-0
        d.on_message(msg(f"{n}-0"))
    d.on_joined(joined(last_id="9-0", replayed=5))
    assert [m.id for m in drain(d)] == ["3-0", "4-0", "5-0", "6-0"]
    assert d.rooms["r"].phase is Phase.STALLED  # the replay was larger than the queue again


def test_an_oversized_replay_is_delivered_in_bounded_pieces() -> None:
    d = Delivery(3)
    d.join("r", "0")
    d.connected()
    for n in range(1, 7):
        d.on_message(msg(f"{n}-0"))
    assert len(d.rooms["r"].held) == 3
    d.on_joined(joined(last_id="6-0", replayed=6))
    assert d.rooms["r"].phase is Phase.STALLED
    delivered = [m.id for m in drain(d)]
    assert delivered == ["1-0", "2-0", "3-0"]
    assert d.resubscribe()[-1] == {"type": "join", "room": "r", "since": "3-0"}


def test_leave_drops_queued_messages_and_frames_until_left() -> None:
    d = live()
    d.join("s", "$")
    d.on_joined(joined("s"))
    d.on_message(msg("1-0", "r"))
    d.on_message(msg("2-0", "s"))
    assert d.leave("r") == [{"type": "leave", "room": "r"}]
    assert [m.id for m in drain(d)] == ["2-0"]
    d.join("r", "$")  # joined again before `left` came back
    d.on_message(msg("3-0", "r"))  # the old subscription's
    d.on_joined(joined("r"))  # the old subscription's `joined`, if any
    assert d.rooms["r"].phase is Phase.JOINING
    d.on_left("r")
    d.on_joined(joined("r", last_id="3-0"))
    d.on_message(msg("4-0", "r"))
    assert [m.id for m in drain(d)] == ["4-0"]


def test_refused_join_forgets_the_room() -> None:
    d = Delivery(10)
    d.connected()
    d.join("secret", "$")
    assert d.joining("secret")
    d.refuse("secret")
    assert "secret" not in d.rooms
    assert d.connected() == []


def test_settled_when_every_room_is_joined() -> None:
    d = Delivery(10)
    d.connected()
    assert d.settled()
    d.join("a", "$")
    d.join("b", "$")
    assert not d.settled()
    d.on_joined(joined("a"))
    assert not d.settled()
    d.on_joined(joined("b"))
    assert d.settled()


def test_acks_are_coalesced_and_sent_again_after_a_reconnect() -> None:
    book = AckBook()
    for id_ in ["1-0", "3-0", "2-0", "10-0"]:
        book.processed("r", id_)
    book.processed("s", "5-0")
    assert book.flush() == [{"type": "ack", "room": "r", "id": "10-0"}, {"type": "ack", "room": "s", "id": "5-0"}]
    assert book.flush() == []
    book.processed("r", "9-0")  # behind what was acked
    assert book.flush() == []
    book.disconnected()
    assert len(book.flush()) == 2
    book.forget("s")
    book.disconnected()
    assert book.flush() == [{"type": "ack", "room": "r", "id": "10-0"}]


class ModelServer:
    """The room side of the contract in memory, for one connection at a time.

    A join replays everything after `since` (plus `overlap` entries the
    client already has, as a sloppy server might), answers `joined`, then
    sends each new message live; a leave ends that and answers `left`.
    Frames go out in the order the client's frames came in.
    """

    def __init__(self, count: int, overlap: int) -> None:
        self.room_ids: list[str] = []
        self.overlap = overlap
        self.out: deque[Any] = deque()
        self.subscribed = False
        for _ in range(count):
            self.publish()

    def publish(self) -> None:
        n = len(self.room_ids)
        self.room_ids.append(f"{1000 + n // 3}-{n % 3}")  # text order differs from id order
        if self.subscribed:
            self.out.append(msg(self.room_ids[-1]))

    def cut(self) -> None:
        self.out.clear()
        self.subscribed = False

    def handle(self, frames: list[dict[str, Any]]) -> None:
        for frame in frames:
            if frame["type"] == "leave":
                self.subscribed = False
                self.out.append(("left", frame["room"]))
            elif frame["type"] == "join":
                since = frame.get("since")
                after = ZERO if since in (None, "0") else parse_id(since)
                start = sum(parse_id(i) <= after for i in self.room_ids)
                replay = self.room_ids[max(0, start - self.overlap):]
                self.out.extend(msg(i) for i in replay)
                self.out.append(joined(last_id=replay[-1] if replay else format_id(after)))
                self.subscribed = True

    def deliver_one(self, d: Delivery) -> None:
        frame = self.out.popleft()
        if isinstance(frame, Message):
            d.on_message(frame)
        elif isinstance(frame, Joined):
            d.on_joined(frame)
        else:
            d.on_left(frame[1])


@settings(max_examples=300, deadline=None)
@given(
    count=st.integers(0, 20),
    limit=st.integers(2, 6),
    overlap=st.integers(0, 4),
    steps=st.lists(st.sampled_from(["frame"] * 6 + ["take"] * 4 + ["publish"] * 3 + ["cut"]), max_size=300),
)
def test_any_interleaving_of_cuts_and_slow_takes_gives_every_id_once_in_order(
    count: int, limit: int, overlap: int, steps: list[str]
) -> None:
    server = ModelServer(count, overlap)
    d = Delivery(limit)
    d.join("r", "0")
    server.handle(d.connected())
    out: list[str] = []

    def take_one() -> None:
        item = d.pop()
        assert not isinstance(item, Gap)
        if isinstance(item, Message):
            out.append(item.id)
        server.handle(d.resubscribe())

    for step in steps:
        if step == "cut":
            d.disconnected()
            server.cut()
            server.handle(d.connected())
        elif step == "publish":
            server.publish()
        elif step == "take" or not server.out:
            take_one()
        else:
            server.deliver_one(d)
    for _ in range(50 * (len(server.room_ids) + 2)):  # then the application keeps up
        if server.out:
            server.deliver_one(d)
        take_one()
    assert out == server.room_ids
