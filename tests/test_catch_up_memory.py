"""A socket that joins deep rooms from "0" and never reads holds at most its
outbox's bytes in the instance, and lets go of them once the server gives up
on it.

The client has a 4 KB kernel receive buffer, so after the kernel's own
buffers (a few MB, not counted in the process's RSS) the catch-up really
waits for the socket. Without a byte bound, pages of up to 1,000 entries are
one frame each to the outbox, and the whole history of the rooms ends up in
the instance's memory.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from tests.conftest import BASE_ENV
from tests.hostile.rawws import RawWebSocket
from tests.hostile.support import metric
from tests.support import Instance, ModuleAppInstance, RedisServer, async_wait_until, open_client
from tests.support.history import fill_room
from tests.support.processes import rss_bytes
from tests.support.tcp import tcp_socket

pytestmark = pytest.mark.slow

OUTBOUND_BYTES = 256 * 1024
ROOMS = 3
ENTRIES = 4000
BODY = 2000
SLACK = 2 * 2**20  # transport slice, a page being read, allocator noise
QUIET_S = 1.0


@pytest.fixture(scope="module")
def bounded(instance_factory: Any) -> Instance:
    return instance_factory.start("M", OUTBOUND_BYTES=str(OUTBOUND_BYTES), SLOW_CONSUMER_TIMEOUT="60")


async def _queued(inst: Instance) -> float:
    return await metric(inst, "websocket_messages_sent_total", type="message")


async def test_a_socket_that_never_reads_holds_at_most_its_outbox_bytes(
    bounded: Instance, redis_client: Any
) -> None:
    prefix = BASE_ENV["KEY_PREFIX"]
    tag = uuid.uuid4().hex[:8]
    rooms = [f"deep-{tag}-{k}" for k in range(ROOMS)]
    for room in rooms:
        fill_room(redis_client, prefix, room, ENTRIES, BODY)

    # Warm up the catch-up path with a client that reads, so the baseline
    # includes what any replay allocates once.
    async with await open_client(bounded, f"warm-{tag}") as warm:
        replay, joined = await warm.join(rooms[0], since="0", timeout=30)
        assert joined["replayed"] == ENTRIES == len(replay)
    baseline = rss_bytes(bounded.pid)
    before = await _queued(bounded)

    ws = await RawWebSocket.connect("127.0.0.1", bounded.port, f"/ws?user=stalled-{tag}", rcvbuf=4096)
    try:
        await ws.expect_json("welcome")
        for room in rooms:
            await ws.send_json({"type": "join", "room": room, "since": "0"})
        rss = [baseline]
        samples: list[tuple[float, float]] = []

        async def came_to_a_stop() -> bool:
            """The catch-up has queued nothing for a while: it waits for the socket."""
            now = time.monotonic()
            rss.append(rss_bytes(bounded.pid))
            samples.append((now, await _queued(bounded) - before))
            recent = [v for t, v in samples if t >= now - QUIET_S]
            return samples[0][0] <= now - QUIET_S and recent[0] == recent[-1] > 0

        await async_wait_until(came_to_a_stop, 15, interval=0.1,
                               message=lambda: f"the catch-up never came to a stop: {samples[-3:]}")
        peak = max(*rss, rss_bytes(bounded.pid))
        queued = samples[-1][1]
    finally:
        await ws.aclose()

    growth = peak - baseline
    assert growth <= OUTBOUND_BYTES + SLACK, (
        f"RSS grew by {growth / 2**20:.2f} MiB with {queued:.0f} of {ROOMS * ENTRIES} entries queued "
        f"(bound {(OUTBOUND_BYTES + SLACK) / 2**20:.2f} MiB)"
    )
    assert queued < ROOMS * ENTRIES, "the client took everything: no backpressure reached the instance"


@pytest.fixture(scope="module")
def heartbeat(redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Instance]:
    """The production entry point (``python -m app``), which pings every socket
    every HEARTBEAT_INTERVAL and closes one that does not answer in time."""
    env = dict(BASE_ENV, REDIS_URL=redis_server.url, INSTANCE_ID=f"hb-{uuid.uuid4().hex[:6]}",
               HEARTBEAT_INTERVAL="1", OUTBOUND_BYTES=str(OUTBOUND_BYTES), SLOW_CONSUMER_TIMEOUT="60")
    inst = ModuleAppInstance("HB", env, workdir=tmp_path_factory.mktemp("heartbeat"))
    inst.start()
    yield inst
    inst.stop()


async def test_a_socket_closed_for_missed_pings_ends_its_catch_up(
    heartbeat: Instance, redis_client: Any
) -> None:
    """The server gives up on a socket that answers no ping and sends its close
    frame; what the catch-up still had to send can no longer be written, so
    the connection must end rather than read on through the history."""
    room = f"deep-{uuid.uuid4().hex[:8]}"
    fill_room(redis_client, BASE_ENV["KEY_PREFIX"], room, ENTRIES, BODY)
    ws = await RawWebSocket.connect("127.0.0.1", heartbeat.port, f"/ws?user=mute-{room}", rcvbuf=4096)
    try:
        await ws.expect_json("welcome")
        before = await _queued(heartbeat)
        await ws.send_json({"type": "join", "room": room, "since": "0"})

        def server_side_gone() -> bool:
            sock = tcp_socket(heartbeat.port, ws.local_port)
            return sock is None or sock.state != "ESTABLISHED"

        # Ping after 1 s, no pong within 1 s: closed; then let go within a few seconds.
        await async_wait_until(server_side_gone, timeout=10,
                               message="the server kept the socket that missed its pings")
        queued = await _queued(heartbeat) - before
    finally:
        await ws.aclose()
    assert queued < ENTRIES, "the catch-up ran through the whole history for a closed socket"
