"""Per-room delivery state: what the application was given, and where to resume.

Pure (no I/O, no asyncio), so the rules behind "exactly once, in order, gaps
reported" are unit-tested table-style. The connection module feeds it server
frames and sends the frames it returns.

Invariants, per room:

- ``last`` (the resume point) only grows, except that a ``joined`` with
  ``recovered: false`` sets it to the server's position (what lay beyond was
  erased by a failover). A message reaches the application queue only if
  its id is greater than ``last``, and then becomes ``last``. So nothing is
  yielded twice or out of order, whatever a reconnect replays.
- ``epoch`` is the one the server named in the last ``joined`` and goes
  back with ``last`` on every resume, so that a room whose stream was lost
  and recreated answers ``recovered: false`` (a Gap). The replay of a new
  incarnation is still filtered by ``last``: a client that stayed live
  across the loss already has the new entries it received.
- No silent hole: once the client drops a message of a subscription (queue
  full, leave in flight, not joined yet), it accepts nothing more from that
  subscription and subscribes again with ``since = last``.
- A join's replay is held back until its ``joined`` frame says whether
  something was trimmed away, so that a :class:`Gap` is queued *before* the
  messages that follow the loss.

Bounds: the application queue holds at most ``limit`` messages (plus at most
one Gap per room and join), and each joining room holds at most ``limit``
replayed messages. A full queue never blocks the reader: the room stalls and
is re-subscribed from ``last`` once the application has taken half.
"""

from __future__ import annotations

import enum
from collections import Counter, deque
from dataclasses import dataclass, field

from .events import Gap, Item, Joined, Message
from .ids import ZERO, StreamId, format_id, parse_id
from .protocol import Frame, ack_frame, join_frame, leave_frame


class Phase(enum.Enum):
    PENDING = "pending"  # not subscribed on the current connection (or offline)
    JOINING = "joining"  # join sent: replayed messages are held until `joined`
    LIVE = "live"  # messages go straight to the application queue
    STALLED = "stalled"  # a message was dropped: re-subscribe from `last` when there is room


@dataclass(slots=True)
class Room:
    name: str
    since: str | None  # the application's starting point, used until `last` is known
    epoch: str | None = None  # the stream epoch `last` (or `since`) belongs to
    last: StreamId | None = None
    phase: Phase = Phase.PENDING
    held: list[Message] = field(default_factory=list)
    held_overflow: bool = False
    gap_open: bool = False  # a Gap was queued and no message has followed it yet
    joins: int = 0  # `joined` frames accepted so far

    def resume_since(self) -> str | None:
        return format_id(self.last) if self.last is not None else self.since


class Delivery:
    """Rooms, the application queue, and the subscription life cycle."""

    def __init__(self, limit: int) -> None:
        if limit < 2:
            raise ValueError("the queue limit must be at least 2")
        self.limit = limit
        self.rooms: dict[str, Room] = {}
        self.queue: deque[Item] = deque()
        self.online = False
        self._queued_messages = 0
        self._leaving: Counter[str] = Counter()  # `left` answers still to come, per room
        self._stalled: set[str] = set()

    # -- the application's requests ---------------------------------------------

    def join(self, name: str, since: str | None, epoch: str | None = None) -> list[Frame]:
        """Want ``name`` from now on; joining a room already wanted does nothing.

        ``epoch``: the one a ``joined`` gave with ``since`` (kept by the
        application across restarts), if any."""
        if name in self.rooms:
            return []
        room = self.rooms[name] = Room(name, since, epoch)
        return self._subscribe(room) if self.online else []

    def leave(self, name: str) -> list[Frame]:
        """Stop wanting ``name`` and drop its messages not yet taken."""
        room = self.rooms.pop(name, None)
        if room is None:
            return []
        self._stalled.discard(name)
        if any(item.room == name for item in self.queue):
            self.queue = deque(item for item in self.queue if item.room != name)
            self._queued_messages = sum(isinstance(item, Message) for item in self.queue)
        if not self.online:
            return []
        self._leaving[name] += 1
        return [leave_frame(name)]

    def position(self, name: str) -> str | None:
        room = self.rooms.get(name)
        return format_id(room.last) if room is not None and room.last is not None else None

    def epoch(self, name: str) -> str | None:
        room = self.rooms.get(name)
        return room.epoch if room is not None else None

    # -- the connection's life cycle ---------------------------------------------

    def connected(self) -> list[Frame]:
        """A new connection: subscribe every room from its resume point."""
        self.online = True
        self._leaving.clear()
        self._stalled.clear()
        frames: list[Frame] = []
        for room in self.rooms.values():
            frames.extend(self._subscribe(room))
        return frames

    def disconnected(self) -> None:
        self.online = False
        self._leaving.clear()
        self._stalled.clear()
        for room in self.rooms.values():
            room.phase = Phase.PENDING
            room.held = []
            room.held_overflow = False

    def settled(self) -> bool:
        """Every room has been joined on this connection (it did useful work)."""
        return self.online and all(r.phase in (Phase.LIVE, Phase.STALLED) for r in self.rooms.values())

    # -- server frames ----------------------------------------------------------

    def on_message(self, msg: Message) -> bool:
        """Take a ``message`` frame; True when it reached the application queue."""
        room = self.rooms.get(msg.room)
        if room is None or self._leaving[msg.room] or room.phase in (Phase.PENDING, Phase.STALLED):
            return False
        key = msg.key
        if room.last is not None and key <= room.last:
            return False  # already delivered (a replay overlapping what we have)
        if room.phase is Phase.JOINING:
            if room.held and key <= room.held[-1].key:
                return False
            if len(room.held) >= self.limit:
                room.held_overflow = True  # keeps dropping: the rest comes by a re-subscribe
            else:
                room.held.append(msg)
            return False
        if self._queued_messages >= self.limit:
            self._stall(room)
            return False
        self._deliver(room, msg)
        return True

    def on_joined(self, joined: Joined) -> bool:
        """Take a ``joined`` frame; True when it completes a join of a wanted room."""
        room = self.rooms.get(joined.room)
        if room is None or self._leaving[joined.room] or room.phase is not Phase.JOINING:
            return False
        if not joined.recovered and not room.gap_open:
            self.queue.append(Gap(room.name, room.resume_since()))
            room.gap_open = True
        room.epoch = joined.epoch
        held, room.held = room.held, []
        complete = not room.held_overflow
        room.held_overflow = False
        for msg in held:
            if self._queued_messages >= self.limit:
                complete = False
                break
            self._deliver(room, msg)
        room.joins += 1
        if not complete:
            self._stall(room)
            return True
        if joined.last_id is not None:
            # Everything replayed was taken, so the room is at `last_id` now,
            # even when nothing was received (the `since="$"` case).
            # After a loss the server's position is the truth (an id beyond
            # it was erased, or belongs to a lost incarnation).
            position = parse_id(joined.last_id)
            if room.last is None or position > room.last or not joined.recovered:
                room.last = position
        room.phase = Phase.LIVE
        return True

    def on_left(self, name: str) -> None:
        if self._leaving[name] > 0:
            self._leaving[name] -= 1
            if not self._leaving[name]:
                del self._leaving[name]

    def joining(self, name: str) -> bool:
        """``name`` waits for its ``joined``: an error about it answers the join."""
        room = self.rooms.get(name)
        return room is not None and room.phase is Phase.JOINING and not self._leaving[name]

    def refuse(self, name: str) -> None:
        """The server refused to join ``name`` (forbidden, invalid): stop wanting it."""
        self.rooms.pop(name, None)
        self._stalled.discard(name)

    # -- the application's side of the queue ------------------------------------

    def pop(self) -> Item | None:
        if not self.queue:
            return None
        item = self.queue.popleft()
        if isinstance(item, Message):
            self._queued_messages -= 1
        return item

    def resubscribe(self) -> list[Frame]:
        """Re-subscribe stalled rooms once the application has taken half the queue.

        ``leave`` then ``join``: everything the old subscription sent comes
        before ``left`` and is dropped; everything after it is the new
        replay from ``last``.
        """
        if not self._stalled or not self.online or self._queued_messages > self.limit // 2:
            return []
        frames: list[Frame] = []
        for name in sorted(self._stalled):
            room = self.rooms[name]
            self._leaving[name] += 1
            frames.append(leave_frame(name))
            frames.extend(self._subscribe(room))
        self._stalled.clear()
        return frames

    # -- internals ----------------------------------------------------------------

    def _subscribe(self, room: Room) -> list[Frame]:
        room.phase = Phase.JOINING
        room.held = []
        room.held_overflow = False
        return [join_frame(room.name, room.resume_since(), room.epoch)]

    def _stall(self, room: Room) -> None:
        room.phase = Phase.STALLED
        room.held = []
        self._stalled.add(room.name)

    def _deliver(self, room: Room, msg: Message) -> None:
        self.queue.append(msg)
        self._queued_messages += 1
        room.last = msg.key
        room.gap_open = False


class AckBook:
    """The highest id the application has processed per room, sent lazily.

    The server's cursor only moves forward, so one ``ack`` with the highest
    id stands for all before it: acks are coalesced, and after a reconnect
    the latest one per room is sent again in case the first was lost.
    """

    def __init__(self) -> None:
        self._done: dict[str, StreamId] = {}
        self._sent: dict[str, StreamId] = {}
        self.unsent = 0  # processed() calls since the last flush

    def processed(self, room: str, id_: str) -> None:
        key = parse_id(id_)
        if key > self._done.get(room, ZERO):
            self._done[room] = key
            self.unsent += 1

    def forget(self, room: str) -> None:
        self._done.pop(room, None)
        self._sent.pop(room, None)

    def disconnected(self) -> None:
        self._sent.clear()

    def flush(self) -> list[Frame]:
        frames = [
            ack_frame(room, format_id(key))
            for room, key in self._done.items()
            if key > self._sent.get(room, ZERO)
        ]
        self._sent.update(self._done)
        self.unsent = 0
        return frames
