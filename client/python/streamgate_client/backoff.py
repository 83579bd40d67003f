"""Exponential backoff with full jitter, from tenacity's ``wait_random_exponential``.

Jitter matters here: when an instance dies, all of its clients reconnect at
once; a random delay in a window that doubles per attempt spreads them out.
"""

from __future__ import annotations

from tenacity import AsyncRetrying, RetryCallState, wait_random_exponential


class Backoff:
    """Delays for attempt 1, 2, 3...: uniform in [0, min(cap, base * 2**(n-1))]."""

    def __init__(self, base: float, cap: float) -> None:
        self._wait = wait_random_exponential(multiplier=base, max=cap)
        self._state = RetryCallState(AsyncRetrying(), None, (), {})

    @property
    def attempt(self) -> int:
        return self._state.attempt_number

    def next_delay(self) -> float:
        delay = float(self._wait(self._state))
        self._state.attempt_number += 1
        return delay

    def reset(self) -> None:
        self._state.attempt_number = 1
