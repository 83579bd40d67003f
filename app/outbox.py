"""One socket's bounded outbound queue and the writer that drains it.

Why a queue per socket: the fan-out path must never wait on a socket, so it
only writes to the transport when that cannot block (nothing queued, its
buffer under the high-water mark) or appends to the queue (``offer``), and
each socket's own writer task does the awaiting; that task exists only while
something is queued. A full queue is the signal that the socket is slow: the
caller then stops feeding it live messages and lets it catch up from the
stream at its own pace (see :mod:`app.session`).

The queue is bounded twice: in frames (``limit``) and in bytes
(``max_bytes``), because one catch-up page of many entries is a single item.
An item's bytes count from the moment it is queued until the writer has
handed all of it to the transport and the transport's buffer is back under
``RAW_HIGH_WATER``; a page goes to the transport a slice at a time (cut at
frame boundaries), so the transport never holds a whole page. What a socket
that stops reading holds is therefore at most ``max_bytes`` (one item of any
size is let in when nothing else is held) plus one slice plus the
high-water mark.

Control frames (``joined``, ``published``, ``error``, ``pong``) answer the
client's own requests and may exceed the limit by a small slack; a client
that fills even that is not reading its answers and gets closed as too slow.

Catch-up queues with ``put``, which waits for room and then, with no
``await`` in between, asks its caller whether the item is still wanted: a
room left (or joined again) while the page waited must not reach the
socket after the ``left`` (or the new ``joined``) frame.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable

from .pages import Page
from .protocol import wire_text_frame
from .socket import FrameWriter

log = logging.getLogger("streamgate.outbox")


RAW_HIGH_WATER = 64 * 1024
POLL_S = (0.002, 0.05)  # first and longest pause while a transport's buffer drains


class Signal:
    """An ``asyncio.Event`` for one waiter that allocates nothing until waited on
    (an Event carries a deque of waiters: ~600 bytes, three per socket)."""

    __slots__ = ("_flag", "_fut")

    def __init__(self, flag: bool = False) -> None:
        self._flag = flag
        self._fut: asyncio.Future[None] | None = None

    def is_set(self) -> bool:
        return self._flag

    def set(self) -> None:
        self._flag = True
        fut, self._fut = self._fut, None
        if fut is not None and not fut.done():
            fut.set_result(None)

    def clear(self) -> None:
        self._flag = False

    async def wait(self) -> None:
        if self._flag:
            return
        if self._fut is None or self._fut.done():
            self._fut = asyncio.get_running_loop().create_future()
        await self._fut


class TooSlow(Exception):
    """The socket could not take frames within the allowed time."""


def _log_error(exc: BaseException) -> None:
    log.error("outbox writer failed", exc_info=exc)


class Outbox:
    """One socket's queue and the owner of its writer task.

    The writer runs only while something is queued: the first item queued
    starts it and it ends once it has written the last one (or the socket
    failed: ``on_error`` is told, and the outbox takes nothing more). A
    frame written straight to the transport needs no task at all, so an
    idle socket, or one that keeps up with live traffic, has none.
    """

    __slots__ = ("_send", "_limit", "_max_bytes", "_bytes", "_low_water", "_hard",
                 "_stall_timeout", "_queue", "_space", "_drained", "_writing",
                 "_send_started", "sent", "raw", "_writer",
                 "_closed", "_on_error")

    def __init__(
        self,
        send: Callable[[str], Awaitable[None]],
        limit: int,
        stall_timeout_s: float,
        control_slack: int = 256,
        max_bytes: int = 1 << 20,
        on_error: Callable[[BaseException], None] = _log_error,
    ) -> None:
        self._send = send
        self._limit = limit
        self._max_bytes = max_bytes
        self._bytes = 0  # queued and in flight
        self._low_water = max(1, limit // 2)
        self._hard = limit + control_slack
        self._stall_timeout = stall_timeout_s
        # Made by the first item queued, dropped by the writer when it ends.
        self._queue: deque[str | Page] | None = None
        self._space = Signal(True)
        self._drained = Signal()
        self._writing = False
        self._send_started = 0.0
        self.sent = 0
        # Direct writes of shared, pre-encoded frames, when the server offers
        # them (see app/socket.py); never once it is closing.
        self.raw: FrameWriter | None = None
        self._writer: asyncio.Task[None] | None = None
        self._closed = False
        self._on_error = on_error

    def attach(self, writer: FrameWriter | None) -> None:
        """Enable direct writes of whole frames to this socket (None: every
        frame goes through ``send``)."""
        self.raw = writer

    @property
    def writer(self) -> asyncio.Task[None] | None:
        """The writer task while something is being written, else None."""
        return self._writer

    def close(self) -> asyncio.Task[None] | None:
        """Take nothing more and stop writing; returns the writer (cancelled)
        for the caller to wait on."""
        self._closed = True
        writer = self._writer
        if writer is not None:
            writer.cancel()
        return writer

    def stalled(self, now: float) -> bool:
        """Has one write been waiting longer than the stall timeout?"""
        return self._writing and now - self._send_started > self._stall_timeout

    def __len__(self) -> int:
        return len(self._queue) if self._queue is not None else 0

    @property
    def nbytes(self) -> int:
        """Bytes queued or in flight."""
        return self._bytes

    @property
    def page_bytes(self) -> int:
        """The size a catch-up page should keep to: half the byte bound, so
        the next page can be read while one is being written."""
        return self._max_bytes // 2

    def _full(self, nbytes: int) -> bool:
        if len(self) >= self._limit:
            return True
        return self._bytes > 0 and self._bytes + nbytes > self._max_bytes

    def _append(self, item: str | Page, nbytes: int) -> None:
        queue = self._queue
        if queue is None:
            queue = self._queue = deque()
        queue.append(item)
        self._bytes += nbytes
        if self._writer is None:
            self._writer = asyncio.get_running_loop().create_task(self._write(), name="ws-write")

    def _direct(self, data: bytes) -> bool:
        """Write a whole frame straight to the socket, if nothing is queued
        or in flight (order) and the writer takes it now (not closing, its
        buffer under the high-water mark)."""
        raw = self.raw
        return raw is not None and not self._queue and not self._writing and raw.offer(data)

    def offer(self, frame: str, wire: bytes | None = None) -> bool:
        """Queue a message frame if there is room; never waits. With nothing
        queued or in flight and the transport below its high-water mark, the
        shared pre-encoded frame goes straight to the transport."""
        if self._closed:
            return False
        # _direct, inlined: this runs once per delivery.
        raw = self.raw
        if (wire is not None and raw is not None and not self._queue and not self._writing
                and raw.offer(wire)):
            self.sent += 1
            return True
        n = len(frame)
        held = self._bytes
        if len(self) >= self._limit or (held and held + n > self._max_bytes):
            self._space.clear()
            return False
        self._append(frame, n)
        return True

    def push(self, frame: str) -> bool:
        """Queue a control frame (or write it at once, as ``offer`` does);
        False when even the slack is used up."""
        if self._closed or len(self) >= self._hard:
            return False
        if self.raw is not None and self._direct(wire_text_frame(frame)):
            self.sent += 1
            return True
        self._append(frame, len(frame))
        return True

    async def room(self, nbytes: int) -> None:
        """Wait until an item of ``nbytes`` would be let in."""
        while self._full(nbytes):
            self._space.clear()
            await self._space.wait()

    async def put(self, item: str | Page, still_wanted: Callable[[], bool]) -> bool:
        """Queue a message frame or a page, waiting for room (used by catch-up).

        Once there is room, ``still_wanted()`` decides, with no ``await``
        between that check and the queueing: False drops the item and
        returns False."""
        nbytes = len(item) if isinstance(item, str) else item.nbytes
        await self.room(nbytes)
        if self._closed or not still_wanted():
            return False
        self._append(item, nbytes)
        return True

    async def flushed(self, timeout_s: float) -> bool:
        """Wait until everything queued was written (False: the timeout
        passed, or the socket failed or was closed first)."""
        try:
            async with asyncio.timeout(timeout_s):
                while self._writer is not None:
                    self._drained.clear()
                    await self._drained.wait()
            return not self._queue and not self._closed
        except TimeoutError:
            return False

    async def _write(self) -> None:
        """The writer: drain the queue into the socket, then end."""
        loop = asyncio.get_running_loop()
        try:
            while self._queue and not self._closed:
                item = self._queue.popleft()
                # No timer per send (that would cost more than the send itself on
                # the fan-out path): a watchdog polls stalled() instead.
                self._writing = True
                self._send_started = loop.time()
                try:
                    if isinstance(item, Page):
                        nbytes = item.nbytes
                        await self._write_page(item, loop)
                    else:
                        nbytes = len(item)
                        await self._send(item)
                finally:
                    self._writing = False
                self._bytes -= nbytes
                self.sent += 1
                if len(self._queue) <= self._low_water and self._bytes <= self._max_bytes // 2:
                    self._space.set()
            self._queue = None  # empty: the next item queued makes a new one
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self._closed = True  # the socket is done for: nothing more is taken
            self._on_error(exc)
        finally:
            # With no await since the queue was found empty (or the failure):
            # an item queued from here on starts a new writer.
            self._writer = None
            self._drained.set()

    async def _write_page(self, page: Page, loop: asyncio.AbstractEventLoop) -> None:
        """Write a page to the raw transport one slice at a time, each once
        the transport's buffer is under the high-water mark, then wait until
        the last one is too. The transport offers no awaitable for this, so
        poll, backing off while the peer does not read."""
        raw = self.raw
        assert raw is not None
        view = memoryview(page.blob)
        start = 0
        for end in page.cuts:
            await self._below_high_water(raw)
            raw.write(view[start:end])
            start = end
            self._send_started = loop.time()  # progress: a slow reader is not a stalled one
        await self._below_high_water(raw)

    async def _below_high_water(self, raw: FrameWriter) -> None:
        """Wait until the transport's buffer is under RAW_HIGH_WATER.

        Raise ConnectionResetError once the socket is closing (the server
        sent its close frame, e.g. for unanswered pings): nothing more may be
        written to it, and the connection must end rather than let the
        catch-up read on through the history for nobody."""
        pause = POLL_S[0]
        while True:
            if raw.is_closing():
                raise ConnectionResetError("the socket is closing")
            if raw.get_write_buffer_size() <= RAW_HIGH_WATER:
                return
            await asyncio.sleep(pause)
            pause = min(pause * 2, POLL_S[1])
