"""One room's live chain on one instance: a pure state machine.

The chain decides what an instance hands over to its local members of a room
and when it must read the stream instead. It does no I/O and never awaits:
the hub (``app/hub.py``) feeds it notifications and read results and carries
out the :class:`Step` it answers. That keeps the guarantee checkable by
tables and by a model-based test (``tests/unit/test_chain_model.py``).

Invariants:

- ``head`` is the id of the last entry handed over. Entries are handed over
  strictly in id order, each once: nothing at or below ``head`` again.
- A notification is handed over at once only when its ``prev`` is ``head``:
  then nothing can lie between them. Any other ``prev`` means the live path
  lost something (Pub/Sub is at-most-once), so the chain starts *filling*:
  it asks for the stream after ``head``, hands over what the read returns,
  and buffers the notifications that arrive meanwhile.
- When a read comes back empty, the buffer is handed over in id order while
  each entry's ``prev`` is ``head``. A break means an entry that neither the
  read nor the buffer holds (in replica mode an entry confirmed after a
  newer one is announced only through its successor, whose notification can
  overtake the read's reply), so the chain reads again. A break that two
  more empty reads do not explain (its ``prev`` was erased by a failover) is
  handed over as it is.
- Entries trimmed away before they could be handed over are reported as
  ``lost`` up to the trim mark, never skipped in silence.
- A stream that was lost and recreated (another epoch) is reported ``lost``
  for every member: their positions belong to a stream that no longer
  exists, and only a new join can say ``recovered:false`` truthfully. The
  chain never stays live with entries handed over and the epoch unknown: it
  reads once more to learn it. (Left open: a stream lost twice within that
  one read, the second time with ids that restart lower, is not told apart.)
- The buffer is bounded: on overflow it is dropped and the fill reads on,
  since everything in it is in the stream too.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass, field

from .model import MAX, ZERO, Envelope, StreamId

PENDING_LIMIT = 10_000
# Empty reads that must fail to explain a break in the buffered chain before
# the break is taken as an erased entry and handed over as it is.
UNEXPLAINED_READS = 2


class Phase(enum.Enum):
    OPENING = "opening"  # subscribing; the stream's end not read yet
    FILLING = "filling"  # reading the stream after ``head``; notifications buffered
    LIVE = "live"  # handing notifications over as they come
    CLOSED = "closed"  # no member left: nothing more is handed over


@dataclass(slots=True)
class Step:
    """What the hub must do after one input, in this order."""

    # Members whose position is below this mark lost entries for good.
    lost: StreamId | None = None
    # Hand these over to every member, in this order.
    deliver: list[Envelope] = field(default_factory=list)
    # Read the stream after ``head`` (and call :meth:`RoomChain.read_done`).
    read: bool = False
    # The fill ended and live delivery resumed; ``filled`` entries came from
    # the stream during it.
    live: bool = False
    filled: int = 0


_NOTHING = Step()


class RoomChain:
    __slots__ = ("phase", "head", "epoch", "pending", "reread", "unexplained", "filled",
                 "pending_limit")

    def __init__(self, pending_limit: int = PENDING_LIMIT) -> None:
        self.phase = Phase.OPENING
        self.head: StreamId = ZERO
        # The epoch of the stream the handed-over entries came from; "" while
        # unknown (no stream yet), adopted at the first read that sees one.
        self.epoch = ""
        self.pending: list[Envelope] = []
        self.reread = False
        self.unexplained = 0
        self.filled = 0
        self.pending_limit = pending_limit

    @property
    def filling(self) -> bool:
        return self.phase is Phase.FILLING

    # -- inputs ---------------------------------------------------------------

    def opened(self, head: StreamId, epoch: str = "") -> Step:
        """The subscription is confirmed and ``head`` is the stream's end,
        read after it: everything newer reaches :meth:`notified`. A first
        read then hands over whatever was buffered meanwhile."""
        if self.phase is Phase.CLOSED:
            return _NOTHING
        self.head = head
        self.epoch = epoch
        self.phase = Phase.FILLING
        return Step(read=True)

    def notified(self, env: Envelope) -> Step:
        """A notification from the live path (any order, maybe repeated)."""
        phase = self.phase
        if phase is Phase.LIVE:
            head = self.head
            if env.prev_key == head and env.key > head:
                self.head = env.key
                if not self.epoch:
                    # The stream's first entry since the chain opened: learn
                    # its epoch before going on, so a later loss shows.
                    self.phase = Phase.FILLING
                    return Step(deliver=[env], read=True)
                return Step(deliver=[env])
            if env.key <= head and not (env.prev_key == ZERO and head != ZERO):
                return _NOTHING  # already handed over
            # A gap, or the first entry of a stream born again below ``head``.
            self.phase = Phase.FILLING
            self.unexplained = 0
            self._buffer(env)
            return Step(read=True)
        if phase is Phase.CLOSED:
            return _NOTHING
        self._buffer(env)
        return _NOTHING

    def resynced(self) -> Step:
        """The Pub/Sub link was rebuilt: anything may have been missed."""
        if self.phase is Phase.LIVE:
            self.phase = Phase.FILLING
            self.unexplained = 0
            return Step(read=True)
        if self.phase is not Phase.CLOSED:
            self.reread = True  # a read in flight may predate the outage
        return _NOTHING

    def read_done(self, trim_mark: StreamId, epoch: str, page: Sequence[Envelope]) -> Step:
        """The result of reading the stream after ``head``: its trim mark and
        epoch (read first) and up to a page of entries."""
        if self.phase is not Phase.FILLING:
            return _NOTHING
        if (self.epoch and epoch != self.epoch) or (not epoch and self.head != ZERO):
            # Another incarnation of the stream than the one the handed-over
            # entries came from, or none at all. (An unknown epoch is
            # adopted: the chain opened before the stream existed.)
            self.head = ZERO
            self.epoch = epoch
            self.pending = []
            self.reread = False
            return Step(lost=MAX, read=True)
        self.epoch = epoch
        step = Step()
        if trim_mark > self.head:
            step.lost = trim_mark
        for env in page:
            if env.key > self.head:
                step.deliver.append(env)
                self.head = env.key
        self.filled += len(step.deliver)
        if page:
            self.unexplained = 0
            step.read = True
            return step
        if self.reread:
            self.reread = False
            step.read = True
            return step
        if self._drain(step, force=self.unexplained >= UNEXPLAINED_READS):
            if not self.epoch and self.head != ZERO:
                # Handed over entries of a stream that did not exist when
                # the read ran: read once more to learn which one it is.
                step.read = True
                return step
            step.live = True
            step.filled, self.filled = self.filled, 0
            self.phase = Phase.LIVE
            self.unexplained = 0
        else:
            self.unexplained += 1
            step.read = True
        return step

    def close(self) -> None:
        self.phase = Phase.CLOSED
        self.pending = []

    # -- internals --------------------------------------------------------------

    def _buffer(self, env: Envelope) -> None:
        if len(self.pending) >= self.pending_limit:
            self.pending = []
            self.reread = True
        self.pending.append(env)

    def _drain(self, step: Step, force: bool) -> bool:
        """Hand over buffered entries in id order while each one's ``prev`` is
        ``head`` (all of them when ``force``). True when the buffer is empty."""
        pending = sorted(self.pending, key=lambda e: e.key)
        for i, env in enumerate(pending):
            if env.key <= self.head:
                continue
            if not force and env.prev_key != self.head:
                self.pending = pending[i:]
                return False
            step.deliver.append(env)
            self.head = env.key
        self.pending = []
        return True
