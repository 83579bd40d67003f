"""Catch-up pages: a stretch of a room's history as ready-to-write frames.

A page is built once (one Redis read, one encoding) and may be queued, as is,
in the outboxes of every socket replaying the same stretch. Its size is what
matters for memory, not its entry count, so:

- ``entries_for`` picks how many entries to read for a byte budget from the
  room's average entry size (a small first read while it is not known);
- ``build`` keeps only the entries that fit the budget (never fewer than
  one), and records cut points at frame boundaries so that the writer can
  hand the page to the transport a slice at a time without ever splitting a
  frame (a ping or a close frame written in between stays well-formed);
- ``PageCache`` finds a page while some outbox still holds it (a weak
  reference costs nothing once the last socket has written it) and keeps
  pages that more than one socket asked for, up to a byte bound, for the
  stragglers of a reconnect storm. One lone slow socket pins only what its
  own outbox holds.
"""

from __future__ import annotations

import weakref
from collections import OrderedDict
from collections.abc import Hashable, Iterator, Sequence

from streams.model import ZERO, StreamId

SLICE_BYTES = 64 * 1024
UNKNOWN_ENTRY_COUNT = 16  # the first read of a room whose entry size is not known yet


class Page:
    """``count`` entries after some id, up to ``last``, as joined wire frames."""

    __slots__ = ("blob", "count", "last", "cuts", "trim_mark", "epoch", "__weakref__")

    def __init__(self, blob: bytes, count: int, last: StreamId, cuts: tuple[int, ...]) -> None:
        self.blob = blob
        self.count = count
        self.last = last
        self.cuts = cuts  # increasing offsets at frame boundaries, the last one len(blob)
        # The stream's trim mark and epoch, read right after the page: once
        # for every socket that writes the page (see Session._catch_up).
        self.trim_mark = ZERO
        self.epoch = ""

    @property
    def nbytes(self) -> int:
        return len(self.blob)

    def __len__(self) -> int:
        return self.count

    def texts(self) -> Iterator[str]:
        """The page's frames as text (for servers without a raw transport)."""
        blob, pos = self.blob, 0
        while pos < len(blob):
            n = blob[pos + 1] & 0x7F
            pos += 2
            if n == 126:
                n, pos = int.from_bytes(blob[pos:pos + 2], "big"), pos + 2
            elif n == 127:
                n, pos = int.from_bytes(blob[pos:pos + 8], "big"), pos + 8
            yield blob[pos:pos + n].decode()
            pos += n


def entries_for(budget: int, entry_bytes: float, most: int) -> int:
    """How many entries to read so that the page fits ``budget`` bytes."""
    if entry_bytes <= 0:
        return max(1, min(most, UNKNOWN_ENTRY_COUNT))
    return max(1, min(most, int(budget // entry_bytes)))


def build(frames: Sequence[bytes], keys: Sequence[StreamId], budget: int) -> Page:
    """A page of the longest prefix of ``frames`` that fits ``budget`` bytes
    (at least one frame), cut every ``SLICE_BYTES`` at a frame boundary."""
    cuts: list[int] = []
    size = mark = 0
    taken = 0
    for frame in frames:
        n = len(frame)
        if taken and size + n > budget:
            break
        if size + n - mark > SLICE_BYTES and size > mark:
            cuts.append(size)
            mark = size
        size += n
        taken += 1
    if taken:
        cuts.append(size)
    blob = b"".join(frames[:taken]) if taken < len(frames) else b"".join(frames)
    return Page(blob, taken, keys[taken - 1] if taken else ZERO, tuple(cuts))


class PageCache:
    """Pages by key: found while any socket holds them; kept up to ``max_bytes``
    (least recently used first out) once a second socket has asked."""

    def __init__(self, max_bytes: int) -> None:
        self._max_bytes = max_bytes
        self._held: weakref.WeakValueDictionary[Hashable, Page] = weakref.WeakValueDictionary()
        self._kept: OrderedDict[Hashable, Page] = OrderedDict()
        self._kept_bytes = 0

    @property
    def kept_bytes(self) -> int:
        return self._kept_bytes

    def add(self, key: Hashable, page: Page) -> None:
        self._held[key] = page

    def get(self, key: Hashable) -> Page | None:
        """The page if some socket still holds it or it is kept; asking for
        it again means it is shared, so keep it."""
        page = self._held.get(key)
        if page is not None:
            self.keep(key, page)
        return page

    def keep(self, key: Hashable, page: Page) -> None:
        if key in self._kept:
            self._kept.move_to_end(key)
            return
        if page.nbytes > self._max_bytes:
            return
        self._kept[key] = page
        self._kept_bytes += page.nbytes
        while self._kept_bytes > self._max_bytes:
            _, old = self._kept.popitem(last=False)
            self._kept_bytes -= old.nbytes

    def clear(self) -> None:
        self._held.clear()
        self._kept.clear()
        self._kept_bytes = 0

    def __len__(self) -> int:
        return len(self._held)
