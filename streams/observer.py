"""How the Redis layer reports what it sees, without importing a metrics library.

The service plugs in an implementation that feeds Prometheus; the default does
nothing, so ``streams`` stays usable (and testable) on its own.
"""

from __future__ import annotations

from typing import Protocol


class Observer(Protocol):
    def retry(self) -> None:
        """A Redis call failed transiently and is about to be retried."""

    def pubsub_reconnect(self) -> None:
        """The Pub/Sub connection was lost and is being rebuilt."""

    def gap_filled(self, entries: int) -> None:
        """Entries missed on the live path were read back from a stream."""

    def failover(self) -> None:
        """The Redis master changed address."""

    def canary_missed(self) -> None:
        """A Pub/Sub self-check did not come back: the listener was deaf."""


class NullObserver:
    def retry(self) -> None:
        pass

    def pubsub_reconnect(self) -> None:
        pass

    def gap_filled(self, entries: int) -> None:
        pass

    def failover(self) -> None:
        pass

    def canary_missed(self) -> None:
        pass
