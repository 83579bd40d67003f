"""Sharded Pub/Sub for a Redis Cluster: one link per master, rooms routed by slot.

Contract (the same as :class:`streams.bus.Bus`, seen from the hub):

- :meth:`ShardedBus.subscribe` returns once the master that owns the room's
  slot has confirmed the ``SSUBSCRIBE``; from then on every notification of
  the room reaches ``on_entry``.
- When a room's slot moves to another master (a live migration, a failover),
  the room is subscribed at the new owner and, once that is confirmed,
  ``on_resync(room)`` makes the hub catch the room up from its stream. So a
  notification missed while the room had no live subscription is read from
  the stream, and one heard twice (old and new owner) is dropped by the
  room's chain: nothing lost, nothing doubled, no client reconnects.
- A move is noticed three ways: the old node says ``sunsubscribe`` for the
  channel, or answers an ``SSUBSCRIBE`` with ``MOVED`` (both reported by the
  link as ``on_lost``), or the periodic reconcile finds the slot map says
  another master owns the room now (a dead master says nothing).
  ``on_moved`` hears of each move that the bus made itself (the owner
  changed under a live subscription), so that the owner can forget what it
  cached from the old master.

Each link is a :class:`~streams.bus.Bus` with ``sharded=True``: its own
connection, PING and canary (on a channel that hashes to one of its own
node's slots), its own reconnects. :meth:`ShardedBus.shards` reports each
link's health for ``/readyz``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Protocol

from redis.asyncio.connection import AbstractConnection

from .bounded import cancel_and_wait
from .bus import Bus, SlotMoved
from .keys import Keys
from .model import Envelope
from .observer import NullObserver, Observer
from .retry import StorageUnavailable

log = logging.getLogger("streamgate.bus")

Address = tuple[str, int]
# How often the slot map is refreshed and every room's link checked.
RECONCILE_S = 1.0
# One attempt at subscribing at a room's owner; a dead owner costs this.
ATTEMPT_S = 1.0
MAX_CANARY_TAGS = 100_000


class SlotMap(Protocol):
    """What the bus needs to know of the cluster (see RedisConnector)."""

    def owner(self, key: str) -> Address | None: ...
    def masters(self) -> list[Address]: ...
    async def refresh(self) -> None: ...
    def node_connection(self, host: str, port: int) -> AbstractConnection: ...


class ShardedBus:
    def __init__(
        self,
        slots: SlotMap,
        keys: Keys,
        instance: str,
        on_entry: Callable[[Envelope], None],
        on_resync: Callable[[str], None],
        announce: Callable[[str, str], Awaitable[object]],
        observer: Observer | None = None,
        ping_interval_s: float = 1.0,
        canary_interval_s: float = 2.0,
        on_moved: Callable[[], None] = lambda: None,
    ) -> None:
        self._slots = slots
        self._on_moved = on_moved
        self._keys = keys
        self._instance = instance
        self._on_entry = on_entry
        self._on_resync = on_resync
        self._announce = announce
        self._observer = observer or NullObserver()
        self._ping, self._canary_every = ping_interval_s, canary_interval_s
        self._links: dict[Address, Bus] = {}
        self._whole_once = False  # every master's link was healthy at least once
        self._wanted: set[str] = set()
        self._placed: dict[str, Address] = {}  # confirmed at that master
        self._locks: dict[str, asyncio.Lock] = {}
        self._poke = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    # -- health ----------------------------------------------------------------

    @property
    def healthy(self) -> bool:
        """Every master has a link, and every link is healthy."""
        masters = self._slots.masters()
        return bool(masters) and all(
            (link := self._links.get(m)) is not None and link.healthy for m in masters)

    @property
    def serving(self) -> bool:
        """Whether this instance can serve (``/readyz``).

        Until every master's link has been healthy once, only all of them
        will do: a starting instance whose links lag is not yet as able as
        the others. From then on, one healthy link is enough: a shard in
        failover looks the same from every instance, so it is no reason to
        take them out of a load balancer while the other shards serve."""
        if not self._whole_once:
            self._whole_once = self.healthy
            return self._whole_once
        return any((link := self._links.get(m)) is not None and link.healthy
                   for m in self._slots.masters())

    @property
    def reconnects(self) -> int:
        return sum(link.reconnects for link in self._links.values())

    def shards(self) -> dict[str, dict[str, object]]:
        """Per master: whether its link is healthy, how many rooms it carries."""
        counts: dict[Address, int] = {}
        for address in self._placed.values():
            counts[address] = counts.get(address, 0) + 1
        out: dict[str, dict[str, object]] = {}
        for m in self._slots.masters():
            link = self._links.get(m)
            out[f"{m[0]}:{m[1]}"] = {"healthy": bool(link and link.healthy),
                                     "rooms": counts.get(m, 0)}
        return out

    # -- life ------------------------------------------------------------------

    def start(self) -> None:
        self._task = asyncio.create_task(self._reconcile_loop(), name="pubsub-shards")

    async def stop(self, timeout_s: float = 3.0) -> None:
        self._stopping = True
        task, self._task = self._task, None
        links = list(self._links.values())
        await asyncio.gather(
            cancel_and_wait([task] if task else [], timeout_s, "pubsub shard router"),
            *(link.stop(timeout_s) for link in links),
        )

    async def reconnect(self) -> None:
        for link in list(self._links.values()):
            await link.reconnect()

    # -- rooms -----------------------------------------------------------------

    async def subscribe(self, room: str, timeout_s: float) -> None:
        """Subscribe at the room's owner; return once it confirmed."""
        self._wanted.add(room)
        try:
            async with asyncio.timeout(timeout_s):
                await self._place(room, resync=False)
        except TimeoutError:
            raise StorageUnavailable("Pub/Sub subscription not confirmed in time") from None

    async def unsubscribe(self, room: str) -> None:
        self._wanted.discard(room)
        async with self._lock(room):
            address = self._placed.pop(room, None)
            link = self._links.get(address) if address else None
            if link is not None and room not in self._wanted:
                await link.unsubscribe(room)
        if room not in self._wanted:
            self._locks.pop(room, None)

    def _lock(self, room: str) -> asyncio.Lock:
        return self._locks.setdefault(room, asyncio.Lock())

    async def _place(self, room: str, resync: bool) -> None:
        """Until the room is confirmed at the master the slot map names."""
        channel = self._keys.channel(room)
        async with self._lock(room):
            for attempt in range(1_000_000):
                if room not in self._wanted or self._stopping:
                    return
                owner = self._slots.owner(channel)
                if owner is not None and self._placed.get(room) == owner:
                    return
                if owner is not None:
                    try:
                        await self._link(owner).subscribe(room, ATTEMPT_S)
                    except SlotMoved:
                        pass  # the map was stale: refresh and try the new owner
                    except StorageUnavailable:
                        pass  # that master does not answer (yet)
                    else:
                        old = self._placed.get(room)
                        self._placed[room] = owner
                        if old is not None and old != owner:
                            self._on_moved()
                            if old in self._links:
                                await self._links[old].unsubscribe(room)
                        if resync:
                            self._on_resync(room)
                        return
                await self._refresh()
                await asyncio.sleep(min(0.05 * (attempt + 1), 0.5))

    def _lost(self, address: Address, room: str) -> None:
        """A link says its node gave the room's slot away."""
        if self._placed.get(room) == address:
            del self._placed[room]
        self._poke.set()

    # -- links -------------------------------------------------------------------

    def _link(self, address: Address) -> Bus:
        link = self._links.get(address)
        if link is None:
            link = Bus(
                lambda: self._slots.node_connection(*address), self._keys, self._instance,
                on_entry=self._on_entry, on_resync=self._on_resync,
                announce=self._announce, observer=self._observer,
                ping_interval_s=self._ping, canary_interval_s=self._canary_every,
                sharded=True, canary=self._canary_for(address),
                on_lost=lambda room: self._lost(address, room),
            )
            self._links[address] = link
            link.start()
        return link

    def _canary_for(self, address: Address) -> str:
        """A canary channel whose slot ``address`` owns, so the canary
        travels through that very node."""
        for t in range(MAX_CANARY_TAGS):
            channel = self._keys.canary(self._instance, str(t))
            if self._slots.owner(channel) == address:
                return channel
        raise StorageUnavailable(f"no slot of {address} found for a canary")

    async def _refresh(self) -> None:
        try:
            await self._slots.refresh()
        except Exception as exc:  # no node answers right now: keep the old map
            log.warning("cluster slot map refresh failed: %s", exc)

    async def _reconcile_loop(self) -> None:
        while not self._stopping:
            try:
                await self._reconcile()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("pubsub shard reconcile failed: %s", exc)
            try:
                async with asyncio.timeout(RECONCILE_S):
                    await self._poke.wait()
            except TimeoutError:
                pass
            self._poke.clear()

    async def _reconcile(self) -> None:
        """Refresh the slot map; give every master a link, move every room
        whose slot has a new owner, retire links of nodes that own nothing."""
        await self._refresh()
        masters = set(self._slots.masters())
        for m in masters:
            link = self._link(m)
            if self._slots.owner(link.canary) != m:  # the canary's slot moved
                await self._retire(m)
                self._link(m)
        moves = [room for room in self._wanted
                 if self._placed.get(room) != self._slots.owner(self._keys.channel(room))]
        if moves:  # a room whose owner is down waits for the next round
            await asyncio.gather(*(self._move(room) for room in moves))
        for address in [a for a in self._links if a not in masters]:
            if address not in self._placed.values():
                await self._retire(address)

    async def _move(self, room: str) -> None:
        try:
            async with asyncio.timeout(2 * ATTEMPT_S):
                await self._place(room, resync=True)
        except TimeoutError:
            pass

    async def _retire(self, address: Address) -> None:
        link = self._links.pop(address, None)
        if link is None:
            return
        for room, where in list(self._placed.items()):
            if where == address:
                del self._placed[room]
        await link.stop()
        self._poke.set()

