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

from collections.abc import Awaitable, Callable
import logging
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
        """

        async def before_sleep(_: RetryCallState) -> None:
            self.on_retry()
            try:
                await self.recover()
            except Exception:
                pass

        retrying = AsyncRetrying(
            stop=stop_after_delay(self.budget_s),
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
            if isinstance(exc, rex.RedisError):
                # Not retryable (NOAUTH, NOPERM, a protocol error): still the
                # storage saying no, and the client must hear `unavailable`.
                log.warning("redis refused a command: %s", exc)
                raise StorageUnavailable(str(exc) or type(exc).__name__) from exc
            raise
        raise AssertionError("unreachable")  # pragma: no cover
