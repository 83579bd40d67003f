"""One socket's bounded outbound queue and the writer that drains it.

Why a queue per socket: the fan-out path must never wait on a socket, so it
only appends to queues (``offer``), and each socket's own writer task does
the awaiting. A full queue is the signal that the socket is slow: the caller
then stops feeding it live messages and lets it catch up from the stream at
its own pace (see :mod:`app.session`), so memory per slow socket stays
bounded by ``limit`` frames.

Control frames (``joined``, ``published``, ``error``, ``pong``) answer the
client's own requests and may exceed the limit by a small slack; a client
that fills even that is not reading its answers and gets closed as too slow.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable


class TooSlow(Exception):
    """The socket could not take frames within the allowed time."""


class Outbox:
    def __init__(
        self,
        send: Callable[[str], Awaitable[None]],
        limit: int,
        stall_timeout_s: float,
        control_slack: int = 256,
    ) -> None:
        self._send = send
        self._limit = limit
        self._low_water = max(1, limit // 2)
        self._hard = limit + control_slack
        self._stall_timeout = stall_timeout_s
        self._queue: deque[str] = deque()
        self._ready = asyncio.Event()
        self._space = asyncio.Event()
        self._space.set()
        self._drained = asyncio.Event()
        self._writing = False
        self._send_started = 0.0
        self.sent = 0

    def stalled(self, now: float) -> bool:
        """Has one write been waiting longer than the stall timeout?"""
        return self._writing and now - self._send_started > self._stall_timeout

    def __len__(self) -> int:
        return len(self._queue)

    def offer(self, frame: str) -> bool:
        """Queue a message frame if there is room; never waits."""
        if len(self._queue) >= self._limit:
            self._space.clear()
            return False
        self._queue.append(frame)
        self._ready.set()
        return True

    def push(self, frame: str) -> bool:
        """Queue a control frame; False when even the slack is used up."""
        if len(self._queue) >= self._hard:
            return False
        self._queue.append(frame)
        self._ready.set()
        return True

    async def put(self, frame: str) -> None:
        """Queue a message frame, waiting for room (used by catch-up)."""
        while len(self._queue) >= self._limit:
            self._space.clear()
            await self._space.wait()
        self._queue.append(frame)
        self._ready.set()

    async def flushed(self, timeout_s: float) -> bool:
        """Wait until everything queued was written (or the timeout)."""
        try:
            async with asyncio.timeout(timeout_s):
                while self._queue or self._writing:
                    self._drained.clear()
                    await self._drained.wait()
            return True
        except TimeoutError:
            return False

    async def run(self) -> None:
        """Drain the queue into the socket until cancelled."""
        queue = self._queue
        loop = asyncio.get_running_loop()
        while True:
            if not queue:
                self._drained.set()
                self._ready.clear()
                await self._ready.wait()
                continue
            frame = queue.popleft()
            # No timer per send (that would cost more than the send itself on
            # the fan-out path): a watchdog polls stalled() instead.
            self._writing = True
            self._send_started = loop.time()
            try:
                await self._send(frame)
            finally:
                self._writing = False
            self.sent += 1
            if not queue:
                self._drained.set()
            if len(queue) <= self._low_water:
                self._space.set()

