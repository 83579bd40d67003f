"""Poll-with-deadline helpers: the only way tests wait for something to happen."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from .timeouts import scaled

T = TypeVar("T")


def wait_until(
    predicate: Callable[[], T],
    timeout: float,
    *,
    interval: float = 0.02,
    message: str | Callable[[], str] = "condition not met",
) -> T:
    """Call `predicate` until it returns something truthy; return that value.

    `timeout` is scaled by TEST_TIMEOUT_FACTOR. Raises AssertionError with
    `message` (and the last value seen) when the deadline passes.
    """
    deadline = time.monotonic() + scaled(timeout)
    last: Any = None
    while True:
        last = predicate()
        if last:
            return last
        if time.monotonic() >= deadline:
            text = message() if callable(message) else message
            raise AssertionError(f"timed out after {scaled(timeout):.1f}s: {text} (last: {last!r})")
        time.sleep(interval)


async def async_wait_until(
    predicate: Callable[[], T | Awaitable[T]],
    timeout: float,
    *,
    interval: float = 0.02,
    message: str | Callable[[], str] = "condition not met",
) -> T:
    """Async twin of `wait_until`; `predicate` may be a plain or an async callable."""
    deadline = time.monotonic() + scaled(timeout)
    last: Any = None
    while True:
        last = predicate()
        if inspect.isawaitable(last):
            last = await last
        if last:
            return last
        if time.monotonic() >= deadline:
            text = message() if callable(message) else message
            raise AssertionError(f"timed out after {scaled(timeout):.1f}s: {text} (last: {last!r})")
        await asyncio.sleep(interval)
