"""Where a join starts, and whether the client missed anything: one pure rule.

Pure: no asyncio, no Redis. The inputs are what the client asked for, the
user's stored ack cursor, and the room stream's :class:`Bounds` read in one
atomic step; the output is a :class:`JoinPoint`.

Why an epoch: stream ids alone cannot show that a stream was lost (Redis
restarted empty, FLUSHALL, a promoted replica that never had the key) and
recreated, because the new stream's ids are simply larger. Every incarnation
of a room stream gets a random token when its first entry is written (the
epoch) and remembers that entry's id (``born``). A client that resumes with
the epoch it was given is judged by the token; one without is still caught
when its ``since`` lies below ``born``.
"""

from __future__ import annotations

from dataclasses import dataclass

from .model import ZERO, StreamId, parse_id


@dataclass(frozen=True, slots=True)
class Bounds:
    """What the stream knows about its own history.

    ``last_id``: the last id ever generated (not only the last retained).
    ``trim_mark``: the first retained id when older entries were trimmed
    away, else ``0-0``. Redis does not record the largest trimmed id (its
    ``max-deleted-entry-id`` only follows XDEL), so a reader who last saw an
    id below the first retained one is counted as having missed something:
    when in doubt, say so rather than claim a gap-free resume.
    ``epoch``: the token of this incarnation of the stream; ``""`` when the
    stream does not exist. ``born``: the id of the incarnation's first entry,
    ``0-0`` when unknown (a stream older than epochs).
    """

    last_id: str
    trim_mark: str
    length: int
    epoch: str = ""
    born: str = "0-0"

    def recovered(self, since: str) -> bool:
        """Can a reader who last saw ``since`` (in this incarnation) get
        everything after it?

        No when entries after ``since`` may have been trimmed, and no when
        ``since`` is beyond the last id the stream ever generated: such an id
        was erased by a failover or made up, and replaying from it could
        skip entries the new master appended with a clock that runs behind.
        """
        s = parse_id(since)
        if s > parse_id(self.last_id):
            return False
        return parse_id(self.trim_mark) <= s


@dataclass(frozen=True, slots=True)
class Cursor:
    """A user's stored ack position; ``epoch`` None for a cursor stored
    before cursors carried one."""

    id: str
    epoch: str | None = None


@dataclass(frozen=True, slots=True)
class JoinPoint:
    """Where a join starts: ``since`` None means only new messages.

    ``floor``: the trim mark at the time of the join (what the client is
    told it lost when ``recovered`` is false). ``epoch``: the stream's epoch
    to report in ``joined`` (``""``: the room has no stream yet).
    """

    since: StreamId | None
    recovered: bool
    floor: StreamId = ZERO
    epoch: str = ""


def resolve(since: str | None, epoch: str | None, cursor: Cursor | None,
            bounds: Bounds) -> JoinPoint:
    """Resolve a join.

    ``since``: None (resume from ``cursor``, else ``"$"``), ``"$"``, ``"0"``
    or a validated id. ``epoch``: the one the client sent with ``since``
    (ignored when ``since`` is None: the cursor's own epoch counts then).
    """
    if since is None:
        if cursor is None:
            since, epoch = "$", None
        else:
            since, epoch = cursor.id, cursor.epoch
    current = bounds.epoch
    if since == "$":
        return JoinPoint(None, True, epoch=current)
    start = parse_id(since)
    if not current:
        # No stream: whatever the client saw is gone, unless it saw nothing.
        # Replay from the start so that an entry appended meanwhile is kept.
        return JoinPoint(ZERO, start == ZERO and not epoch)
    floor = parse_id(bounds.trim_mark)
    if epoch and epoch != current:
        # Another incarnation: the client has seen none of this one.
        return JoinPoint(ZERO, False, floor, current)
    if start > parse_id(bounds.last_id):
        # Beyond anything this stream ever generated: an id erased by a
        # failover, or made up. Never replay from a point the stream never
        # had; start live and say the client missed some.
        return JoinPoint(None, False, epoch=current)
    if start != ZERO and start < parse_id(bounds.born):
        # Older than this incarnation's first entry: the id is from a stream
        # that was lost, even if the client does not know its epoch.
        return JoinPoint(ZERO, False, floor, current)
    return JoinPoint(start, floor <= start, floor, current)
