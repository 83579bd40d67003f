"""Readiness follows Redis, the Pub/Sub listener repairs itself, heartbeats drop dead peers.

The instance under test runs on its own redis-server (append-only, fsync
always), which the tests kill with SIGKILL and start again on the same port
and directory, pause with `CLIENT PAUSE WRITE` (the Pub/Sub connection still
answers PING but hears nothing: a deaf listener) or whose Pub/Sub connections
they kill. The instance itself is never restarted.
"""

from __future__ import annotations

import asyncio
import base64
import os
import re
import shutil
import subprocess
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import httpx
import pytest
import redis.asyncio as aioredis

from app.config import load_settings
from tests.conftest import BASE_ENV, InstanceFactory
from tests.support import (
    Instance,
    ModuleAppInstance,
    RedisServer,
    async_wait_until,
    new_client_id,
    open_client,
    scaled,
)
from tests.support.http import history_ids
from tests.support.ids import assert_ids_equal
from tests.support.instance import REPO_ROOT
from tests.support.processes import kill, tail
from tests.test_metrics import Snapshot, scrape, wait_metric

RETRY_BUDGET = "1"


class RestartableRedis(RedisServer):
    """A redis-server that can be killed and started again on the same port and dir."""

    def __init__(self, workdir: Path) -> None:
        super().__init__(workdir, extra_args=("--appendonly", "yes", "--appendfsync", "always"))

    def kill(self) -> None:
        assert self.proc is not None
        kill(self.proc)

    def restart(self, timeout: float = 10.0) -> None:
        binary = shutil.which("redis-server")
        assert binary is not None and self.port
        args = [
            binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
            "--appendonly", "no", "--dir", str(self.dir), "--logfile", str(self.log_path),
            "--daemonize", "no", *self.extra_args,
        ]
        self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL)
        if not self._wait_ready(timeout):
            raise RuntimeError(f"redis-server did not restart on port {self.port}:\n{tail(self.log_path)}")


@pytest.fixture(scope="module")
def flaky_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RestartableRedis]:
    server = RestartableRedis(tmp_path_factory.mktemp("flaky-redis"))
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def watched(flaky_redis: RestartableRedis, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Instance]:
    factory = InstanceFactory(flaky_redis.url, tmp_path_factory.mktemp("watched"))
    yield factory.start("R", RETRY_BUDGET=RETRY_BUDGET, DRAIN_GRACE="0")
    factory.stop_all()


@pytest.fixture
async def raw(flaky_redis: RestartableRedis) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis(host="127.0.0.1", port=flaky_redis.port, decode_responses=True)
    yield client
    await client.aclose()


async def readyz(http: httpx.AsyncClient) -> int:
    return (await http.get("/readyz")).status_code


async def wait_readyz(inst: Instance, status: int, timeout: float) -> None:
    async with inst.http() as http:
        await async_wait_until(lambda: _is(http, status), timeout, interval=0.05,
                               message=f"/readyz of {inst.name} answering {status}")


async def _is(http: httpx.AsyncClient, status: int) -> bool:
    return await readyz(http) == status


async def test_readyz_follows_redis_down_and_back_without_restarting_the_instance(
    watched: Instance, flaky_redis: RestartableRedis, uid: Callable[[str], str], room: str
) -> None:
    await wait_readyz(watched, 200, 10)
    pid = watched.pid
    sub, pub = await open_client(watched, uid("sub")), await open_client(watched, uid("pub"))
    try:
        await sub.join(room, since="$")
        first = await pub.publish(room, {"n": "before"}, client_id=new_client_id())
        await sub.wait_for_id(room, first["id"])
        before = await scrape(watched)

        flaky_redis.kill()
        await wait_readyz(watched, 503, 5)

        # A publish during the outage is answered `unavailable` within the budget.
        cid = new_client_id()
        await pub.send({"type": "publish", "room": room, "body": {"n": "retried"}, "client_id": cid})
        error = await pub.expect("error", timeout=float(RETRY_BUDGET) + 5)
        assert (error["code"], error["ref"]) == ("unavailable", cid), error
        during = await scrape(watched)
        assert during.value("streamgate_unavailable_total") == before.value("streamgate_unavailable_total") + 1
        assert during.value("streamgate_redis_retries_total") > before.value("streamgate_redis_retries_total")

        flaky_redis.restart()
        await wait_readyz(watched, 200, 15)
        assert watched.pid == pid and watched.is_running(), "the instance was restarted"

        # Publishing works again (the retry with the same client_id stores it
        # once), and the subscriber that stayed connected gets what follows.
        retried = await pub.publish(room, {"n": "retried"}, client_id=cid)
        after = await pub.publish_many(room, [{"n": n} for n in range(5)])
        await sub.wait_for_id(room, after[-1]["id"], timeout=10)
        assert not sub.closed.is_set()
        expected = await history_ids(watched, room)
        assert expected.count(retried["id"]) == 1
        assert_ids_equal(sub.ids[room], expected, "subscriber that stayed connected")
        snap = await scrape(watched)
        assert snap.value("streamgate_pubsub_reconnects_total") > before.value("streamgate_pubsub_reconnects_total")
    finally:
        await sub.close()
        await pub.close()


async def test_deaf_listener_is_found_by_the_canary_and_readiness_recovers(
    watched: Instance, raw: aioredis.Redis, uid: Callable[[str], str], room: str
) -> None:
    """`CLIENT PAUSE WRITE` holds every PUBLISH while PING still works: the
    Pub/Sub connection answers but hears nothing, as on a resumed old master."""
    await wait_readyz(watched, 200, 10)
    sub, pub = await open_client(watched, uid("sub")), await open_client(watched, uid("pub"))
    try:
        await sub.join(room, since="$")
        first = await pub.publish(room, {"n": "before"}, client_id=new_client_id())
        await sub.wait_for_id(room, first["id"])
        before = await scrape(watched)

        # Paused until the canary has missed (bounded by the wait), not for a guessed time.
        await raw.execute_command("CLIENT", "PAUSE", "15000", "WRITE")
        await wait_metric(
            watched,
            lambda s: s.value("streamgate_pubsub_canary_missed_total")
            > before.value("streamgate_pubsub_canary_missed_total"),
            10, "a canary miss counted",
        )
        async with watched.http() as http:
            assert await readyz(http) == 503, "ready while the listener is deaf"
        await raw.execute_command("CLIENT", "UNPAUSE")
        await wait_readyz(watched, 200, 10)

        snap = await scrape(watched)
        assert snap.value("streamgate_pubsub_reconnects_total") > before.value("streamgate_pubsub_reconnects_total")
        after = await pub.publish_many(room, [{"n": n} for n in range(5)])
        await sub.wait_for_id(room, after[-1]["id"], timeout=10)
        assert_ids_equal(sub.ids[room], await history_ids(watched, room), "subscriber across the deaf spell")
    finally:
        await raw.execute_command("CLIENT", "UNPAUSE")
        await sub.close()
        await pub.close()


async def _pubsub_connections(r: aioredis.Redis) -> int:
    listing = await r.execute_command("CLIENT", "LIST", "TYPE", "pubsub")
    return len([line for line in str(listing).splitlines() if line.strip()])


async def test_repeated_pubsub_kills_are_counted_and_readiness_recovers(
    watched: Instance, raw: aioredis.Redis, uid: Callable[[str], str], room: str
) -> None:
    await wait_readyz(watched, 200, 10)
    sub, pub = await open_client(watched, uid("sub")), await open_client(watched, uid("pub"))
    try:
        await sub.join(room, since="$")
        before = await scrape(watched)
        published: list[str] = []
        for n in range(3):
            mark = await scrape(watched)
            assert int(await raw.execute_command("CLIENT", "KILL", "TYPE", "pubsub")) >= 1
            published.append((await pub.publish(room, {"n": n}, client_id=new_client_id()))["id"])
            await wait_metric(
                watched,
                lambda s, m=mark: s.value("streamgate_pubsub_reconnects_total")
                > m.value("streamgate_pubsub_reconnects_total"),
                5, f"reconnect {n + 1} counted",
            )
            await async_wait_until(lambda: _at_least_one(raw), 5, message="Pub/Sub connection back")
        after = await scrape(watched)
        assert after.value("streamgate_pubsub_reconnects_total") >= before.value("streamgate_pubsub_reconnects_total") + 3
        await wait_readyz(watched, 200, 5)
        last = await pub.publish(room, {"n": "last"}, client_id=new_client_id())
        await sub.wait_for_id(room, last["id"], timeout=10)
        assert_ids_equal(sub.ids[room], await history_ids(watched, room), "subscriber across kills")
    finally:
        await sub.close()
        await pub.close()


async def _at_least_one(r: aioredis.Redis) -> bool:
    return await _pubsub_connections(r) >= 1


# -- heartbeats: `python -m app` with HEARTBEAT_INTERVAL -----------------------------


@pytest.fixture
def heartbeat_app(redis_server: RedisServer, tmp_path: Path) -> Iterator[ModuleAppInstance]:
    env = dict(BASE_ENV, REDIS_URL=redis_server.url, HEARTBEAT_INTERVAL="1", INSTANCE_ID="heartbeat",
               DRAIN_GRACE="0")
    app = ModuleAppInstance("python-m-app", env, workdir=tmp_path)
    try:
        yield app.start()
    finally:
        app.stop()


async def _scrape_app(app: ModuleAppInstance) -> Snapshot:
    async with app.http() as http:
        return Snapshot.parse((await http.get("/metrics")).text)


async def test_heartbeat_drops_a_peer_that_never_answers_pings(
    heartbeat_app: ModuleAppInstance, uid: Callable[[str], str]
) -> None:
    before = await _scrape_app(heartbeat_app)
    polite = await open_client(heartbeat_app, uid("polite"))  # its reader answers pings
    reader, writer = await asyncio.open_connection("127.0.0.1", heartbeat_app.port)
    try:
        nonce = base64.b64encode(os.urandom(16)).decode()
        writer.write(
            f"GET /ws?user={uid('silent')} HTTP/1.1\r\nHost: 127.0.0.1:{heartbeat_app.port}\r\n"
            f"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {nonce}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n".encode()
        )
        await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), scaled(5))
        assert head.split(b"\r\n")[0].split()[1] == b"101", head
        opened = time.monotonic()
        # From here on the silent peer neither reads nor writes.

        async def gauge(app: ModuleAppInstance, want: float) -> bool:
            return (await _scrape_app(app)).value("websocket_connections") == want

        await async_wait_until(lambda: gauge(heartbeat_app, 2), 5, interval=0.05, message="both connected")
        # Ping every second, one second to answer: dropped within a few seconds.
        await async_wait_until(lambda: gauge(heartbeat_app, 1), 6, interval=0.05,
                               message="the silent peer dropped by the heartbeat")
        assert time.monotonic() - opened >= 1.0, "dropped before any ping could go unanswered"
        after = await _scrape_app(heartbeat_app)
        assert after.value("websocket_connection_duration_seconds_count") == before.value(
            "websocket_connection_duration_seconds_count") + 1
        # The peer that answers pings is still connected and served.
        await polite.ping()
        assert not polite.closed.is_set()
        # The server closed the silent peer's socket: reading on reaches EOF.
        async def eof() -> bool:
            return await asyncio.wait_for(reader.read(65536), scaled(5)) == b""

        await async_wait_until(eof, 10, interval=0)
    finally:
        writer.close()
        await polite.close()


# -- proxy timeouts versus the heartbeat --------------------------------------------------


def _seconds(value: str) -> float:
    """An nginx time value: 60, 60s, 1m, 500ms."""
    m = re.fullmatch(r"(\d+)(ms|s|m|h)?", value)
    assert m, f"unexpected nginx time {value!r}"
    return int(m.group(1)) * {"ms": 0.001, "s": 1, None: 1, "m": 60, "h": 3600}[m.group(2)]


def test_nginx_websocket_timeouts_exceed_the_heartbeat(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # no stray .env
    heartbeat = load_settings({"AUTH_MODE": "none"}).heartbeat_interval_s
    assert heartbeat == 20
    checked = 0
    for conf in sorted((REPO_ROOT / "ops" / "nginx").glob("*.conf")):
        text = re.sub(r"#.*", "", conf.read_text())
        for block in re.findall(r"location\s+=\s+/ws\s*\{(.*?)\}", text, re.S):
            for directive in ("proxy_read_timeout", "proxy_send_timeout"):
                found = re.findall(rf"{directive}\s+(\S+);", block)
                assert found, f"{conf.name}: /ws has no {directive} (nginx default 60s is implicit)"
                seconds = _seconds(found[-1])
                # A healthy idle socket carries a ping every HEARTBEAT_INTERVAL;
                # the proxy must not cut it first, even with one ping late.
                assert seconds > heartbeat, f"{conf.name}: {directive} {found[-1]} <= heartbeat {heartbeat}s"
                assert seconds >= 2 * heartbeat, f"{conf.name}: {directive} {found[-1]} < 2x heartbeat"
            checked += 1
    assert checked >= 2, "no /ws location found in ops/nginx/*.conf"
