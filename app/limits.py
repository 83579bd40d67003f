"""Per-connection limits that keep one client from crowding out the rest."""

from __future__ import annotations

import time


class TokenBucket:
    """``rate`` tokens per second, at most ``burst`` saved up.

    Publishing costs one token; without one the frame is refused with
    ``rate_limited`` and the socket stays open.
    """

    __slots__ = ("_rate", "_burst", "_tokens", "_at")

    def __init__(self, rate: float, burst: int) -> None:
        self._rate = rate
        self._burst = float(burst)
        self._tokens = float(burst)
        self._at = time.monotonic()

    def take(self) -> bool:
        now = time.monotonic()
        self._tokens = min(self._burst, self._tokens + (now - self._at) * self._rate)
        self._at = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False
