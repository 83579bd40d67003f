"""The one retry layer for Redis calls.

redis-py's own retry is turned off on every client we build (see
``connection.py``): its silent reconnects hide failures, and a Pub/Sub
connection that reconnects silently loses the messages published during the
gap. Here, a call that fails for a reason a failover explains (connection
refused or reset, timeout, ``READONLY`` from a demoted master, ``LOADING``
from a restarting one, ``NOREPLICAS`` from a master that lost its replicas,
``CLUSTERDOWN``/``MOVED``/``ASK`` from a cluster whose slot map changed)
is retried with exponential backoff and jitter until a time budget runs out.
Then the caller gets :class:`StorageUnavailable`, which the service turns
into an ``unavailable`` answer: never a hang, never a crash.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from redis import exceptions as rex
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_delay,
    wait_random_exponential,
)

T = TypeVar("T")
log = logging.getLogger("streamgate.redis")

# CLUSTERDOWN, MOVED and ASK come from a Redis Cluster during a failover or
# a slot migration: the slot map is refreshed (RetryPolicy.recover) and the
# call tried again at the slot's new owner.
_TRANSIENT_PREFIXES = ("READONLY", "LOADING", "NOREPLICAS", "MASTERDOWN", "TRYAGAIN",
                       "CLUSTERDOWN", "MOVED", "ASK")
# Raised by the cluster client itself: no node known for a slot (yet).
_CLUSTER_TRANSIENT = (rex.ClusterDownError, rex.TryAgainError, rex.AskError,
                      rex.SlotNotCoveredError, rex.MasterDownError)


class StorageUnavailable(Exception):
    """Redis could not be reached or could not confirm within the budget."""


def is_transient(exc: BaseException) -> bool:
    """True for errors that a failover or restart explains and that may pass."""
    if isinstance(exc, (rex.ConnectionError, rex.TimeoutError, rex.BusyLoadingError,
                        rex.ReadOnlyError, TimeoutError, ConnectionError, OSError,
                        *_CLUSTER_TRANSIENT)):
        return True
    if isinstance(exc, rex.ResponseError):
        return str(exc).startswith(_TRANSIENT_PREFIXES)
    return False


async def _nothing() -> None:
    return None


@dataclass(frozen=True)
class RetryPolicy:
    """How long to keep trying, and what to do between attempts.

    ``recover`` runs before each new attempt: in Sentinel mode it drops idle
    pooled connections, so the next attempt asks the sentinels where the
    master is instead of reusing a socket to a dead or frozen one.
    """

    budget_s: float
    on_retry: Callable[[], None] = lambda: None
    recover: Callable[[], Awaitable[None]] = _nothing

    async def run(self, call: Callable[[], Awaitable[T]]) -> T:
        """Run ``call`` until it succeeds, fails for good, or the budget is spent.

        ``call`` must be safe to repeat: every write the service makes is
        either idempotent by itself or guarded by a client_id record.

        The first attempt runs on its own: tenacity's machinery (an
        ``AsyncRetrying`` and its attempt objects, a few percent of an
        instance when every append batch built one) is set up only once an
        attempt failed for a reason that may pass. The budget counts from
        the first attempt either way.
        """
        started = time.monotonic()
        try:
            return await call()
        except StorageUnavailable:
            raise
        except Exception as exc:
            if not is_transient(exc):
                _refuse(exc)
                raise
            first = exc
        remaining = self.budget_s - (time.monotonic() - started)
        if remaining <= 0:
            raise StorageUnavailable(str(first) or type(first).__name__) from first

        async def before_sleep(_: RetryCallState | None) -> None:
            self.on_retry()
            try:
                await self.recover()
            except Exception:
                pass

        # What tenacity would have done after the first failure: tell, recover,
        # wait (its first random exponential pause), then go on with the rest.
        await before_sleep(None)
        await asyncio.sleep(min(random.uniform(0, FIRST_PAUSE_S), remaining))
        remaining = self.budget_s - (time.monotonic() - started)
        retrying = AsyncRetrying(
            stop=stop_after_delay(max(0.0, remaining)),
            wait=wait_random_exponential(multiplier=0.05, max=1.0),
            retry=retry_if_exception(is_transient),
            before_sleep=before_sleep,
            reraise=True,
        )
        try:
            async for attempt in retrying:
                with attempt:
                    return await call()
        except StorageUnavailable:
            raise
        except Exception as exc:
            if is_transient(exc):
                raise StorageUnavailable(str(exc) or type(exc).__name__) from exc
            _refuse(exc)
            raise
        raise AssertionError("unreachable")  # pragma: no cover


# tenacity's first pause with wait_random_exponential(multiplier=0.05): up to 0.05 * 2.
FIRST_PAUSE_S = 0.1


def _refuse(exc: Exception) -> None:
    """A failure that retrying cannot help: a Redis one (NOAUTH, NOPERM, a
    protocol error) is still the storage saying no, and the client must hear
    `unavailable`; anything else is the caller's to see as it is."""
    if isinstance(exc, rex.RedisError):
        log.warning("redis refused a command: %s", exc)
        raise StorageUnavailable(str(exc) or type(exc).__name__) from exc
