"""One socket's rooms: live delivery, replay, and catch-up for slow readers.

This module is the one place where replay and live traffic meet. Per room a
session keeps a :class:`Feed` with ``last``, the id of the last message it
queued for the socket. The invariant: the socket receives, for every joined
room, each entry after the join point exactly once and in id order.

- Live: the hub hands over entries in id order; a feed queues those newer
  than ``last`` (so nothing is sent twice) while it is live.
- Catch-up: a feed that is not live ignores the hub and is fed from the
  stream instead, page by page, at the socket's pace. It becomes live again
  only at a moment when ``last`` has reached the hub's ``head`` for that
  room; the check and the switch happen without an ``await`` between them,
  so every later entry comes from the hub and every earlier one came from
  the stream. ``join`` with ``since`` is a catch-up that ends with the
  ``joined`` frame; a live feed whose queue is full turns into one, which is
  how a slow socket falls behind without holding messages in memory or
  slowing down anyone else.
"""

from __future__ import annotations

import asyncio
import collections
from collections import deque
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from streams.log import RoomLog
from streams.model import ZERO, Envelope, StreamId, format_id, parse_id
from streams.retry import StorageUnavailable

from .auth import Principal
from .hub import Hub
from .outbox import Outbox, Signal, TooSlow
from .protocol import joined_frame, message_frame

log = logging.getLogger("streamgate.session")

CATCH_UP_PAGE = 1000


class FellBehind(Exception):
    """The socket needs entries that the stream has already trimmed."""


@dataclass(slots=True, eq=False)
class Feed:
    room: str
    last: StreamId
    live: bool = False
    joining: bool = False  # a join's replay: send `joined` when it goes live
    recovered: bool = True
    floor: StreamId = ZERO  # trim mark already reported to the client (recovered:false)
    replayed: int = 0
    started: float = field(default_factory=time.monotonic)
    fell_behind: bool = False  # the hub could not hand over trimmed entries
    lagging: bool = field(default=False)  # queued for catch-up
    epoch: str = ""  # the stream epoch reported in `joined` ("": no stream)


class Session:
    def __init__(
        self,
        principal: Principal,
        outbox: Outbox,
        hub: Hub,
        log_: RoomLog,
        on_replayed: Callable[[int, float], None] = lambda n, s: None,
        sent: collections.Counter[str] | None = None,
    ) -> None:
        self.principal = principal
        self.user = principal.user
        self.outbox = outbox
        self._hub = hub
        self._log = log_
        self.feeds: dict[str, Feed] = {}
        self._lagging: deque[Feed] = deque()
        self._lag_signal = Signal()
        self._on_replayed = on_replayed
        self._sent: collections.Counter[str] = sent if sent is not None else collections.Counter()

    # -- called by the hub: must not block -----------------------------------

    def deliver(self, env: Envelope, key: StreamId, frame: str, wire: bytes) -> None:
        feed = self.feeds.get(env.room)
        if feed is None or not feed.live or key <= feed.last:
            return
        if self.outbox.offer(frame, wire):
            feed.last = key
            self._sent["message"] += 1
        else:
            feed.live = False
            self._lag(feed)

    def lost(self, room: str, mark: StreamId) -> None:
        feed = self.feeds.get(room)
        if feed is not None and feed.live and feed.last < mark:
            feed.live = False
            feed.fell_behind = True
            self._lag(feed)

    # -- join / leave ----------------------------------------------------------

    async def join_from(self, room: str, since: StreamId | None, recovered: bool,
                        floor: StreamId = ZERO, epoch: str = "") -> None:
        """Join ``room``, replaying entries after ``since`` (None: only new ones).

        ``floor``: the trim mark the client was already told about.
        """
        old = self.feeds.pop(room, None)
        feed = Feed(room=room, last=since or ZERO, recovered=recovered, floor=floor, epoch=epoch)
        self.feeds[room] = feed
        if old is None:
            try:
                await self._hub.attach(room, self)
            except BaseException:
                if self.feeds.get(room) is feed:
                    del self.feeds[room]
                raise
        if self.feeds.get(room) is not feed:
            return  # left (or joined again) while waiting
        if since is None:
            feed.last = self._hub.head(room)
            feed.live = True
            self.outbox.push(joined_frame(room, 0, recovered, format_id(feed.last), epoch=epoch))
            self._sent["joined"] += 1
        else:
            feed.joining = True
            self._lag(feed)

    def leave(self, room: str) -> bool:
        feed = self.feeds.pop(room, None)
        if feed is None:
            return False
        self._hub.detach(room, self)
        return True

    def detach_all(self) -> list[str]:
        rooms = list(self.feeds)
        for room in rooms:
            self.leave(room)
        return rooms

    # -- catch-up ------------------------------------------------------------

    def _lag(self, feed: Feed) -> None:
        if not feed.lagging:
            feed.lagging = True
            self._lagging.append(feed)
            self._lag_signal.set()

    async def run_catch_up(self) -> None:
        """The session's catch-up worker: one feed at a time, at socket pace."""
        while True:
            while not self._lagging:
                self._lag_signal.clear()
                await self._lag_signal.wait()
            feed = self._lagging.popleft()
            feed.lagging = False
            if self.feeds.get(feed.room) is not feed:
                continue
            await self._catch_up(feed)

    async def _catch_up(self, feed: Feed) -> None:
        room = feed.room
        if feed.fell_behind:
            raise FellBehind(room)
        delay = 0.05
        while self.feeds.get(room) is feed:
            if feed.last >= self._hub.head(room):
                self._go_live(feed)
                return
            try:
                # Entries trimmed after what this socket was sent would be a
                # silent gap: close instead, and the client resumes knowing.
                trimmed = parse_id((await self._log.bounds(room)).trim_mark)
                if trimmed > max(feed.last, feed.floor):
                    raise FellBehind(room)
                page, blob = await self._hub.replay_page(room, feed.last, CATCH_UP_PAGE)
            except StorageUnavailable:
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
                continue
            if self.feeds.get(room) is not feed:
                return
            if not page:
                # The hub's head is ahead of the stream: it was erased by a
                # failover. The stream is the truth; go live from here.
                self._go_live(feed)
                return
            if self.outbox.raw is not None:
                await self.outbox.put(blob)  # the whole page in one write
                self._sent["message"] += len(page)
                feed.last = page[-1].key
                if feed.joining:
                    feed.replayed += len(page)
                continue
            for env in page:
                if env.key <= feed.last:
                    continue
                await self.outbox.put(message_frame(env))
                self._sent["message"] += 1
                feed.last = env.key
                if feed.joining:
                    feed.replayed += 1

    def _go_live(self, feed: Feed) -> None:
        feed.live = True
        if feed.joining:
            feed.joining = False
            self._on_replayed(feed.replayed, time.monotonic() - feed.started)
            if not self.outbox.push(joined_frame(feed.room, feed.replayed, feed.recovered,
                                                 format_id(feed.last), epoch=feed.epoch)):
                raise TooSlow("control frames not read")
            self._sent["joined"] += 1
