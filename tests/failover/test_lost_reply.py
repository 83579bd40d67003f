"""A publish whose reply is lost, and that is therefore retried, is stored once.

Exercised at the streams layer in this process, against a real redis-server:
a :class:`streams.log.RoomLog` whose client has a short socket timeout and a
connection class that loses the reply of one chosen command (the append
script, or in replica durability the confirm script) in one of two ways:

- ``sleep``: right before the command is sent, another connection puts the
  server into ``DEBUG SLEEP``; the command waits in the server's buffer, the
  client times out and retries, and the server runs the first attempt after
  the sleep, before the retries;
- ``drop``: the socket is closed right after the command was sent; the
  server still runs it and the reply goes nowhere.

The retry must find the first attempt's record: one entry in the stream,
the id the caller gets is that entry's, and (replica durability) the
confirmed watermark reaches it. That holds for an append with a client_id
and for one without (the log then uses an internal id).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from importlib import resources
from pathlib import Path
from typing import Any

import pytest
import redis
import redis.asyncio as aioredis
from redis.asyncio.connection import Connection
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from ops.local import probes
from streams.keys import Keys
from streams.log import ReplicaAcks, RoomLog
from streams.retry import RetryPolicy
from tests.support import RedisServer, async_wait_until, wait_until

pytestmark = [pytest.mark.failover, pytest.mark.timeout(60)]

KEYS = Keys("sglost")
SOCKET_TIMEOUT_S = 0.3
SLEEP_S = 1
# A PING unanswered for this long means the server is inside DEBUG SLEEP; it
# leaves more than SOCKET_TIMEOUT_S of the sleep for the command under test.
PROBE_TIMEOUT_S = 0.15


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RedisServer, RedisServer]]:
    """A master that allows DEBUG, and one replica of it (for WAIT)."""
    root: Path = tmp_path_factory.mktemp("lost-reply")
    master = RedisServer(root / "master", extra_args=("--enable-debug-command", "yes", "--repl-diskless-sync-delay", "0")).start()
    replica = None
    try:
        replica = RedisServer(root / "replica",
                              extra_args=("--replicaof", "127.0.0.1", str(master.port))).start()
        wait_until(lambda: probes.replica_link_up(replica.port), 15, message="replica link up")
        yield master, replica
    finally:
        if replica is not None:
            replica.stop()
        master.stop()


def evalsha_of(name: str) -> bytes:
    """How an EVALSHA of one of the log's scripts starts on the wire (RESP)."""
    text = resources.files("streams").joinpath("lua", name).read_text()
    return b"EVALSHA\r\n$40\r\n" + hashlib.sha1(text.encode()).hexdigest().encode()


class FaultyConnection(Connection):
    """Loses the reply of the next command that contains ``trigger`` once armed.

    ``sleep``: before sending it, make the server busy (``DEBUG SLEEP`` from
    another connection), so the command waits in the server's buffer while
    this side times out; the server runs it after the sleep.
    ``drop``: send it, then close the socket before the reply; the server
    runs it and its reply goes nowhere.
    """

    trigger: bytes = b""
    mode = ""
    armed = False
    fired = 0
    busy: Callable[[], Awaitable[asyncio.Task[Any]]] | None = None
    sleeping: asyncio.Task[Any] | None = None

    async def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        cls = type(self)
        data = bytes(command) if isinstance(command, (bytes, bytearray, memoryview)) \
            else b"".join(bytes(c) for c in command)
        fire = cls.armed and cls.trigger in data
        if fire:
            cls.armed = False
            cls.fired += 1
            if cls.mode == "sleep":
                assert cls.busy is not None
                cls.sleeping = await cls.busy()
        await super().send_packed_command(command, check_health)
        if fire and cls.mode == "drop":
            await self.disconnect()  # flushes what was sent, then closes
            raise redis.exceptions.ConnectionError("reply lost (fault injected by the test)")


def faulty_connection(mode: str, script: str,
                      busy: Callable[[], Awaitable[asyncio.Task[Any]]]) -> type[FaultyConnection]:
    """A fresh subclass per test, so no state leaks between tests."""
    return type("Faulty", (FaultyConnection,),
                {"mode": mode, "trigger": evalsha_of(script), "busy": staticmethod(busy)})


def make_client(port: int, connection_class: type[Connection] = Connection) -> aioredis.Redis:
    """Like streams.connection builds them (no redis-py retry, RESP2), with a short timeout."""
    pool = aioredis.ConnectionPool(
        connection_class=connection_class, host="127.0.0.1", port=port,
        socket_timeout=SOCKET_TIMEOUT_S, socket_connect_timeout=SOCKET_TIMEOUT_S,
        retry=Retry(NoBackoff(), 0), protocol=2,
    )
    return aioredis.Redis(connection_pool=pool)


@pytest.fixture
async def sleeper(servers: tuple[RedisServer, RedisServer]) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis(host="127.0.0.1", port=servers[0].port, socket_timeout=SLEEP_S + 10)
    yield client
    await client.aclose()


async def put_to_sleep(sleeper: aioredis.Redis, port: int) -> asyncio.Task[Any]:
    """Start ``DEBUG SLEEP`` and return once the server is inside it
    (a PING from a third connection then goes unanswered)."""
    task = asyncio.create_task(sleeper.execute_command("DEBUG", "SLEEP", SLEEP_S))

    async def asleep() -> bool:
        probe = aioredis.Redis(host="127.0.0.1", port=port, socket_timeout=PROBE_TIMEOUT_S,
                               socket_connect_timeout=0.5, retry=Retry(NoBackoff(), 0))
        try:
            await probe.ping()
        except redis.exceptions.TimeoutError:
            return True
        finally:
            await probe.aclose()
        return False

    await async_wait_until(asleep, SLEEP_S, interval=0.005, message="DEBUG SLEEP did not take hold")
    return task


CASES = [
    # (fault, the step whose reply is lost, durability)
    ("sleep", "append", "leader"), ("sleep", "append", "replica"), ("sleep", "confirm", "replica"),
    ("drop", "append", "leader"), ("drop", "append", "replica"), ("drop", "confirm", "replica"),
]


@pytest.mark.parametrize("with_client_id", [True, False], ids=["client_id", "no_client_id"])
@pytest.mark.parametrize(("fault", "step", "durability"), CASES, ids=["-".join(c) for c in CASES])
async def test_retried_append_is_stored_once(
    servers: tuple[RedisServer, RedisServer], sleeper: aioredis.Redis,
    fault: str, step: str, durability: str, with_client_id: bool,
) -> None:
    master, _replica = servers
    conn_class = faulty_connection(fault, f"{step}.lua", lambda: put_to_sleep(sleeper, master.port))
    retries = 0

    def count_retry() -> None:
        nonlocal retries
        retries += 1

    client = make_client(master.port, conn_class)
    acks = ReplicaAcks(1, 500) if durability == "replica" else None
    log = RoomLog(client, KEYS, 1000, RetryPolicy(budget_s=5, on_retry=count_retry), replica_acks=acks)
    room = f"lost-{uuid.uuid4().hex[:10]}"
    cid = f"cid-{uuid.uuid4().hex[:8]}" if with_client_id else None
    try:
        # Load the scripts and open a pooled connection first.
        await log.append(f"{room}-warm", "u", '"warm"', None)
        assert retries == 0
        conn_class.armed = True
        result = await log.append(room, "u", json.dumps({"n": 1}), cid)
        assert conn_class.fired == 1, "the faulty command was never sent"
        if conn_class.sleeping is not None:
            await conn_class.sleeping
        assert retries >= 1, "the fault did not happen: nothing was retried"
        # The server ran the first attempt: the retry found its record.
        assert result.duplicate, result

        with master.client() as r:
            entries = r.xrange(KEYS.log(room))
            watermark = r.get(KEYS.confirmed(room))
        assert [sid for sid, _f in entries] == [result.id], f"stored {entries}, returned {result}"
        fields = entries[0][1]
        if cid is not None:
            assert fields.get("c") == f"c:{cid}", fields
        if durability == "replica":
            assert watermark == result.id, f"watermark {watermark}, appended {result.id}"
            read = await log.read_after(room, "0-0", 10)
            assert [e.id for e in read] == [result.id]
    finally:
        await client.aclose()
