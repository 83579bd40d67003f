"""One socket's rooms: the asyncio that drives each room's pure :class:`Feed`.

The rules of replay and live delivery live in :mod:`app.feed`; this module
only moves entries: the hub's hand-overs into the outbox (never waiting),
and, for a feed that is catching up, pages read from the stream at the
socket's pace (one feed at a time, by the session's catch-up worker, a task
that exists only while some feed is catching up).
"""

from __future__ import annotations

import asyncio
import collections
from collections import deque
import logging
import time
from collections.abc import Callable

from streams.log import RoomLog
from streams.model import ZERO, Envelope, StreamId, format_id
from streams.retry import StorageUnavailable

from .auth import Principal
from .feed import Feed, Joined
from .hub import Hub
from .outbox import Outbox, TooSlow
from .protocol import joined_frame

log = logging.getLogger("streamgate.session")

CATCH_UP_PAGE = 1000


class FellBehind(Exception):
    """The socket needs entries that the stream has already trimmed."""


def _log_error(exc: BaseException) -> None:
    log.error("catch-up failed", exc_info=exc)


class Session:
    """The rooms of one socket, and the owner of its catch-up worker.

    The worker runs only while a feed needs catching up: the first feed that
    falls behind (or joins with a replay) starts it, and it ends when none is
    left. What ends it otherwise (``FellBehind``, ``TooSlow``, a bug) goes to
    ``on_error``, whose owner closes the socket with the code that says why.
    """

    __slots__ = ("principal", "user", "outbox", "_hub", "_log", "feeds", "_lagging",
                 "_worker", "_closed", "_on_replayed", "_on_error", "_sent", "_on_unrecovered")

    def __init__(
        self,
        principal: Principal,
        outbox: Outbox,
        hub: Hub,
        log_: RoomLog,
        on_replayed: Callable[[int, float], None] = lambda n, s: None,
        sent: collections.Counter[str] | None = None,
        on_error: Callable[[BaseException], None] = _log_error,
        on_unrecovered: Callable[[], None] = lambda: None,
    ) -> None:
        self.principal = principal
        self.user = principal.user
        self.outbox = outbox
        self._hub = hub
        self._log = log_
        self.feeds: dict[str, Feed] = {}
        # Feeds waiting for the worker; made when the first one lags.
        self._lagging: deque[Feed] | None = None
        self._worker: asyncio.Task[None] | None = None
        self._closed = False
        self._on_replayed = on_replayed
        self._on_error = on_error
        self._on_unrecovered = on_unrecovered  # a `joined` with recovered false
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

    @property
    def worker(self) -> asyncio.Task[None] | None:
        """The catch-up worker while some feed is catching up, else None."""
        return self._worker

    def close(self) -> asyncio.Task[None] | None:
        """Start no more catch-up; returns the worker (cancelled) for the
        caller to wait on."""
        self._closed = True
        worker = self._worker
        if worker is not None:
            worker.cancel()
        return worker

    def _lag(self, feed: Feed) -> None:
        if feed.lagging:
            return
        feed.lagging = True
        if self._lagging is None:
            self._lagging = deque()
        self._lagging.append(feed)
        if self._worker is None and not self._closed:
            self._worker = asyncio.get_running_loop().create_task(self._run_catch_up(),
                                                                  name="ws-catch-up")

    async def _run_catch_up(self) -> None:
        """The session's catch-up worker: one feed at a time, at socket pace,
        until no feed is left behind."""
        try:
            while self._lagging and not self._closed:
                feed = self._lagging.popleft()
                feed.lagging = False
                if feed.active:
                    await self._catch_up(feed)
            self._lagging = None
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self._closed = True
            self._on_error(exc)
        finally:
            # No await since the last feed was taken: a feed that lags from
            # here on starts a new worker.
            self._worker = None

    async def _catch_up(self, feed: Feed) -> None:
        room = feed.room
        delay = 0.05
        while feed.active:
            went_live = feed.caught_up(self._hub.head(room))
            if went_live:
                self._went_live(feed, went_live)
                return
            # Hold one page at a time, not a second: wait for room before reading.
            await self.outbox.room(self.outbox.page_bytes)
            try:
                page = await self._hub.replay_page(room, feed.last, CATCH_UP_PAGE,
                                                   self.outbox.page_bytes)
            except StorageUnavailable:
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
                continue
            # The page carries the bounds read right after it (once for all
            # its readers). Reading on past a trimmed stretch, or into another
            # incarnation of the stream, would be a silent gap: close
            # instead, and the client resumes knowing.
            if feed.gap(page.trim_mark, page.epoch):
                raise FellBehind(room)
            if not feed.active:
                return
            if not page:
                self._went_live(feed, feed.exhausted())
                return
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
        if not joined.recovered:
            self._on_unrecovered()
