"""One socket's feed of one room against a reference model.

The model stream is a plain list; the hub hands each new entry over at once
(the chain is checked on its own in test_chain_model.py). The socket's
outbox holds a few message frames; the client reads them when it likes. A
catch-up read runs, then its queueing may wait for room while the client
joins again, leaves or stops reading. The frames the client reads are
checked as the client would check them:

- after ``joined`` the message ids are strictly increasing and newer than
  ``joined``'s position (exactly once, in order, never backwards);
- nothing of the room between ``left`` and the next ``joined``;
- once the client has read everything, it holds every entry after its join
  point up to the stream's end, unless the feed fell behind (the socket is
  closed with 4408 then, and the client resumes knowing).
"""

from __future__ import annotations

from collections import deque

from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, precondition, rule

from app.feed import Feed, Joined
from streams.model import ZERO, Envelope, StreamId

from tests.unit.modelcheck import machine_settings

LIMIT = 3
PAGE = 4


def envelope(n: int) -> Envelope:
    return Envelope("r", f"{n}-0", "", "u", "null")


class FeedModel(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.stream: list[int] = []
        self.first_kept = 0  # index in ``stream`` of the first retained entry
        self.trim_mark = ZERO
        self.feed: Feed | None = None
        self.outbox: deque[tuple[str, object]] = deque()
        self.blocked: tuple[Feed, list[Envelope]] | None = None  # a put waiting for room
        self.closed = False
        # What the client saw.
        self.joined_at: StreamId | None = None  # the position `joined` announced
        self.joining = False  # between the client's join and its leave
        self.received: list[int] = []
        self.join_point = ZERO
        self.floor = ZERO

    # -- the session's shell, as session.py drives the feed -------------------

    def _messages(self) -> int:
        return sum(1 for kind, _ in self.outbox if kind == "message")

    def _push_joined(self, joined: Joined) -> None:
        self.outbox.append(("joined", joined.last))

    def _hand_over(self, n: int) -> None:
        feed = self.feed
        key = StreamId(n, 0)
        if feed is None or not feed.wants(key):
            return
        if self._messages() < LIMIT:
            self.outbox.append(("message", n))
            feed.queued(key)
        else:
            feed.overflowed()

    # -- rules ---------------------------------------------------------------------

    @rule(step=st.integers(1, 3))
    def publish(self, step: int) -> None:
        n = (self.stream[-1] if self.stream else 0) + step
        self.stream.append(n)
        self._hand_over(n)

    @rule(keep=st.integers(1, 6))
    def trim(self, keep: int) -> None:
        retained = len(self.stream) - self.first_kept
        if retained > keep:
            self.first_kept = len(self.stream) - keep
            self.trim_mark = StreamId(self.stream[self.first_kept], 0)

    @precondition(lambda self: not self.closed)
    @rule(since=st.one_of(st.none(), st.integers(0, 40)))
    def join(self, since: int | None) -> None:
        if self.feed is not None:
            self.feed.left()
        start = None if since is None else StreamId(since, 0)
        head = StreamId(self.stream[-1], 0) if self.stream else ZERO
        if start is not None and start > head:
            start = None  # the join point resolution starts such a join live
        recovered = start is None or self.trim_mark <= start
        # Where the server takes the request up, in the order of its frames.
        self.outbox.append(("join", (start, self.trim_mark)))
        self.feed = Feed("r", start, recovered, floor=self.trim_mark)
        joined = self.feed.attached(head)
        if joined is not None:
            self._push_joined(joined)

    @precondition(lambda self: self.feed is not None and not self.closed)
    @rule()
    def leave(self) -> None:
        assert self.feed is not None
        self.feed.left()
        self.feed = None
        self.outbox.append(("left", None))

    @precondition(lambda self: self.feed is not None and self.blocked is None and not self.closed)
    @rule()
    def catch_up_step(self) -> None:
        feed = self.feed
        assert feed is not None
        if feed.phase.value != "catching_up":
            return
        head = StreamId(self.stream[-1], 0) if self.stream else ZERO
        went = feed.caught_up(head)
        if went:
            if isinstance(went, Joined):
                self._push_joined(went)
            return
        if feed.gap(self.trim_mark, ""):
            self.closed = True  # 4408: the client resumes knowing
            return
        retained = [envelope(n) for n in self.stream[self.first_kept:]]
        page = [e for e in retained if e.key > feed.last][:PAGE]
        if not page:
            went = feed.exhausted()
            if isinstance(went, Joined):
                self._push_joined(went)
            return
        self.blocked = (feed, list(feed.fresh(page)))

    @precondition(lambda self: self.blocked is not None and not self.closed)
    @rule()
    def put_gets_room(self) -> None:
        """The outbox has room again: queue the page if its feed still wants it."""
        assert self.blocked is not None
        if self._messages() >= LIMIT:
            return
        feed, fresh = self.blocked
        self.blocked = None
        if not feed.active:
            return
        for env in fresh:
            self.outbox.append(("message", env.key.ms))
        feed.page_queued(fresh[-1].key, len(fresh))

    @precondition(lambda self: bool(self.outbox))
    @rule(count=st.integers(1, 4))
    def client_reads(self, count: int) -> None:
        for _ in range(min(count, len(self.outbox))):
            kind, value = self.outbox.popleft()
            if kind == "join":  # the client's own request, not a frame
                start, self.floor = value  # type: ignore[misc]
                self.joined_at = None
                self.join_point = start if start is not None else ZERO
                self.joining = True
                self.received = []
            elif kind == "joined":
                assert isinstance(value, tuple)
                assert self.joining, "joined without a join"
                assert not self.received or value == StreamId(self.received[-1], 0)
                self.joined_at = value  # type: ignore[assignment]
                if not self.received:
                    self.join_point = value  # type: ignore[assignment]
            elif kind == "left":
                self.joining = False
                self.joined_at = None
            else:
                assert self.joining, f"message {value} after left"
                assert isinstance(value, int)
                last = self.received[-1] if self.received else self.join_point.ms
                if self.joined_at is not None:
                    last = max(last, self.joined_at.ms)
                assert value > last, f"message {value} after {last}"
                self.received.append(value)

    def teardown(self) -> None:
        """Drain everything the way the session would, then check completeness."""
        if self.closed or self.feed is None:
            return
        for _ in range(500):
            if self.outbox:
                self.client_reads(4)
            elif self.blocked is not None:
                self.put_gets_room()
            elif self.feed.phase.value == "catching_up" and not self.closed:
                self.catch_up_step()
            else:
                break
        if self.closed or not self.joining:
            return
        assert self.feed.live and self.joined_at is not None
        # A join told recovered:false may miss what was trimmed before it.
        expected = [n for n in self.stream if n > self.join_point.ms and n >= self.floor.ms]
        assert self.received == expected, f"got {self.received}, stream after the join {expected}"


TestFeedModel = FeedModel.TestCase
TestFeedModel.settings = machine_settings()
