"""One socket's position in one room: a pure state machine.

This is where replay and live traffic meet, and it does no I/O: the session
(``app/session.py``) drives it from the hub's hand-overs and from its
catch-up reads, and carries out what it answers. The guarantee it keeps, for
the socket and the room: each entry after the join point exactly once and in
id order; nothing after the feed has left; nothing older than the position
``joined`` announced after ``joined``.

Phases::

    JOINING ──attached──▶ LIVE ◀──caught_up── CATCHING_UP
       │      (since $)    │  └──overflow / lost──▶ ┘ ▲
       └──attached (since an id)──────────────────────┘
    any ──left──▶ LEFT   (a re-join makes a new feed; the old one has left)

- ``last`` is the id of the last entry queued for the socket. A hand-over is
  taken only while LIVE and only when newer than ``last``.
- CATCHING_UP reads the stream after ``last`` at the socket's pace and goes
  LIVE only when ``last`` has reached the hub's ``head``: the check and the
  switch are one call, so every later entry comes from the hub and every
  earlier one came from the stream.
- A LIVE feed whose outbox is full falls back to CATCHING_UP: a slow socket
  falls behind without holding messages in memory or slowing anyone else.
- Entries trimmed (or a stream lost) before this socket got them make it
  *fall behind*: the socket is closed with 4408 and resumes knowing, rather
  than receive a silent gap.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass

from streams.model import MAX, ZERO, Envelope, StreamId


class FeedPhase(enum.Enum):
    JOINING = "joining"
    CATCHING_UP = "catching_up"
    LIVE = "live"
    LEFT = "left"


@dataclass(frozen=True, slots=True)
class Joined:
    """The ``joined`` frame a feed owes its socket, once, when it goes live."""

    room: str
    replayed: int
    recovered: bool
    last: StreamId
    epoch: str


class Feed:
    __slots__ = ("room", "phase", "last", "replay", "announce", "recovered", "floor",
                 "replayed", "fell_behind", "epoch", "lagging", "started")

    def __init__(self, room: str, since: StreamId | None, recovered: bool = True,
                 floor: StreamId = ZERO, epoch: str = "", started: float = 0.0) -> None:
        self.room = room
        self.phase = FeedPhase.JOINING
        self.last = since if since is not None else ZERO
        self.replay = since is not None
        self.announce = True  # `joined` not sent yet
        self.recovered = recovered
        self.floor = floor  # trim mark the client was already told about
        self.replayed = 0
        self.fell_behind = False
        self.epoch = epoch
        self.lagging = False  # queued for the session's catch-up worker
        self.started = started

    @property
    def active(self) -> bool:
        return self.phase is not FeedPhase.LEFT

    @property
    def live(self) -> bool:
        return self.phase is FeedPhase.LIVE

    # -- joining ----------------------------------------------------------------

    def attached(self, head: StreamId) -> Joined | None:
        """The hub's live path is open at ``head``. Without a replay the feed
        is live at once and owes ``joined``; with one it catches up first."""
        if self.phase is not FeedPhase.JOINING:
            return None
        if not self.replay:
            self.last = head
            return self._go_live()
        self.phase = FeedPhase.CATCHING_UP
        return None

    def left(self) -> None:
        self.phase = FeedPhase.LEFT

    # -- live hand-overs (from the hub) -------------------------------------------

    def wants(self, key: StreamId) -> bool:
        return self.phase is FeedPhase.LIVE and key > self.last

    def queued(self, key: StreamId) -> None:
        self.last = key

    def overflowed(self) -> None:
        """The outbox refused a live entry: catch up from the stream instead."""
        if self.phase is FeedPhase.LIVE:
            self.phase = FeedPhase.CATCHING_UP

    def lost(self, mark: StreamId) -> bool:
        """Entries below ``mark`` are gone for good (``MAX``: the stream
        itself was lost). True when this feed needed some of them; a feed
        that is catching up checks the trim mark itself on its next read."""
        if not self.active:
            return False
        if mark == MAX or (self.phase is FeedPhase.LIVE and self.last < mark):
            self.fell_behind = True
            if self.phase is FeedPhase.LIVE:
                self.phase = FeedPhase.CATCHING_UP
            return True
        return False

    # -- catching up (from the stream) ---------------------------------------------

    def caught_up(self, head: StreamId) -> Joined | bool:
        """Go live when ``last`` has reached the hub's ``head``; answers the
        ``joined`` owed (or True when going live owes nothing), else False."""
        if self.phase is not FeedPhase.CATCHING_UP or self.fell_behind or self.last < head:
            return False
        return self._go_live() or True

    def gap(self, trim_mark: StreamId, epoch: str) -> bool:
        """Would reading on skip something this socket needs? (Entries
        trimmed past ``last``, beyond what the client was told, or another
        incarnation of the stream than the one it joined.)"""
        if self.fell_behind:
            return True
        if self.epoch and epoch and epoch != self.epoch:
            self.fell_behind = True
        elif trim_mark > max(self.last, self.floor):
            self.fell_behind = True
        return self.fell_behind

    def fresh(self, page: Sequence[Envelope]) -> Sequence[Envelope]:
        """The entries of a read page that the socket has not had."""
        if not page or page[0].key > self.last:
            return page
        return [e for e in page if e.key > self.last]

    def page_queued(self, last: StreamId, count: int) -> None:
        self.last = last
        if self.announce:
            self.replayed += count

    def exhausted(self) -> Joined | bool:
        """A read after ``last`` came back empty although the hub's head is
        ahead: the head came from entries a failover erased. The stream is
        the truth; go live from here."""
        if self.phase is not FeedPhase.CATCHING_UP:
            return False
        return self._go_live() or True

    def _go_live(self) -> Joined | None:
        self.phase = FeedPhase.LIVE
        if not self.announce:
            return None
        self.announce = False
        return Joined(self.room, self.replayed, self.recovered, self.last, self.epoch)
