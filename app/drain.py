"""Graceful drain on SIGTERM, in the order a rolling deploy needs.

1. ``/readyz`` answers 503 and new sockets are refused with 1012, while the
   instance keeps serving: a load balancer that polls readiness stops
   sending new clients here (``DRAIN_GRACE`` seconds).
2. Every connection finishes the frame it is handling (a publish in flight
   is stored and answered), flushes what is queued, and is closed with 1012,
   which tells clients to reconnect anywhere and resume with ``since``.
3. Only then is the server told to exit, well inside 10 s
   (``DRAIN_TIMEOUT`` bounds step 2).

uvicorn's own SIGTERM handler is kept and called at the end, so the process
exits the way uvicorn expects.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable
from types import FrameType
from typing import Any

log = logging.getLogger("streamgate.drain")


class Drainer:
    def __init__(self, service: Any, grace_s: float, timeout_s: float) -> None:
        self._svc = service
        self._grace = grace_s
        self._timeout = timeout_s
        self._previous: Callable[[int, FrameType | None], Any] | int | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None

    def install(self) -> None:
        """Take over SIGTERM (only possible in the main thread)."""
        self._loop = asyncio.get_running_loop()
        try:
            self._previous = signal.signal(signal.SIGTERM, self._on_signal)
        except ValueError:  # not the main thread: leave signals alone
            self._previous = None

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        if self._task is None and self._loop is not None:
            self._loop.call_soon_threadsafe(self._start)

    def _start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self.drain(), name="drain")

    async def drain(self) -> None:
        """Drain, then hand the signal on to uvicorn, even if draining failed:
        this signal is the only one the process gets to exit."""
        svc = self._svc
        svc.draining = True
        try:
            log.info("draining", extra={"event": "drain_start", "connections": len(svc.conns)})
            await asyncio.sleep(self._grace)
            conns = list(svc.conns)
            if conns:
                # Publishes in flight get most of the budget; closing gets the rest.
                patience = max(0.5, self._timeout - 2.0)
                done, pending = await asyncio.wait(
                    [asyncio.create_task(c.drain(patience)) for c in conns], timeout=self._timeout
                )
                for t in pending:
                    t.cancel()
            log.info("drained", extra={"event": "drain_done", "closed": len(conns)})
        except Exception:
            log.exception("drain failed")
        self._exit()

    def _exit(self) -> None:
        previous = self._previous
        signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)
        if callable(previous):
            previous(signal.SIGTERM, None)
        else:
            signal.raise_signal(signal.SIGTERM)
