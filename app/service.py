"""The running instance: Redis clients, log, bus, hub, presence, built in the
lifespan and torn down with it (no import-time singletons).

The operations shared by the socket and the HTTP routes live here, so both
apply the same rights and the same durability rule.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Callable

from streams.bounded import cancel_and_wait, settle
from streams.bus import Bus
from streams.connection import RedisConnector
from streams.joinpoint import JoinPoint, resolve
from streams.keys import Keys
from streams.log import Appended, ReplicaAcks, RoomLog
from streams.model import Envelope
from streams.presence import Presence, part_of
from streams.shardbus import ShardedBus
from streams.retry import RetryPolicy, StorageUnavailable

from .auth import Authenticator, Principal
from .buildinfo import build_info
from .config import Settings
from .hub import Hub
from .limits import BucketsByUser
from .metrics import Metrics
from .outbox import Outbox
from .session import Session

log = logging.getLogger("streamgate.service")

# Bounds of the shutdown steps (see Service.stop).
STOP_TASKS_S = 2.0
STOP_REDIS_S = 1.5
# One disconnect's presence clean-up; how many may run at once.
PRESENCE_CLEANUP_S = 2.0
MAX_CLEANUPS = 1000
# In a Redis Cluster, the online set is split in this many buckets by user
# (see streams/keys.py), so that the heartbeat spreads over the shards.
PRESENCE_BUCKETS = 16
# The presence heartbeat's interval is cut into this many ticks (fewer when
# a tick would be shorter than PRESENCE_TICK_S): one burst per interval made
# every append and notification of that moment wait behind it.
PRESENCE_PARTS = 10
PRESENCE_TICK_S = 0.1


class Forbidden(Exception):
    pass


class Service:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.instance = settings.instance_id
        self.metrics = Metrics(settings.instance_id, build_info(settings.build_sha))
        self.auth = Authenticator(settings)
        self.redis = RedisConnector(settings.redis)
        clustered = self.redis.clustered
        self.keys = Keys(settings.key_prefix,
                         presence_buckets=PRESENCE_BUCKETS if clustered else 1)
        self.redis.on_failover = self._master_moved
        budget = settings.retry_budget_s
        policy = RetryPolicy(budget, on_retry=self.metrics.retry, recover=self.redis.recover)
        acks = (
            ReplicaAcks(settings.min_replicas, settings.replica_ack_timeout_ms)
            if settings.durability == "replica" else None
        )
        self.log = RoomLog(
            self.redis.client, self.keys, settings.room_history_maxlen, policy, replica_acks=acks,
            sharded=clustered, node_for=self.redis.node_client if clustered else None,
        )
        self.hub = Hub(
            self.log, subscribe_timeout_s=budget, on_gap_filled=self.metrics.gap_filled,
            on_handover=lambda env: self.metrics.handed_over(env.ts),
        )
        self.bus: Bus | ShardedBus
        if clustered:
            self.bus = ShardedBus(
                self.redis, self.keys, self.instance,
                on_entry=self.hub.on_entry, on_resync=self.hub.on_resync,
                announce=self.redis.client.spublish, observer=self.metrics,
                # A room's slot has a new owner, which may lack entries the
                # old one had (leader durability): cached pages go.
                on_moved=self.hub.forget_pages,
            )
        else:
            self.bus = Bus(
                self.redis.pubsub_connection, self.keys, self.instance,
                on_entry=self.hub.on_entry, on_resync=self.hub.on_resync,
                announce=self.redis.client.publish, observer=self.metrics,
            )
        self.hub.bind(self.bus)
        self.presence = Presence(self.redis.client, self.keys, self.instance,
                                 settings.presence_ttl_s, policy)
        self.users: Counter[str] = Counter()
        self.http_publish_limit = BucketsByUser(settings.publish_rate, settings.publish_burst)
        self.connections = 0
        self.conns: set[object] = set()  # live connections, for drain and metrics
        self.draining = False
        self._heartbeat: asyncio.Task[None] | None = None
        self._watchdog: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._cleanups: set[asyncio.Task[None]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None  # for the task gauge
        self.metrics.watch(
            queued=lambda: sum(len(c.outbox) for c in self.conns),  # type: ignore[attr-defined]
            rooms=lambda: len(self.hub),
            ready=lambda: float(not self.draining and self.bus.serving),
            draining=lambda: float(self.draining),
            tasks=self._count_tasks,
            catching_up=lambda: sum(1 for c in self.conns
                                    if c.session.worker is not None),  # type: ignore[attr-defined]
            shards_unhealthy=lambda: sum(1 for s in (self.shards() or {}).values()
                                         if not s["healthy"]),
        )

    def _count_tasks(self) -> float:
        loop = self._loop
        return float(len(asyncio.all_tasks(loop))) if loop is not None else 0.0

    def _spawn(self, coro, name: str) -> None:  # type: ignore[no-untyped-def]
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _master_moved(self) -> None:
        self.metrics.failover()
        self.hub.forget_pages()
        self._spawn(self.bus.reconnect(), "bus-reconnect")

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self.bus.start()
        self._spawn(self.redis.watch_master(), "master-watch")
        self._heartbeat = asyncio.create_task(self._refresh_presence(), name="presence")
        self._watchdog = asyncio.create_task(self._watch_writers(), name="slow-watchdog")

    async def stop(self) -> None:
        """Tear everything down in a few seconds (``STOP_TASKS_S`` +
        ``STOP_REDIS_S`` + 1 at most), whatever Redis does.

        Runs on every way out of the lifespan, including a failed bind right
        after start-up (the bus may still be connecting) and a SIGTERM while
        Redis is gone: each step is bounded on its own, so one that hangs
        cannot keep the others, or the process, from ending.
        """
        background = [t for t in (self._heartbeat, self._watchdog, *self._tasks, *self._cleanups)
                      if t is not None]
        await asyncio.gather(
            cancel_and_wait(background, STOP_TASKS_S, "service background tasks"),
            self.bus.stop(timeout_s=STOP_TASKS_S),
            self.hub.close(timeout_s=STOP_TASKS_S),
        )
        await settle(self.redis.close(), STOP_REDIS_S, "closing the Redis clients")

    async def ready(self) -> bool:
        """Able to serve: not draining, and Pub/Sub healthy (in cluster mode:
        on at least one master, whose link's PING and canary are the Redis
        check; a PING to every master would fail while one shard is in
        failover, and so take every instance out of service at once)."""
        if self.draining or not self.bus.serving:
            return False
        if isinstance(self.bus, ShardedBus):
            return True
        try:
            async with asyncio.timeout(1.0):
                await self.redis.ping()
            return True
        except Exception:
            return False

    # -- writes ---------------------------------------------------------------

    async def publish(self, who: Principal, room: str, body_json: str,
                      client_id: str | None) -> Appended:
        if not who.may_publish(room):
            raise Forbidden(room)
        return await self._store(who, room, body_json, client_id)

    @property
    def publishes_keep_order(self) -> bool:
        """Whether publishes started one after another are stored in that
        order while they overlap (see ``RoomLog.ordered``)."""
        return self.log.ordered

    def start_publish(self, who: Principal, room: str, body_json: str,
                      client_id: str | None) -> asyncio.Future[Appended]:
        """``publish`` begun now and answered later, so that a socket can
        read its next frame meanwhile; rights are checked here (Forbidden)."""
        if not who.may_publish(room):
            raise Forbidden(room)
        return asyncio.ensure_future(self._store(who, room, body_json, client_id))

    async def _store(self, who: Principal, room: str, body_json: str,
                     client_id: str | None) -> Appended:
        started = time.perf_counter()
        try:
            result = await self.log.append(room, who.user, body_json, client_id)
        except StorageUnavailable:
            self.metrics.unavailable()
            raise
        self.metrics.published(time.perf_counter() - started)
        return result

    # -- reads ----------------------------------------------------------------

    async def join_point(self, who: Principal, room: str, since: str | None,
                         epoch: str | None = None) -> JoinPoint:
        """Resolve a join's ``since`` (None: the ack cursor, else "$") and
        the ``epoch`` the client sent with it (see streams/joinpoint.py)."""
        cursor = await self.log.cursor(room, who.user) if since is None else None
        return resolve(since, epoch, cursor, await self.log.bounds(room))

    async def history(self, room: str, after: str, limit: int) -> list[Envelope]:
        return await self.log.read_after(room, after, limit)

    async def history_before(self, room: str, before: str | None, limit: int) -> list[Envelope]:
        """The ``limit`` messages before ``before`` (None: the latest), oldest first."""
        return await self.log.read_before(room, before, limit)

    def open_session(self, who: Principal, outbox: Outbox,
                     on_error: Callable[[BaseException], None]) -> Session:
        """The rooms of one socket, fed by this instance's hub and log;
        ``on_error`` hears what ended its catch-up."""
        return Session(who, outbox, self.hub, self.log, self.metrics.replay_done,
                       self.metrics.frames_sent, on_error,
                       on_unrecovered=self.metrics.unrecovered_join)

    async def ack(self, who: Principal, room: str, sid: str) -> None:
        """Move ``who``'s cursor in ``room``; BeyondEnd for an id the room
        never had."""
        if not who.may_join(room):
            raise Forbidden(room)
        await self.log.ack(room, who.user, sid)

    def shards(self) -> dict[str, dict[str, object]] | None:
        """Cluster mode: each master's Pub/Sub link health, for /readyz."""
        return self.bus.shards() if isinstance(self.bus, ShardedBus) else None

    def not_ready_reason(self) -> str:
        if self.draining:
            return "draining"
        if not self.bus.serving:
            return "pubsub unhealthy"
        return "redis unavailable"

    async def online_users(self) -> list[str]:
        return await self.presence.users()

    async def room_members(self, room: str) -> list[str]:
        return await self.presence.members(room)

    async def came_online(self, user: str) -> None:
        await self.best_effort(self.presence.online(user))

    async def entered(self, room: str, user: str) -> None:
        await self.best_effort(self.presence.joined(room, user))

    async def went_out(self, room: str, user: str) -> None:
        """``user`` left ``room`` on one socket: gone from its presence only
        when no other socket of theirs here is still in it."""
        if not self.hub.has_user(room, user):
            await self.best_effort(self.presence.left(room, user))

    # -- presence -------------------------------------------------------------

    def connected(self, user: str) -> bool:
        """Count a new connection; True when it is the user's first here.

        Synchronous, so it cannot fail or be cancelled half-way: the socket
        counts itself in before anything that may raise, and
        :meth:`disconnected` (in its ``finally``) counts it out.
        """
        self.connections += 1
        self.users[user] += 1
        self.metrics.connections.set(self.connections)
        return self.users[user] == 1

    def disconnected(self, user: str, rooms: list[str]) -> None:
        """Count a connection out and start its presence clean-up.

        Never waits for Redis: a close (4401, 4408, 1012) must not be held up
        by storage, and a connection's buffers are freed at once. Presence is
        advisory, so the clean-up is one bounded round trip in the background
        (at most ``MAX_CLEANUPS`` at a time; past that, and whenever it fails,
        the entries simply stop being refreshed and expire).
        """
        self.connections -= 1
        self.users[user] -= 1
        self.metrics.connections.set(self.connections)
        last = self.users[user] <= 0
        if last:
            del self.users[user]
        if self.draining:
            # The heartbeat stops with the process and the entries expire.
            return
        rooms = [room for room in rooms if not self.hub.has_user(room, user)]
        if not rooms and not last:
            return
        if len(self._cleanups) >= MAX_CLEANUPS:
            log.warning("presence clean-up skipped: %d already running", len(self._cleanups))
            return
        task = asyncio.create_task(self._forget(user, rooms, last), name="presence-cleanup")
        self._cleanups.add(task)
        task.add_done_callback(self._cleanups.discard)

    async def _forget(self, user: str, rooms: list[str], offline: bool) -> None:
        # The user may have come back (or joined again) since the task was made.
        rooms = [room for room in rooms if not self.hub.has_user(room, user)]
        offline = offline and user not in self.users
        try:
            async with asyncio.timeout(PRESENCE_CLEANUP_S):
                await self.presence.forget(user, rooms, offline)
        except (StorageUnavailable, TimeoutError) as exc:
            log.warning("presence clean-up failed: %s", exc or type(exc).__name__)
        except Exception:
            log.exception("presence clean-up crashed")

    async def best_effort(self, coro) -> None:  # type: ignore[no-untyped-def]
        """Presence is advisory: the heartbeat repairs a write that failed."""
        try:
            await coro
        except StorageUnavailable as exc:
            log.warning("presence update failed: %s", exc)

    async def _watch_writers(self) -> None:
        """Close sockets whose writes made no progress for the stall timeout."""
        loop = asyncio.get_running_loop()
        interval = min(1.0, self.settings.slow_consumer_timeout_s / 4)
        while True:
            await asyncio.sleep(interval)
            now = loop.time()
            for conn in list(self.conns):
                conn.check_stalled(now)  # type: ignore[attr-defined]

    async def _refresh_presence(self) -> None:
        """The heartbeat: every entry re-scored once per TTL/3, one part of
        the rooms and users per tick (see streams/presence.py)."""
        interval = max(0.2, self.settings.presence_ttl_s / 3)
        parts = max(1, min(PRESENCE_PARTS, int(interval / PRESENCE_TICK_S)))
        part = 0
        while True:
            await asyncio.sleep(interval / parts)
            part = (part + 1) % parts
            try:
                users = [u for u in self.users if part_of(u, parts) == part]
                await self.presence.refresh(users, self.hub.rooms(part, parts))
            except StorageUnavailable as exc:
                log.warning("presence refresh failed: %s", exc)
            except Exception:
                log.exception("presence refresh crashed")

