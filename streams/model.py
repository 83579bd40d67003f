"""Stream ids and the live envelope.

Redis stream ids are ``<ms>-<seq>`` strings. They must be compared as pairs of
integers, never as strings (``"9-0" > "10-0"`` as text). Everything in the
service that orders, deduplicates or bounds messages goes through this module.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import NamedTuple

_ID_RE = re.compile(r"([0-9]{1,20})(?:-([0-9]{1,20}))?")
_MAX_U64 = 2**64 - 1


class StreamId(NamedTuple):
    """A stream id as a pair of integers: ordered the way Redis orders them.

    A tuple underneath, so comparisons, hashing and ``(ms, seq)`` unpacking
    cost what they cost for a plain pair. Text becomes a ``StreamId`` once, at
    the edges (a client frame, a Redis reply, a notification); everything in
    between compares these.
    """

    ms: int
    seq: int

    @classmethod
    def parse(cls, text: str) -> StreamId:
        """Parse ``ms-seq`` (or bare ``ms``, meaning ``ms-0``); raise ValueError."""
        m = _ID_RE.fullmatch(text) if isinstance(text, str) else None
        if not m:
            raise ValueError(f"not a stream id: {text!r}")
        ms = int(m.group(1))
        seq = int(m.group(2) or 0)
        if ms > _MAX_U64 or seq > _MAX_U64:
            raise ValueError(f"stream id out of range: {text!r}")
        return cls(ms, seq)

    def __str__(self) -> str:
        return f"{self.ms}-{self.seq}"

    def __repr__(self) -> str:
        return f"StreamId({self.ms}-{self.seq})"


ZERO = StreamId(0, 0)
# The largest id Redis can hold: nothing can come after it.
MAX = StreamId(_MAX_U64, _MAX_U64)


def parse_id(text: str) -> StreamId:
    """Parse ``ms-seq`` (or bare ``ms``, meaning ``ms-0``); raise ValueError."""
    return StreamId.parse(text)


def is_id(text: object) -> bool:
    """True when ``text`` is a syntactically valid stream id."""
    if not isinstance(text, str):
        return False
    try:
        parse_id(text)
    except ValueError:
        return False
    return True


def format_id(sid: tuple[int, int]) -> str:
    return f"{sid[0]}-{sid[1]}"


def exclusive_start(sid: StreamId) -> str | None:
    """The XRANGE start for "strictly after ``sid``", or None when nothing
    can follow it.

    ``-`` after ``0-0``, which is not a valid exclusive start either; None
    after :data:`MAX`, which Redis refuses as an exclusive start ("invalid
    start ID for the interval") since no id exists past it. Callers answer
    an empty range instead of asking Redis an impossible one.
    """
    if sid == ZERO:
        return "-"
    if sid == MAX:
        return None
    return f"({format_id(sid)}"


def id_ms(text: str) -> int:
    """The millisecond part of an id: the server time of the append."""
    return parse_id(text)[0]


def parse_id_fast(text: str) -> StreamId:
    """:meth:`StreamId.parse` with a fast path for the plain ``ms-seq`` that
    every id from Redis is (one per notification on the live path, where the
    regular expression cost more than the rest of the envelope)."""
    ms, sep, seq = text.partition("-")
    if (sep and ms.isdigit() and seq.isdigit() and text.isascii()
            and len(ms) <= 20 and len(seq) <= 20):
        a, b = int(ms), int(seq)
        if a <= _MAX_U64 and b <= _MAX_U64:
            return tuple.__new__(StreamId, (a, b))
    return StreamId.parse(text)


@dataclass(slots=True, unsafe_hash=True)
class Envelope:
    """One stored entry as it travels on the live path.

    ``prev`` is the id of the entry stored right before this one in the same
    room (``0-0`` for the first). A receiver that last saw ``prev`` knows it
    missed nothing; any other value means a gap to fill from the stream.
    ``body`` is the JSON text of the message body, kept encoded so that an
    instance can splice it into the outgoing frame without decoding it.

    Treated as immutable, but not a frozen dataclass: one is made per
    notification, and a frozen one's ``__init__`` (``object.__setattr__``
    per field) cost as much as decoding the notification.
    """

    room: str
    id: str
    prev: str
    sender: str
    body: str
    # ``id`` and ``prev`` parsed once, when the envelope is made at the edge.
    key: StreamId = field(default=ZERO, compare=False, repr=False)
    prev_key: StreamId = field(default=ZERO, compare=False, repr=False)

    def __post_init__(self) -> None:
        self.key = parse_id_fast(self.id)
        self.prev_key = parse_id_fast(self.prev) if self.prev else ZERO

    @property
    def ts(self) -> int:
        return self.key.ms
