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
- A connection that stops answering is found by a PING every second: when
  nothing at all has been read for three intervals it is replaced. A
  connection that answers but has gone deaf (subscribed on a server that no
  longer gets the publishes, such as a resumed old master) is found by a
  canary: every few seconds the instance publishes a nonce on its own
  channel through the command connection and expects it back here; when it
  does not come back in time the connection is replaced and every room
  caught up, and the bus reports unhealthy.
- Replies are read straight from the connection's stream and parsed with
  hiredis, everything one socket read brought in one go: no coroutine,
  timeout or reply wrapper per notification, and the channel's room is
  looked up, not parsed, for each one.

In a Redis Cluster one ``Bus`` is one shard's link (``sharded=True``): it
speaks ``SSUBSCRIBE`` (one channel per command, as a cluster requires) and
hears ``smessage``; its canary channel hashes to a slot of its own node.
When the node stops serving a channel's slot (a migration, a failover), it
says so, with ``sunsubscribe`` or a ``MOVED`` error to the subscribe; the
bus then drops the channel and calls ``on_lost(room)``, and
:mod:`streams.shardbus` subscribes the room at its new owner.
"""

from __future__ import annotations

import asyncio
import logging
import random
import uuid
from collections.abc import Awaitable, Callable

import hiredis
from redis.asyncio.connection import AbstractConnection
from redis.crc import key_slot

from .bounded import cancel_and_wait
from .keys import Keys
from .entries import decode_notification
from .model import Envelope
from .observer import NullObserver, Observer
from .retry import StorageUnavailable

log = logging.getLogger("streamgate.bus")

# One read from the connection: at high rates it holds many notifications,
# all handled before the next read.
READ_BYTES = 64 * 1024


def _stream_of(conn: AbstractConnection) -> asyncio.StreamReader:
    """The stream redis-py's own parser reads a connected connection from.

    redis-py has no public handle on it. The bus owns this connection for
    its whole life and, after the handshake, reads nothing through redis-py
    again, so the stream is all its. Fail at connect, loudly, if a redis-py
    release stores it elsewhere (tests/test_bus.py connects through this).
    """
    stream = getattr(conn, "_reader", None)
    if not isinstance(stream, asyncio.StreamReader):
        raise RuntimeError("this redis-py connection keeps no asyncio stream in _reader")
    return stream


class SlotMoved(StorageUnavailable):
    """The node does not serve the channel's slot (any more)."""


class _Link:
    """One live Pub/Sub connection and the replies it still owes."""

    def __init__(self, conn: AbstractConnection, stream: asyncio.StreamReader, now: float) -> None:
        self.conn = conn
        self.stream = stream
        self.heard = now  # when something was last read from the connection
        self.closed = False
        self.write_lock = asyncio.Lock()
        # Per channel, futures for (UN)SUBSCRIBE commands in the order sent;
        # Redis confirms them in that order.
        self.pending: dict[str, list[asyncio.Future[None]]] = {}
        self.active: set[str] = set()

    async def send(self, *args: str) -> None:
        # redis-py would silently open a fresh (unsubscribed) connection
        # under us if this one dropped: refuse instead, the run loop rebuilds.
        if self.closed or not self.conn.is_connected:
            raise ConnectionError("Pub/Sub link closed")
        async with self.write_lock:
            await self.conn.send_command(*args)

    async def close(self) -> None:
        self.closed = True
        # Wake the read loop now: the disconnect below may wait up to its
        # timeout for a frozen peer to take what is still buffered.
        self.stream.feed_eof()
        try:
            await self.conn.disconnect()
        except Exception:
            pass

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
        announce: Callable[[str, str], Awaitable[object]],
        observer: Observer | None = None,
        ping_interval_s: float = 1.0,
        canary_interval_s: float = 2.0,
        *,
        sharded: bool = False,
        canary: str | None = None,
        on_lost: Callable[[str], None] = lambda room: None,
    ) -> None:
        self._connect = connect
        self._sharded = sharded
        self._sub, self._unsub = (("SSUBSCRIBE", "SUNSUBSCRIBE") if sharded
                                  else ("SUBSCRIBE", "UNSUBSCRIBE"))
        self._on_lost = on_lost
        self._keys = keys
        self._on_entry = on_entry
        self._on_resync = on_resync
        self._observer = observer or NullObserver()
        self._ping_interval = ping_interval_s
        self._canary = canary or keys.canary(instance)
        self._canary_channel = self._canary.encode()
        # Every wanted room channel, as Redis names it in a message, to its room.
        self._room_of: dict[bytes, str] = {}
        self._wanted: set[str] = set()
        self._ever: set[str] = set()
        self._link: _Link | None = None
        self._up = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._announce = announce
        self._canary_interval = canary_interval_s
        self._canary_waiters: dict[str, asyncio.Future[None]] = {}
        self._canary_ok = False
        self._canaries: set[asyncio.Task[None]] = set()
        self._stopping = False
        self.reconnects = 0

    @property
    def canary(self) -> str:
        return self._canary

    @property
    def healthy(self) -> bool:
        """Subscribed, and the last canary came back in time."""
        return self._link is not None and self._canary in self._link.active and self._canary_ok

    @property
    def serving(self) -> bool:
        """Able to serve this instance's rooms (``/readyz``): one link, so healthy."""
        return self.healthy

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="pubsub-bus")

    async def stop(self, timeout_s: float = 3.0) -> None:
        """End the run loop within ``timeout_s``, whatever Redis does.

        A cancellation that lands inside redis-py's connect can be swallowed
        there, so one ``cancel()`` is not enough: the loop also checks
        ``_stopping``, the task is cancelled again until it ends, and a task
        that still runs at the deadline is abandoned (the process is on its
        way out; waiting longer would only keep it from exiting).
        """
        self._stopping = True
        task, self._task = self._task, None
        tasks: list[asyncio.Task[None]] = [*self._canaries]
        if task is not None:
            tasks.append(task)
        await cancel_and_wait(tasks, timeout_s, "pubsub bus")

    async def subscribe(self, room: str, timeout_s: float) -> None:
        """Subscribe to a room's channel; return once Redis confirmed it."""
        channel = self._keys.channel(room)
        self._wanted.add(channel)
        self._room_of[channel.encode()] = room
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
                    await link.send(self._sub, channel)
                    await fut
                    self._ever.add(channel)
                    return
            except TimeoutError:
                raise StorageUnavailable("Pub/Sub subscription not confirmed in time") from None
            except SlotMoved:
                self._wanted.discard(channel)
                self._room_of.pop(channel.encode(), None)
                raise
            except (StorageUnavailable, ConnectionError, OSError):
                # The link broke under us; the run loop is rebuilding it.
                await asyncio.sleep(0.05)

    async def reconnect(self) -> None:
        """Drop the current link (the master moved): the run loop rebuilds
        it where the master is now and catches every room up."""
        link = self._link
        if link is not None:
            await link.close()

    async def unsubscribe(self, room: str) -> None:
        channel = self._keys.channel(room)
        self._wanted.discard(channel)
        self._ever.discard(channel)
        self._room_of.pop(channel.encode(), None)
        link = self._link
        if link is None:
            return
        fut = asyncio.get_running_loop().create_future()
        link.pending.setdefault(channel, []).append(fut)
        try:
            await link.send(self._unsub, channel)
        except Exception:  # the run loop notices the broken link
            return

    async def _run(self) -> None:
        backoff = 0.05
        while not self._stopping:
            conn = self._connect()
            link: _Link | None = None
            pinger: asyncio.Task[None] | None = None
            try:
                await conn.connect()
                link = _Link(conn, _stream_of(conn), asyncio.get_running_loop().time())
                channels = [self._canary, *sorted(self._wanted)]
                if self._sharded:  # a cluster takes one slot per SSUBSCRIBE
                    for channel in channels:
                        await link.send(self._sub, channel)
                else:
                    await link.send(self._sub, *channels)
                self._link = link
                pinger = asyncio.create_task(self._watch(link))
                await self._read(link)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("pubsub connection lost: %s", exc or type(exc).__name__)
            finally:
                self._up.clear()
                self._canary_ok = False
                self._link = None
                if link is not None:
                    link.closed = True
                    link.fail_all()
                    # Reset the backoff only after a link that really worked.
                    backoff = 0.05 if self._canary in link.active else min(backoff * 2, 1.0)
                else:
                    backoff = min(backoff * 2, 1.0)
                if pinger is not None:
                    pinger.cancel()
                    # Collect its end (a PING on the broken link fails too),
                    # without ever waiting on it for long.
                    await asyncio.wait([pinger], timeout=1.0)
                    if pinger.done() and not pinger.cancelled():
                        pinger.exception()
                try:
                    await conn.disconnect()
                except Exception:
                    pass
            if self._stopping:
                return
            self.reconnects += 1
            self._observer.pubsub_reconnect()
            await asyncio.sleep(backoff * (0.5 + random.random()))

    async def _watch(self, link: _Link) -> None:
        """PING every second; send a canary every few seconds; replace the
        link once nothing has been read for three intervals (the PINGs are
        answered even when no room has traffic)."""
        loop = asyncio.get_running_loop()
        next_canary = loop.time()
        silent_s = self._ping_interval * 3
        try:
            while not link.closed:
                if loop.time() - link.heard > silent_s:
                    # After a stall of the whole loop, a read woken in the
                    # same iteration as this task goes first.
                    await asyncio.sleep(0)
                    if loop.time() - link.heard > silent_s:
                        log.warning("pubsub connection silent for %.1f s: rebuilding it",
                                    loop.time() - link.heard)
                        break
                await link.send("PING")
                if loop.time() >= next_canary and self._canary in link.active:
                    next_canary = loop.time() + self._canary_interval
                    task = asyncio.create_task(self._send_canary(link))
                    self._canaries.add(task)
                    task.add_done_callback(self._canaries.discard)
                await asyncio.sleep(self._ping_interval)
        except (ConnectionError, OSError, TimeoutError) as exc:
            log.warning("pubsub ping failed: %s", exc or type(exc).__name__)
        # Closing the connection ends the read loop, which rebuilds the link.
        await link.close()

    async def _send_canary(self, link: _Link) -> None:
        nonce = uuid.uuid4().hex
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._canary_waiters[nonce] = fut
        try:
            async with asyncio.timeout(self._canary_interval):
                await self._announce(self._canary, nonce)
                await fut
            self._canary_ok = True
        except Exception as exc:
            if self._link is link:
                log.warning("pubsub canary did not come back (%s): rebuilding the subscription",
                            exc or type(exc).__name__)
                self._canary_ok = False
                self._observer.canary_missed()
                await link.close()
        finally:
            self._canary_waiters.pop(nonce, None)

    async def _read(self, link: _Link) -> None:
        """Read until the connection fails: every reply a socket read brought
        in is handled before the next read."""
        stream = link.stream
        parser = hiredis.Reader()
        loop = asyncio.get_running_loop()
        while True:
            data = await stream.read(READ_BYTES)
            if not data:
                raise ConnectionError("Pub/Sub connection closed")
            link.heard = loop.time()
            parser.feed(data)
            while (reply := parser.gets()) is not False:
                if type(reply) is not list:
                    if isinstance(reply, hiredis.ReplyError):
                        if not self._sharded:
                            # One Redis: the run loop rebuilds the link.
                            raise ConnectionError(f"Pub/Sub error reply: {reply}")
                        self._refused(link, reply)  # a subscribe this node refused
                        if self._canary not in link.active:
                            # The refused one was the link's own canary (sent
                            # first, so answered first): this node does not
                            # serve its slot, or not yet (CLUSTERDOWN while a
                            # shard is rebuilt). Without it the link never
                            # comes up, yet PINGs keep it looking alive:
                            # connect again until the node serves the slot.
                            raise ConnectionError(f"Pub/Sub canary refused: {reply}")
                    continue
                kind = reply[0]
                if kind == b"message" or kind == b"smessage":
                    self._deliver(reply[1], reply[2])
                elif kind == b"subscribe" or kind == b"ssubscribe":
                    self._confirmed(link, reply[1].decode(), subscribed=True)
                elif kind == b"unsubscribe" or kind == b"sunsubscribe":
                    self._confirmed(link, reply[1].decode(), subscribed=False)

    def _refused(self, link: _Link, exc: Exception) -> None:
        """``MOVED <slot> ...`` (or CLUSTERDOWN...) to an SSUBSCRIBE: every
        channel of that slot waiting here is not this node's any more."""
        parts = str(exc).split()
        slot = int(parts[1]) if len(parts) > 1 and parts[0] in ("MOVED", "ASK") else None
        log.warning("pubsub subscribe refused: %s", exc)
        for channel in [*link.pending, *self._wanted]:
            if slot is not None and key_slot(channel.encode()) != slot:
                continue
            futures = link.pending.pop(channel, [])
            for fut in futures:
                if not fut.done():
                    fut.set_exception(SlotMoved(channel))
            self._lose(channel)

    def _deliver(self, channel: bytes, payload: bytes) -> None:
        room = self._room_of.get(channel)
        if room is None:
            if channel == self._canary_channel:
                fut = self._canary_waiters.get(payload.decode())
                if fut is not None and not fut.done():
                    fut.set_result(None)
            return  # a room given up since: its last notifications
        try:
            env = decode_notification(room, payload)
        except ValueError:
            log.error("undecodable notification on %s", channel)
            return
        self._on_entry(env)

    def _lose(self, channel: str) -> None:
        """This node no longer serves ``channel`` (sharded links only)."""
        room = self._keys.room_of_channel(channel)
        if room is None or channel not in self._wanted:
            return
        self._wanted.discard(channel)
        self._ever.discard(channel)
        self._room_of.pop(channel.encode(), None)
        self._on_lost(room)

    def _confirmed(self, link: _Link, channel: str, subscribed: bool) -> None:
        if subscribed:
            link.active.add(channel)
        else:
            link.active.discard(channel)
            if self._sharded and not link.pending.get(channel):
                # Nobody asked: the node gave the channel's slot away.
                self._lose(channel)
                return
        futures = link.pending.get(channel)
        if futures:
            fut = futures.pop(0)
            if not futures:
                # Free the channel's entry with its last reply: a long-lived
                # link sees every room ever joined here.
                del link.pending[channel]
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
