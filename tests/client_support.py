"""Helpers for the client SDK tests: fast client options, bounded collection, faults."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import Iterator, Sequence

from streamgate_client import Client, Gap, Item, Message, Options
from tests.support import Instance, scaled
from tests.support.ids import id_key

# Reconnect fast and find a frozen peer within about two seconds.
FAST = Options(
    open_timeout=scaled(2),
    connect_timeout=scaled(20),
    request_timeout=scaled(10),
    publish_timeout=scaled(30),
    ping_interval=0.5,
    ping_timeout=scaled(1),
    close_timeout=scaled(1),
    backoff_base=0.05,
    backoff_max=0.5,
)


def urls(*instances: Instance) -> list[str]:
    return [inst.ws_url() for inst in instances]


async def take(client: Client, count: int, *, timeout: float = 20.0) -> list[Item]:
    """The next `count` items; each one must come within `timeout` (scaled)."""
    return [await client.receive(timeout=scaled(timeout)) for _ in range(count)]


async def take_until(client: Client, last_id: str, into: list[Item], *, limit: int = 100_000,
                     timeout: float = 20.0) -> None:
    """Append items to `into` until a message with `last_id` (or a later one) arrived."""
    target = id_key(last_id)
    for _ in range(limit):
        messages = [i for i in into[-1:] if isinstance(i, Message)]
        if messages and id_key(messages[-1].id) >= target:
            return
        into.append(await client.receive(timeout=scaled(timeout)))
    raise AssertionError(f"{last_id} not reached within {limit} items")


def ids(items: Sequence[Item], room: str | None = None) -> list[str]:
    return [i.id for i in items if isinstance(i, Message) and (room is None or i.room == room)]


def gaps(items: Sequence[Item]) -> list[int]:
    """Positions of the Gap items."""
    return [n for n, i in enumerate(items) if isinstance(i, Gap)]


@contextlib.contextmanager
def frozen(inst: Instance) -> Iterator[None]:
    """SIGSTOP the instance for the block: its sockets stay open but nothing answers."""
    os.kill(inst.pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(inst.pid, signal.SIGCONT)


async def kill(inst: Instance) -> None:
    """SIGKILL, reaped off the event loop so that clients keep running meanwhile."""
    await asyncio.to_thread(inst.kill)


async def terminate(inst: Instance) -> None:
    """SIGTERM and wait for the exit (the drain needs the clients to answer the close)."""
    await asyncio.to_thread(inst.stop)


def assert_no_silent_hole(items: Sequence[Item], published: Sequence[str]) -> None:
    """Messages not separated by a Gap must be neighbours in `published`:
    the application may be told that it lost messages, but never skip some
    silently. No duplicate and no reordering either."""
    position = {id_: n for n, id_ in enumerate(published)}
    previous: int | None = None
    for item in items:
        if isinstance(item, Gap):
            previous = None
            continue
        here = position[item.id]
        if previous is not None:
            assert here == previous + 1, (
                f"silent hole: {published[previous]} then {item.id} "
                f"({here - previous - 1} messages skipped without a Gap)"
            )
        previous = here
