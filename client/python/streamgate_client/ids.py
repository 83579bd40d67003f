"""Stream ids as the client orders them.

A message id is ``<ms>-<seq>``. Ids are compared as pairs of integers, never
as strings: ``"9-0" > "10-0"`` as text, but 9 ms comes before 10 ms. Every
ordering decision of the client (dedupe, resume point, acks) goes through
:func:`parse_id`.
"""

from __future__ import annotations

import re

StreamId = tuple[int, int]
ZERO: StreamId = (0, 0)

_ID_RE = re.compile(r"([0-9]{1,20})(?:-([0-9]{1,20}))?")
_MAX_U64 = 2**64 - 1


def parse_id(text: str) -> StreamId:
    """``"ms-seq"`` (or a bare ``"ms"``, meaning ``ms-0``) as a comparable pair."""
    match = _ID_RE.fullmatch(text) if isinstance(text, str) else None
    if match is None:
        raise ValueError(f"not a stream id: {text!r}")
    ms, seq = int(match.group(1)), int(match.group(2) or 0)
    if ms > _MAX_U64 or seq > _MAX_U64:
        raise ValueError(f"stream id out of range: {text!r}")
    return ms, seq


def format_id(sid: StreamId) -> str:
    return f"{sid[0]}-{sid[1]}"


def is_id(value: object) -> bool:
    try:
        parse_id(value)  # type: ignore[arg-type]
    except ValueError:
        return False
    return True


def check_since(since: str | None) -> None:
    """A join's ``since``: ``"$"``, ``"0"``, a message id, or None (omitted)."""
    if not (since is None or since == "$" or is_id(since)):
        raise ValueError(f'since must be "$", "0", a message id or None, not {since!r}')


_EPOCH_RE = re.compile(r"[\x21-\x7e]{1,64}")


def check_epoch(epoch: str | None) -> None:
    """A join's ``epoch``: as a ``joined`` gave it (1-64 printable ASCII), or None."""
    if not (epoch is None or (isinstance(epoch, str) and _EPOCH_RE.fullmatch(epoch))):
        raise ValueError(f"epoch must be the one a joined frame gave, not {epoch!r}")
