"""One socket's rooms: the asyncio that drives each room's pure :class:`Feed`.

The rules of replay and live delivery live in :mod:`app.feed`; this module
only moves entries: the hub's hand-overs into the outbox (never waiting),
and, for a feed that is catching up, pages read from the stream at the
socket's pace (one feed at a time, by the session's catch-up worker).
"""

from __future__ import annotations

import asyncio
import collections
from collections import deque
import logging
import time
from collections.abc import Callable

from streams.log import RoomLog
from streams.model import ZERO, Envelope, StreamId, format_id, parse_id
from streams.retry import StorageUnavailable

from .auth import Principal
from .feed import Feed, Joined
from .hub import Hub
from .outbox import Outbox, Signal, TooSlow
from .pages import Page
from .protocol import joined_frame

log = logging.getLogger("streamgate.session")

CATCH_UP_PAGE = 1000


class FellBehind(Exception):
    """The socket needs entries that the stream has already trimmed."""


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
        if feed is None or not feed.wants(key):
            return
        if self.outbox.offer(frame, wire):
            feed.queued(key)
            self._sent["message"] += 1
        else:
            feed.overflowed()
            self._lag(feed)

    def lost(self, room: str, mark: StreamId) -> None:
        feed = self.feeds.get(room)
        if feed is not None and feed.lost(mark):
            self._lag(feed)

    # -- join / leave ----------------------------------------------------------

    async def join_from(self, room: str, since: StreamId | None, recovered: bool,
                        floor: StreamId = ZERO, epoch: str = "") -> None:
        """Join ``room``, replaying entries after ``since`` (None: only new ones).

        ``floor``: the trim mark the client was already told about.
        """
        old = self.feeds.pop(room, None)
        if old is not None:
            old.left()  # its catch-up, if any, must not queue another entry
        feed = Feed(room, since, recovered, floor, epoch or "", started=time.monotonic())
        self.feeds[room] = feed
        if old is None:
            try:
                await self._hub.attach(room, self)
            except BaseException:
                feed.left()
                if self.feeds.get(room) is feed:
                    del self.feeds[room]
                raise
        joined = feed.attached(self._hub.head(room))
        if joined is not None:
            self._announce(joined)
        elif feed.active:
            self._lag(feed)

    def leave(self, room: str) -> bool:
        feed = self.feeds.pop(room, None)
        if feed is None:
            return False
        feed.left()
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
            if feed.active:
                await self._catch_up(feed)

    async def _catch_up(self, feed: Feed) -> None:
        """Feed ``feed`` from the stream until it reaches the hub's head.

        The next page is read while the current one is written (read-ahead),
        so a socket that keeps up never waits for Redis between pages; a
        socket that stops reading holds at most that one page beyond its
        outbox.
        """
        room = feed.room
        delay = 0.05
        ahead: asyncio.Future[Page] | None = None
        ahead_after = ZERO
        try:
            while feed.active:
                went_live = feed.caught_up(self._hub.head(room))
                if went_live:
                    self._went_live(feed, went_live)
                    return
                try:
                    if ahead is not None and ahead_after == feed.last:
                        page, ahead = await ahead, None
                    else:
                        ahead = _dropped(ahead)
                        # Hold one page at a time: wait for room before reading.
                        await self.outbox.room(self.outbox.page_bytes)
                        page = await self._hub.replay_page(room, feed.last, CATCH_UP_PAGE,
                                                           self.outbox.page_bytes)
                    # Bounds read after the page (trims only move forward, so
                    # a trim mark at or below ``last`` now proves the page
                    # started right after it). Reading on past a trimmed
                    # stretch, or into another incarnation of the stream,
                    # would be a silent gap: close instead, and the client
                    # resumes knowing.
                    bounds = await self._log.bounds(room)
                    if feed.gap(parse_id(bounds.trim_mark), bounds.epoch or ""):
                        raise FellBehind(room)
                except StorageUnavailable:
                    ahead = _dropped(ahead)
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 2.0)
                    continue
                if not feed.active:
                    return
                if not page:
                    self._went_live(feed, feed.exhausted())
                    return
                if page.last < self._hub.head(room):
                    ahead_after = page.last
                    ahead = asyncio.ensure_future(self._hub.replay_page(
                        room, page.last, CATCH_UP_PAGE, self.outbox.page_bytes))
                wanted = lambda: feed.active  # noqa: E731  (checked with no await before queueing)
                if self.outbox.raw is not None:
                    if not await self.outbox.put(page, wanted):  # the whole page, a slice at a time
                        return
                else:
                    for text in page.texts():
                        if not await self.outbox.put(text, wanted):
                            return
                self._sent["message"] += len(page)
                feed.page_queued(page.last, len(page))
                del page  # held by the outbox now, and only while it still has to write it
        finally:
            _dropped(ahead)

    def _went_live(self, feed: Feed, went_live: Joined | bool) -> None:
        if isinstance(went_live, Joined):
            self._on_replayed(went_live.replayed, time.monotonic() - feed.started)
            self._announce(went_live)

    def _announce(self, joined: Joined) -> None:
        frame = joined_frame(joined.room, joined.replayed, joined.recovered, format_id(joined.last),
                             epoch=joined.epoch or None)
        if not self.outbox.push(frame):
            raise TooSlow("control frames not read")
        self._sent["joined"] += 1


def _dropped(ahead: asyncio.Future[Page] | None) -> None:
    """Give up a read-ahead that is no longer wanted (its outcome unread)."""
    if ahead is not None:
        ahead.cancel()
        ahead.add_done_callback(lambda f: f.cancelled() or f.exception())
    return None
