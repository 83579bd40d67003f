"""Build the Redis clients: a standalone URL, a master found through Sentinel,
or a Redis Cluster (``cluster_nodes`` set: seed nodes, the rest discovered).

Every client is built with redis-py's retry turned off (``retries=0``), so the
only retry layer is :mod:`streams.retry`. The Pub/Sub connection is not taken
from the pool: :func:`RedisConnector.pubsub_connection` makes a fresh, private
connection that the bus owns for its whole life (and, in Sentinel mode, asks
the sentinels for the current master each time it connects).

In cluster mode ``client`` is redis-py's asyncio ``RedisCluster`` (it follows
``MOVED``/``ASK`` and refreshes its slot map; its own retry is turned off as
well, so a failover surfaces as an error that :mod:`streams.retry` retries,
and :meth:`RedisConnector.recover` refreshes the slot map between attempts).
Two things must run on one node's own connection, not through the cluster
client: the bus's Pub/Sub links (:meth:`RedisConnector.node_connection`)
and a replica-durable append, whose ``WAIT`` must follow the append on the
same connection (:meth:`RedisConnector.node_client`, a plain client of the
master that owns a key's slot now).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass

from redis.asyncio import ConnectionPool, Redis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.connection import AbstractConnection, Connection, SSLConnection
from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool
from redis.backoff import NoBackoff
from redis.asyncio.retry import Retry


DEFAULT_REDIS_URL = "redis://localhost:6379/0"


@dataclass(frozen=True, slots=True)
class RedisSettings:
    url: str = DEFAULT_REDIS_URL
    sentinels: tuple[tuple[str, int], ...] = ()
    # Seed nodes of a Redis Cluster; non-empty selects cluster mode.
    cluster_nodes: tuple[tuple[str, int], ...] = ()
    master_name: str = "mymaster"
    sentinel_password: str | None = None
    username: str | None = None
    password: str | None = None
    # Short enough that a frozen master costs one attempt, not the budget.
    socket_timeout_s: float = 2.0
    connect_timeout_s: float = 2.0
    ssl_ca_file: str | None = None


log = logging.getLogger("streamgate.redis")


def _no_retry() -> Retry:
    return Retry(NoBackoff(), 0)


def _common_kwargs(s: RedisSettings) -> dict[str, object]:
    kw: dict[str, object] = {
        "socket_timeout": s.socket_timeout_s,
        "socket_connect_timeout": s.connect_timeout_s,
        "socket_keepalive": True,
        "retry": _no_retry(),
        "health_check_interval": 0,
        # RESP2: Pub/Sub replies arrive as ordinary arrays on the bus's own
        # connection, which reads them directly (see bus.py).
        "protocol": 2,
    }
    if s.username:
        kw["username"] = s.username
    if s.password:
        kw["password"] = s.password
    return kw


def _tls_kwargs(s: RedisSettings) -> dict[str, object]:
    """Cluster mode has no URL to say ``rediss://``: a CA file turns TLS on."""
    if not s.ssl_ca_file:
        return {}
    return {"ssl": True, "ssl_ca_certs": s.ssl_ca_file}


class RedisConnector:
    """Owns the command client and makes Pub/Sub connections."""

    def __init__(self, settings: RedisSettings) -> None:
        self.settings = settings
        kw = _common_kwargs(settings)
        self._sentinel: Sentinel | None = None
        self.cluster: RedisCluster | None = None
        self._nodes: dict[tuple[str, int], Redis] = {}
        if settings.cluster_nodes:
            ckw = {k: v for k, v in kw.items() if k != "health_check_interval"}
            ckw.update(_tls_kwargs(settings))
            self.cluster = RedisCluster(
                startup_nodes=[ClusterNode(h, p) for h, p in settings.cluster_nodes],
                # One shard down must not stop the rooms of the others.
                require_full_coverage=False,
                **ckw,
            )
            self.client = self.cluster  # type: ignore[assignment]
            self._master = None
            self.on_failover: Callable[[], None] = lambda: None
            return
        if settings.sentinels:
            sentinel_kwargs: dict[str, object] = {
                "socket_timeout": 1.0,
                "socket_connect_timeout": 1.0,
                "retry": _no_retry(),
            }
            if settings.sentinel_password:
                sentinel_kwargs["password"] = settings.sentinel_password
            self._sentinel = Sentinel(
                list(settings.sentinels), sentinel_kwargs=sentinel_kwargs, **kw
            )
            self.pool: ConnectionPool = SentinelConnectionPool(
                settings.master_name, self._sentinel, **kw
            )
        else:
            url_kw = dict(kw)
            if settings.ssl_ca_file and settings.url.startswith("rediss://"):
                url_kw["ssl_ca_certs"] = settings.ssl_ca_file
            self.pool = ConnectionPool.from_url(settings.url, **url_kw)
        self.client = Redis(connection_pool=self.pool)
        self._master: tuple[str, int] | None = None
        self.on_failover: Callable[[], None] = lambda: None

    @property
    def clustered(self) -> bool:
        return self.cluster is not None

    def pubsub_connection(self) -> AbstractConnection:
        """A new connection with the pool's settings, owned by the caller."""
        return self.pool.make_connection()

    def node_connection(self, host: str, port: int) -> AbstractConnection:
        """Cluster mode: a new private connection to one node (a Pub/Sub link)."""
        kw = _common_kwargs(self.settings)
        tls = _tls_kwargs(self.settings)
        if tls:
            return SSLConnection(host=host, port=port, ssl_ca_certs=self.settings.ssl_ca_file,
                                 **kw)  # type: ignore[arg-type]
        return Connection(host=host, port=port, **kw)  # type: ignore[arg-type]

    def node_client(self, key: str) -> Redis:
        """Cluster mode: a plain client of the master that owns ``key``'s slot
        as far as the slot map knows (a stale map is answered with ``MOVED``,
        which the retry policy retries after :meth:`recover`)."""
        assert self.cluster is not None
        node = self.cluster.get_node_from_key(key)
        if node is None:
            raise ConnectionError(f"no node serves the slot of {key!r}")
        address = (node.host, int(node.port))
        client = self._nodes.get(address)
        if client is None:
            kw = _common_kwargs(self.settings)
            kw.update(_tls_kwargs(self.settings))
            client = Redis(host=address[0], port=address[1], **kw)  # type: ignore[arg-type]
            self._nodes[address] = client
        return client

    # -- the slot map, for the sharded bus (streams/shardbus.py) -------------

    def owner(self, key: str) -> tuple[str, int] | None:
        """The master that owns ``key``'s slot in the current map, if any."""
        assert self.cluster is not None
        try:
            node = self.cluster.get_node_from_key(key)
        except Exception:  # the slot is not covered (yet)
            return None
        return None if node is None else (node.host, int(node.port))

    def masters(self) -> list[tuple[str, int]]:
        assert self.cluster is not None
        return sorted((n.host, int(n.port)) for n in self.cluster.get_primaries())

    async def refresh(self) -> None:
        """Read the slot map again from the cluster."""
        assert self.cluster is not None
        # The client's own first initialize also loads the command table it
        # routes by; only then is a bare slot map refresh enough.
        await self.cluster.initialize()
        await self.cluster.nodes_manager.initialize()

    async def ping(self) -> None:
        """One PING to every master (a cluster) or to the master."""
        if self.cluster is not None:
            await self.cluster.ping(target_nodes=RedisCluster.PRIMARIES)
        else:
            await self.client.ping()

    async def recover(self) -> None:
        """Between retries: forget idle connections, so that the next attempt
        connects afresh (and, with Sentinel, to wherever the master is now;
        in a cluster, with a fresh slot map)."""
        if self.cluster is not None:
            await self.refresh()
            return
        await self.pool.disconnect(inuse_connections=False)
        if self._sentinel is not None:
            await self._check_master()

    async def watch_master(self, interval_s: float = 1.0) -> None:
        """Sentinel mode: follow the master even when nothing fails.

        Reads do not fail on a demoted or stale old master (a frozen master
        that resumes still answers, with old data), so waiting for an error
        is not enough: a history read or a replay there would silently miss
        messages. Every second the sentinels are asked where the master is;
        when it moved, every pooled connection is dropped at once.
        """
        if self._sentinel is None:
            return
        while True:
            try:
                await self._check_master()
            except Exception as exc:  # sentinels unreachable: keep what we have
                log.warning("sentinel query failed: %s", exc)
            await asyncio.sleep(interval_s)

    async def _check_master(self) -> None:
        assert self._sentinel is not None
        address = await self._sentinel.discover_master(self.settings.master_name)
        if self._master is not None and address != self._master:
            log.warning("redis master moved from %s to %s", self._master, address)
            self._master = address
            await self.pool.disconnect(inuse_connections=True)
            self.on_failover()
        self._master = address

    async def close(self) -> None:
        if self.cluster is not None:
            for node in self._nodes.values():
                await node.aclose()
            await self.cluster.aclose()
            return
        await self.client.aclose()
        await self.pool.disconnect()
        if self._sentinel is not None:
            for s in self._sentinel.sentinels:
                await s.aclose()
