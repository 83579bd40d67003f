"""Closing a socket never waits for Redis, and its counts always come back.

The instance runs on a redis-server of its own that the test freezes with
SIGSTOP: a server that accepts connections and then never answers, the worst
case for a retry budget. Presence clean-up is advisory (the heartbeat repairs
it), so a close the server decides on (here 4401 at token expiry) must reach
the client on time, and the connection gauge must return to its value once
the sockets are gone, whatever happened to the presence writes.
"""

from __future__ import annotations

import asyncio
import math
import os
import signal
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import jwt as pyjwt
import pytest
import uvicorn

from app.config import Settings, load_settings
from tests.conftest import BASE_ENV
from tests.support import (Instance, RedisServer, WsClient, async_wait_until, open_client, scaled,
                           wait_until)
from tests.support.ports import free_port
from tests.support.tokens import SECRET
from tests.test_metrics import Snapshot, scrape

LEEWAY_S = 5  # the token check's clock leeway: the expiry close comes at exp + 5 s
CLOSE_SLACK_S = 2.0


@pytest.fixture
def solo(own_redis: RedisServer, tmp_path: Path) -> Iterator[Instance]:
    env = dict(BASE_ENV, REDIS_URL=own_redis.url, AUTH_MODE="jwt", JWT_SECRET=SECRET)
    inst = Instance("frozen", env, workdir=tmp_path / "frozen")
    try:
        yield inst.start()
    finally:
        if inst.is_running():
            inst.kill()


async def test_token_expiry_closes_with_4401_on_time_while_redis_is_frozen(
    solo: Instance, own_redis: RedisServer
) -> None:
    user = f"exp-{uuid.uuid4().hex[:8]}"
    exp = math.ceil(time.time()) + 1
    token = pyjwt.encode({"sub": user, "exp": exp}, SECRET, algorithm="HS256")
    client = await open_client(solo, token=token)
    try:
        # Rooms give the clean-up something to do in Redis on the way out.
        for n in range(3):
            await client.join(f"exp-{n}-{uuid.uuid4().hex[:6]}", since="$")
        os.kill(own_redis.pid, signal.SIGSTOP)
        code = await client.wait_closed(timeout=exp + LEEWAY_S - time.time() + CLOSE_SLACK_S + 3)
        closed_at = time.time()
    finally:
        os.kill(own_redis.pid, signal.SIGCONT)
        await client.close()
    assert code == 4401, f"closed with {code} ({client.close_reason!r})"
    late = closed_at - (exp + LEEWAY_S)
    assert late <= scaled(CLOSE_SLACK_S), f"the 4401 came {late:.1f}s after the expiry"


async def _gauge(inst: Instance) -> float:
    return (await scrape(inst)).value("websocket_connections")


async def test_connection_gauge_returns_when_presence_writes_fail(
    solo: Instance, own_redis: RedisServer
) -> None:
    """Sockets that come and go while Redis is frozen (the presence write on
    connect and the clean-up on close both fail) are all counted out."""
    baseline = await _gauge(solo)
    clients: list[WsClient] = []
    os.kill(own_redis.pid, signal.SIGSTOP)
    try:
        for n in range(3):
            token = pyjwt.encode({"sub": f"gone-{n}-{uuid.uuid4().hex[:6]}",
                                  "exp": int(time.time()) + 600}, SECRET, algorithm="HS256")
            # Accepted, but no welcome yet: the instance is writing presence.
            clients.append(await WsClient.open(solo.ws_url(token=token), name=f"gone-{n}",
                                               welcome=False))
        await async_wait_until(lambda: _gauge_is(solo, baseline + 3), 10,
                               message="the three sockets were never counted")
        for c in clients:
            await c.close()
    finally:
        os.kill(own_redis.pid, signal.SIGCONT)
        for c in clients:
            await c.close()
    await async_wait_until(lambda: _gauge_is(solo, baseline), 25,
                           message=f"websocket_connections never returned to {baseline}")


async def _gauge_is(inst: Instance, want: float) -> bool:
    return await _gauge(inst) == want


# -- a cancellation while the socket is being counted in -------------------------------------
#
# uvicorn cancels request tasks that outlive its graceful-shutdown timeout; a
# socket cancelled while its presence write hangs must still be counted out.
# To reach the server's own tasks, the real app runs under a real uvicorn
# server in a thread of this process (signals stay with pytest: neither
# uvicorn nor the drain installs handlers outside the main thread).


class ThreadedServer:
    """uvicorn serving the real app in a thread, with its loop reachable."""

    def __init__(self, settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
        # app.main builds a default app when first imported: give it a valid
        # environment (it is never started; only create_app's is).
        monkeypatch.setenv("AUTH_MODE", "none")
        from app.main import create_app

        self.port = free_port()
        config = uvicorn.Config(create_app(settings), host="127.0.0.1", port=self.port,
                                log_config=None, ws="websockets-sansio", lifespan="on")
        self.server = uvicorn.Server(config)
        self.loop: asyncio.AbstractEventLoop | None = None
        self.thread = threading.Thread(target=self._run, name="uvicorn", daemon=True)

    def _run(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.loop.run_until_complete(self.server.serve())
        self.loop.close()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def cancel_sockets(self) -> int:
        """Cancel every request task the server runs now (the sockets)."""
        assert self.loop is not None

        async def cancel() -> int:
            tasks = [t for t in self.server.server_state.tasks if t is not asyncio.current_task()]
            for t in tasks:
                t.cancel()
            return len(tasks)

        return asyncio.run_coroutine_threadsafe(cancel(), self.loop).result(scaled(5))

    def __enter__(self) -> ThreadedServer:
        self.thread.start()
        wait_until(lambda: self.server.started or not self.thread.is_alive(), 10,
                   message="the in-process server never started")
        assert self.server.started, "the in-process server failed to start"
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(scaled(15))
        assert not self.thread.is_alive(), "the in-process server did not stop"


async def _threaded_gauge(server: ThreadedServer) -> float:
    async with httpx.AsyncClient(base_url=server.url, timeout=scaled(5)) as http:
        response = await http.get("/metrics")
    return Snapshot.parse(response.text).value("websocket_connections")


async def test_a_socket_cancelled_while_counted_in_is_counted_out(
    own_redis: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = load_settings(dict(BASE_ENV, REDIS_URL=own_redis.url,
                                  INSTANCE_ID=f"inproc-{uuid.uuid4().hex[:6]}"))
    with ThreadedServer(settings, monkeypatch) as server:
        baseline = await _threaded_gauge(server)
        os.kill(own_redis.pid, signal.SIGSTOP)
        try:
            url = f"ws://127.0.0.1:{server.port}/ws?user=cut-{uuid.uuid4().hex[:6]}"
            client = await WsClient.open(url, name="cut", welcome=False)
            try:
                await async_wait_until(lambda: _threaded_gauge_is(server, baseline + 1), 10,
                                       message="the socket was never counted in")
                assert await asyncio.to_thread(server.cancel_sockets) >= 1
                await async_wait_until(lambda: _threaded_gauge_is(server, baseline), 5,
                                       message=f"websocket_connections never returned to {baseline}")
            finally:
                await client.close()
        finally:
            os.kill(own_redis.pid, signal.SIGCONT)


async def _threaded_gauge_is(server: ThreadedServer, want: float) -> bool:
    return await _threaded_gauge(server) == want
