"""Waiting for work to end, with a bound that holds whatever Redis does.

``asyncio.timeout`` and ``wait_for`` only bound an await if the awaited task
honours its cancellation. Inside redis-py's connect a cancellation can be
swallowed (a connect timeout firing in the same loop iteration as the cancel
turns it into an ordinary error), after which the task carries on as if
nothing had happened. Shutdown must not depend on that: the functions here
wait with ``asyncio.wait`` (which returns at the deadline no matter what the
task does), cancel again while time remains, and then abandon the task.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Iterable
from typing import Any

log = logging.getLogger("streamgate.shutdown")

# How often a task that ignored its cancellation is cancelled again.
RECANCEL_INTERVAL_S = 0.1


async def cancel_and_wait(tasks: Iterable[asyncio.Future[Any]], timeout_s: float,
                          what: str) -> bool:
    """Cancel ``tasks`` (again and again) until they end or ``timeout_s``
    passes. Returns True when all ended; the rest are abandoned and logged.

    Never raises for what the tasks raised: their outcome is collected so
    that asyncio does not report it as never retrieved.
    """
    tasks = list(tasks)
    pending = {t for t in tasks if not t.done()}
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while pending:
        remaining = deadline - loop.time()
        if remaining <= 0:
            break
        for t in pending:
            t.cancel()
        _, pending = await asyncio.wait(pending, timeout=min(RECANCEL_INTERVAL_S, remaining))
    for t in tasks:
        if t.done() and not t.cancelled():
            t.exception()
    if pending:
        log.error("%s: %d task(s) did not stop within %.1fs: abandoned", what, len(pending),
                  timeout_s)
        return False
    return True


async def settle(aw: Awaitable[object], timeout_s: float, what: str) -> bool:
    """Run ``aw`` for at most ``timeout_s`` seconds; then cancel it and give
    it at most one more second to go. Returns True when it finished in time.

    Errors from ``aw`` are logged, not raised: callers are shutdown paths,
    which must go on with their other steps.
    """
    task = asyncio.ensure_future(aw)
    done, _ = await asyncio.wait({task}, timeout=timeout_s)
    if not done:
        log.warning("%s did not finish within %.1fs: cancelled", what, timeout_s)
        await cancel_and_wait([task], 1.0, what)
        return False
    if not task.cancelled() and (exc := task.exception()) is not None:
        log.warning("%s failed: %s", what, exc or type(exc).__name__)
    return True
