"""What :meth:`Client.messages` yields, and what :meth:`Client.join` returns."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .ids import StreamId, parse_id


@dataclass(frozen=True, slots=True)
class Message:
    """One room message, delivered once and in id order per room.

    ``sender`` is the wire field ``from`` (a Python keyword). ``ts`` is the
    server time of the append in ms since the epoch.
    """

    room: str
    id: str
    sender: str
    body: Any
    ts: int

    @property
    def key(self) -> StreamId:
        """The id as a comparable ``(ms, seq)`` pair."""
        return parse_id(self.id)


@dataclass(frozen=True, slots=True)
class Gap:
    """Messages of ``room`` were lost for good before the next message yielded.

    The server could not replay everything after ``after`` (the ``since`` the
    client resumed from; None when the join had no id) because the room's
    history was already trimmed. Everything yielded after a Gap is again
    gap-free and in order.
    """

    room: str
    after: str | None


Item = Message | Gap


@dataclass(frozen=True, slots=True)
class Joined:
    """The server's ``joined`` answer: ``replayed`` messages came before it;
    ``recovered`` is false when some were lost for good (trimmed away, erased
    by a failover, or the room's stream lost and recreated); ``last_id`` is
    the room position after the join (None from servers that do not send
    it); ``epoch`` names the incarnation of the room's stream that position
    belongs to (None while the room has no stream, or from older servers)."""

    room: str
    replayed: int
    recovered: bool
    last_id: str | None
    epoch: str | None = None
