"""SIGTERM drains an instance the way a rolling deploy needs it.

Two instances A and B share a dedicated redis-server. A is signalled while
clients are connected to it and one of its publishes is held in flight by
`CLIENT PAUSE WRITE`: readiness must drop at once, the in-flight publish must
be answered and stored once, sockets must close with 1012 and the process must
exit within 10 s; the clients then resume on B with `since` and, together with
what they got from A, must hold exactly the room's history.

The same bounds must hold when Redis stops confirming writes altogether: the
instance still exits within 10 s and tells the client its publish is
`unavailable` instead of leaving it unanswered.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator

import pytest
import redis.asyncio as aioredis

from tests.conftest import InstanceFactory
from tests.support import Instance, RedisServer, WsClient, new_client_id, open_client, scaled, try_connect
from tests.support.http import history
from tests.support.ids import assert_ids_equal
from tests.support.waiting import async_wait_until
from tests.test_metrics import Snapshot, scrape

EXIT_DEADLINE_S = 10.0
PAUSE_MS = 1500  # longer than DRAIN_GRACE: the publish is still in flight when sockets drain


@pytest.fixture
def drain_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("drain-redis")).start()
    yield server
    server.stop()


@pytest.fixture
def pair(drain_redis: RedisServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Instance, Instance]]:
    factory = InstanceFactory(drain_redis.url, tmp_path_factory.mktemp("drain-instances"))
    try:
        yield factory.start("A", DRAIN_GRACE="1"), factory.start("B", DRAIN_GRACE="1")
    finally:
        factory.stop_all()


def assert_clean_exit(inst: Instance, code: int) -> None:
    """uvicorn re-raises the SIGTERM it handled once it has shut down, so a
    clean exit is status 0 or death by that SIGTERM, after the lifespan ended."""
    assert code in (0, -signal.SIGTERM), f"exit code {code}\n{inst.log_tail(20)}"
    assert "Application shutdown complete" in inst.log_path.read_text(errors="replace")


async def _publisher(client: WsClient, room: str, stop: asyncio.Event, ids: list[str]) -> None:
    """Publish on B until told to stop, each message confirmed before the next."""
    n = 0
    while not stop.is_set():
        frame = await client.publish(room, {"from": "B", "n": n}, client_id=new_client_id(), timeout=15)
        ids.append(frame["id"])
        n += 1
        await asyncio.sleep(0.01)  # pacing: about a hundred messages per second


async def _received_publish(inst: Instance, before: Snapshot) -> bool:
    snap = await scrape(inst)
    return snap.value("websocket_messages_received_total", type="publish") > before.value(
        "websocket_messages_received_total", type="publish")


async def test_sigterm_drains_answers_in_flight_publish_and_clients_resume_elsewhere(
    pair: tuple[Instance, Instance], drain_redis: RedisServer, uid: Callable[[str], str], room: str
) -> None:
    a, b = pair
    subs = [await open_client(a, uid(f"sub{n}")) for n in range(2)]
    writer = await open_client(a, uid("writer"))
    pub_b = await open_client(b, uid("pubB"))
    raw = aioredis.Redis(host="127.0.0.1", port=drain_redis.port, decode_responses=True)
    resumed: list[WsClient] = []
    stop = asyncio.Event()
    b_ids: list[str] = []
    background: asyncio.Task[None] | None = None
    try:
        for c in (*subs, writer):
            await c.join(room, since="$")
        warm = await pub_b.publish_many(room, [{"warm": n} for n in range(5)])
        for c in subs:
            await c.wait_for_id(room, warm[-1]["id"])
        background = asyncio.create_task(_publisher(pub_b, room, stop, b_ids))

        # Hold every write on Redis, then send a publish to A: it is in flight
        # once A has counted the frame.
        before = await scrape(a)
        await raw.execute_command("CLIENT", "PAUSE", str(PAUSE_MS), "WRITE")
        marker = {"in_flight": uuid.uuid4().hex}
        in_flight_id = new_client_id()
        await writer.send({"type": "publish", "room": room, "body": marker, "client_id": in_flight_id})
        await async_wait_until(lambda: _received_publish(a, before), 1, interval=0.01,
                               message="A never received the publish frame")

        assert a.proc is not None
        a.proc.send_signal(signal.SIGTERM)
        signalled = time.monotonic()

        async with a.http() as http:
            # Readiness drops at once, well inside the grace period, while the
            # process still serves HTTP and new sockets are turned away.
            statuses = []
            while time.monotonic() - signalled < scaled(0.8):
                statuses.append((await http.get("/readyz")).status_code)
                if statuses[-1] == 503:
                    break
            assert statuses[-1] == 503, f"/readyz during the grace period: {statuses}"
            assert (await http.get("/healthz")).status_code == 200
            late = await try_connect(a.ws_url(user=uid("late")))
            assert (late.kind, late.status) == ("close", 1012), late
            refused = (await scrape(a)).value("streamgate_refused_connections_total", reason="draining")
            assert refused == before.value("streamgate_refused_connections_total", reason="draining") + 1

        # The publish that was in flight is answered, then every socket gets 1012.
        answer = await writer.expect("published", timeout=10, match=lambda f: f.get("client_id") == in_flight_id)
        assert answer["duplicate"] is False
        for c in (*subs, writer):
            assert await c.wait_closed(timeout=10) == 1012, f"{c.name} closed with {c.close_code}"

        code = await asyncio.to_thread(a.proc.wait, max(0.1, signalled + EXIT_DEADLINE_S - time.monotonic()))
        exited_after = time.monotonic() - signalled
        assert exited_after < EXIT_DEADLINE_S, f"exited after {exited_after:.1f}s"
        assert_clean_exit(a, code)

        # Resume on B from the last id each client saw on A.
        for c in subs:
            again = await open_client(b, c.welcome["user"] if c.welcome else c.name)
            resumed.append(again)
            replay, joined = await again.join(room, since=c.ids[room][-1])
            assert joined["recovered"] is True
            assert joined["replayed"] == len(replay)
        stop.set()
        await background
        background = None
        last = b_ids[-1]
        for again in resumed:
            await again.wait_for_id(room, last, timeout=10)

        stored = await history(b, room)
        expected = [m["id"] for m in stored]
        # The in-flight publish was stored exactly once, under the answered id.
        matches = [m for m in stored if m["body"] == marker]
        assert [m["id"] for m in matches] == [answer["id"]]
        for c, again in zip(subs, resumed, strict=True):
            assert_ids_equal(c.ids[room] + again.ids[room], expected, f"{c.name} on A then B")
        # The writer retrying the in-flight publish through B is recognised
        # as the same message (idempotency records are per user).
        assert writer.welcome is not None
        async with await open_client(b, writer.welcome["user"]) as writer_again:
            retry = await writer_again.publish(room, marker, client_id=in_flight_id)
        assert (retry["id"], retry["duplicate"]) == (answer["id"], True)
    finally:
        stop.set()
        if background is not None:
            with contextlib.suppress(Exception):
                await background
        for c in (*subs, writer, pub_b, *resumed):
            await c.close()
        await raw.aclose()


@pytest.fixture
def solo(drain_redis: RedisServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Instance]:
    factory = InstanceFactory(drain_redis.url, tmp_path_factory.mktemp("drain-solo"))
    try:
        yield factory.start("S")  # default DRAIN_GRACE, DRAIN_TIMEOUT and RETRY_BUDGET
    finally:
        factory.stop_all()


async def test_sigterm_exits_within_10s_and_answers_the_publish_even_when_redis_hangs(
    solo: Instance, drain_redis: RedisServer, uid: Callable[[str], str], room: str
) -> None:
    raw = aioredis.Redis(host="127.0.0.1", port=drain_redis.port, decode_responses=True)
    writer = await open_client(solo, uid("writer"))
    try:
        before = await scrape(solo)
        await raw.execute_command("CLIENT", "PAUSE", "30000", "WRITE")
        cid = new_client_id()
        await writer.send({"type": "publish", "room": room, "body": {"stuck": True}, "client_id": cid})
        await async_wait_until(lambda: _received_publish(solo, before), 1, interval=0.01,
                               message="the instance never received the publish frame")
        assert solo.proc is not None
        solo.proc.send_signal(signal.SIGTERM)
        signalled = time.monotonic()
        try:
            code = await asyncio.to_thread(solo.proc.wait, EXIT_DEADLINE_S)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"still running {EXIT_DEADLINE_S:.0f}s after SIGTERM") from None
        assert time.monotonic() - signalled < EXIT_DEADLINE_S
        assert_clean_exit(solo, code)
        # Storage could not confirm: the client is told so before the 1012.
        assert await writer.wait_closed(timeout=5) == 1012
        answers = [f for f in writer.log if isinstance(f, dict)
                   and (f.get("client_id") == cid or f.get("ref") == cid)]
        assert [(f["type"], f.get("code")) for f in answers] in (
            [("published", None)], [("error", "unavailable")]), writer.log
    finally:
        await raw.execute_command("CLIENT", "UNPAUSE")
        await raw.aclose()
        if solo.is_running():
            solo.kill()
        await writer.close()
