"""Per-connection limits that keep one client from crowding out the rest."""

from __future__ import annotations

import time
from collections import OrderedDict


class TokenBucket:
    """``rate`` tokens per second, at most ``burst`` saved up.

    Each frame it guards (a publish, or a join/leave/ack on the second
    bucket) costs one token; without one the frame is refused with
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


class BucketsByUser:
    """One :class:`TokenBucket` per user for the HTTP publish route, which
    has no connection to hang a bucket on. Bounded: the least recently used
    users' buckets are forgotten past ``max_users`` (a forgotten user simply
    starts again with a full burst)."""

    def __init__(self, rate: float, burst: int, max_users: int = 10_000) -> None:
        self._rate = rate
        self._burst = burst
        self._max = max_users
        self._buckets: OrderedDict[str, TokenBucket] = OrderedDict()

    def take(self, user: str) -> bool:
        bucket = self._buckets.get(user)
        if bucket is None:
            bucket = self._buckets[user] = TokenBucket(self._rate, self._burst)
            if len(self._buckets) > self._max:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(user)
        return bucket.take()
