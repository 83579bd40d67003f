"""The one Pub/Sub connection of an instance.

Contract:
- Pub/Sub is only the fast path and is at-most-once. The bus never hides a
  lost connection: it reconnects itself (asking Sentinel for the master each
  time, in Sentinel mode), subscribes every wanted channel again, and for each
  room that was subscribed before it calls ``on_resync(room)`` once the new
  subscription is confirmed, so the owner can catch the room up from its
  stream. Nothing is read from the stream before the subscription is live, so
  nothing falls between the two.
- :meth:`Bus.subscribe` returns only when Redis has confirmed the
  subscription: from then on every notification of that room reaches
  ``on_entry``.
- ``on_entry`` and ``on_resync`` are called from the read loop and must not
  block: they only hand work to queues or tasks.
- A connection that stops answering is found by a PING every few seconds and
  a read timeout, and replaced.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable

from redis.asyncio.connection import AbstractConnection

from .keys import Keys
from .model import Envelope, decode_notification
from .observer import NullObserver, Observer
from .retry import StorageUnavailable

log = logging.getLogger("streamgate.bus")


class _Link:
    """One live Pub/Sub connection and the replies it still owes."""

    def __init__(self, conn: AbstractConnection) -> None:
        self.conn = conn
        self.write_lock = asyncio.Lock()
        # Per channel, futures for (UN)SUBSCRIBE commands in the order sent;
        # Redis confirms them in that order.
        self.pending: dict[str, list[asyncio.Future[None]]] = {}
        self.active: set[str] = set()

    async def send(self, *args: str) -> None:
        async with self.write_lock:
            await self.conn.send_command(*args)

    def fail_all(self) -> None:
        for futures in self.pending.values():
            for f in futures:
                if not f.done():
                    f.set_exception(StorageUnavailable("Pub/Sub connection lost"))
        self.pending.clear()


class Bus:
    def __init__(
        self,
        connect: Callable[[], AbstractConnection],
        keys: Keys,
        instance: str,
        on_entry: Callable[[Envelope], None],
        on_resync: Callable[[str], None],
        observer: Observer | None = None,
        ping_interval_s: float = 3.0,
    ) -> None:
        self._connect = connect
        self._keys = keys
        self._on_entry = on_entry
        self._on_resync = on_resync
        self._observer = observer or NullObserver()
        self._ping_interval = ping_interval_s
        self._canary = keys.canary(instance)
        self._wanted: set[str] = set()
        self._ever: set[str] = set()
        self._link: _Link | None = None
        self._up = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._canary_waiters: list[asyncio.Future[None]] = []
        self.reconnects = 0

    @property
    def connected(self) -> bool:
        return self._link is not None and self._canary in self._link.active

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="pubsub-bus")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None

    async def subscribe(self, room: str, timeout_s: float) -> None:
        """Subscribe to a room's channel; return once Redis confirmed it."""
        channel = self._keys.channel(room)
        self._wanted.add(channel)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while True:
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise StorageUnavailable("Pub/Sub subscription not confirmed in time")
            try:
                async with asyncio.timeout(remaining):
                    await self._up.wait()
                    link = self._link
                    assert link is not None
                    fut = loop.create_future()
                    link.pending.setdefault(channel, []).append(fut)
                    await link.send("SUBSCRIBE", channel)
                    await fut
                    self._ever.add(channel)
                    return
            except TimeoutError:
                raise StorageUnavailable("Pub/Sub subscription not confirmed in time") from None
            except (StorageUnavailable, ConnectionError, OSError):
                # The link broke under us; the run loop is rebuilding it.
                await asyncio.sleep(0.05)

    async def unsubscribe(self, room: str) -> None:
        channel = self._keys.channel(room)
        self._wanted.discard(channel)
        self._ever.discard(channel)
        link = self._link
        if link is None:
            return
        fut = asyncio.get_running_loop().create_future()
        link.pending.setdefault(channel, []).append(fut)
        try:
            await link.send("UNSUBSCRIBE", channel)
        except Exception:  # the run loop notices the broken link
            return

    async def check(self, timeout_s: float) -> bool:
        """Round-trip a canary through Pub/Sub: is the live path really alive?"""
        link = self._link
        if link is None:
            return False
        fut = asyncio.get_running_loop().create_future()
        self._canary_waiters.append(fut)
        try:
            async with asyncio.timeout(timeout_s):
                await link.send("PING", "canary")
                await fut
            return True
        except Exception:
            return False
        finally:
            if fut in self._canary_waiters:
                self._canary_waiters.remove(fut)

    async def _run(self) -> None:
        backoff = 0.05
        while True:
            conn = self._connect()
            link: _Link | None = None
            pinger: asyncio.Task[None] | None = None
            try:
                await conn.connect()
                link = _Link(conn)
                channels = [self._canary, *sorted(self._wanted)]
                await link.send("SUBSCRIBE", *channels)
                self._link = link
                pinger = asyncio.create_task(self._ping(link))
                backoff = 0.05
                await self._read(link)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("pubsub connection lost: %s", exc or type(exc).__name__)
            finally:
                self._up.clear()
                self._link = None
                if pinger is not None:
                    pinger.cancel()
                if link is not None:
                    link.fail_all()
                try:
                    await conn.disconnect()
                except Exception:
                    pass
            self.reconnects += 1
            self._observer.pubsub_reconnect()
            await asyncio.sleep(backoff * (0.5 + random.random()))
            backoff = min(backoff * 2, 1.0)

    async def _ping(self, link: _Link) -> None:
        while True:
            await asyncio.sleep(self._ping_interval)
            await link.send("PING")

    async def _read(self, link: _Link) -> None:
        read_timeout = self._ping_interval * 3
        while True:
            reply = await link.conn.read_response(timeout=read_timeout)
            if not isinstance(reply, list) or not reply:
                continue
            kind = reply[0]
            if kind == b"message":
                self._deliver(reply[1], reply[2])
            elif kind == b"subscribe":
                self._confirmed(link, reply[1].decode(), subscribed=True)
            elif kind == b"unsubscribe":
                self._confirmed(link, reply[1].decode(), subscribed=False)
            elif kind == b"pong":
                if reply[1] == b"canary":
                    for f in self._canary_waiters:
                        if not f.done():
                            f.set_result(None)

    def _deliver(self, channel: bytes, payload: bytes) -> None:
        room = self._keys.room_of_channel(channel.decode())
        if room is None:
            return
        try:
            env = decode_notification(room, payload)
        except ValueError:
            log.error("undecodable notification on %s", channel)
            return
        self._on_entry(env)

    def _confirmed(self, link: _Link, channel: str, subscribed: bool) -> None:
        if subscribed:
            link.active.add(channel)
        else:
            link.active.discard(channel)
        futures = link.pending.get(channel)
        if futures:
            fut = futures.pop(0)
            if not fut.done():
                fut.set_result(None)
            return
        # A subscription sent by the run loop itself, on (re)connect.
        if channel == self._canary:
            self._up.set()
        elif subscribed and channel in self._ever:
            room = self._keys.room_of_channel(channel)
            if room is not None:
                self._on_resync(room)
