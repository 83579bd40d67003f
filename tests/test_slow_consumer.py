"""A client that stops reading must not hold back others nor make the server grow.

The stalled client has a tiny kernel receive buffer and a WebSocket client
that stops reading, so TCP backpressure really reaches the server. Loopback
sockets here buffer about 3 MB in the kernel on the server side, so the flood
is several times larger than that (3000 messages of ~4 KB), or the server's
own outbound queue would never fill.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

from tests.support import Instance, WsClient, async_wait_until, open_client
from tests.support.http import history_ids
from tests.support.ids import assert_ids_equal
from tests.support.instance import DROPS_STALLED_SOCKETS
from tests.support.processes import rss_bytes
from tests.support.tcp import tcp_socket

pytestmark = pytest.mark.slow

MESSAGES = 3000
BODY_BYTES = 4000
MAX_RSS_GROWTH = 50 * 1024 * 1024
MIN_BACKLOG = 1024 * 1024  # bytes the server's kernel must hold for the stalled client
OUTBOUND_QUEUE = "64"
STALL_TIMEOUT = 1  # SLOW_CONSUMER_TIMEOUT of the instance that drops stalled readers


@dataclass
class Peak:
    rss: int = 0
    backlog: int = 0


async def _watch(server: Instance, stalled: WsClient, peak: Peak, stop: asyncio.Event) -> None:
    """Sample the server's RSS and its unsent bytes towards the stalled client."""
    client_port = stalled.ws.transport.get_extra_info("sockname")[1]
    while not stop.is_set():
        peak.rss = max(peak.rss, rss_bytes(server.pid))
        sock = tcp_socket(server.port, client_port)
        if sock is not None:
            peak.backlog = max(peak.backlog, sock.tx_queue)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 0.05)


async def _flood(publishers: list[WsClient], room: str) -> list[str]:
    per = MESSAGES // len(publishers)
    results = await asyncio.gather(
        *(
            pub.publish_many(
                room,
                [{"p": k, "n": n, "pad": "x" * BODY_BYTES} for n in range(per)],
                window=32,
                timeout=120,
            )
            for k, pub in enumerate(publishers)
        )
    )
    return [f["id"] for frames in results for f in frames]


async def _setup(
    server: Instance, publish_on: list[Instance], room: str, uid: Callable[[str], str]
) -> tuple[WsClient, WsClient, list[WsClient]]:
    fast = await open_client(server, uid("fast"))
    stalled = await open_client(server, uid("stalled"), rcvbuf=4096, max_queue=1)
    publishers = [await open_client(inst, uid(f"pub{k}")) for k, inst in enumerate(publish_on)]
    await fast.join(room, since="$")
    await stalled.join(room, since="$")
    # Warm-up traffic that both read, so the RSS baseline includes steady-state allocations.
    warm = await publishers[0].publish_many(room, [{"warm": n, "pad": "x" * BODY_BYTES} for n in range(200)])
    await fast.wait_for_id(room, warm[-1]["id"], timeout=10)
    await stalled.wait_for_id(room, warm[-1]["id"], timeout=10)
    return fast, stalled, publishers


async def _finish_stalled(
    server: Instance, stalled: WsClient, room: str, expected: list[str], timeout: float
) -> list[str]:
    """Read on; if the server closed the stalled client, resume with `since`."""
    stalled.resume()
    await stalled.wait_for(
        lambda: len(stalled.ids[room]) >= len(expected) or stalled.closed.is_set(),
        timeout=timeout,
        message=lambda: f"stalled client has {len(stalled.ids[room])}/{len(expected)}",
    )
    received = list(stalled.ids[room])
    if not stalled.closed.is_set():
        return received
    assert stalled.close_code in (4408, 1006), f"stalled client closed with {stalled.close_code}"
    async with await open_client(server, stalled.welcome["user"] if stalled.welcome else "stalled") as again:
        replay, joined = await again.join(room, since=received[-1])
        assert joined["recovered"] is True
        assert joined["replayed"] == len(replay)
        await again.wait_for(lambda: len(received) + len(again.ids[room]) >= len(expected), timeout=timeout)
        return received + list(again.ids[room])


@pytest.fixture(scope="module")
def queued(instance_factory: Any) -> Instance:
    return instance_factory.start("S", OUTBOUND_QUEUE=OUTBOUND_QUEUE, SLOW_CONSUMER_TIMEOUT="60")


async def test_stalled_reader_does_not_hold_back_others_then_catches_up(
    queued: Instance, inst_a: Instance, inst_b: Instance, room: str, uid: Callable[[str], str]
) -> None:
    fast, stalled, publishers = await _setup(queued, [inst_a, inst_b], room, uid)
    try:
        await stalled.pause()
        baseline = rss_bytes(queued.pid)
        peak, stop = Peak(), asyncio.Event()
        watcher = asyncio.create_task(_watch(queued, stalled, peak, stop))
        try:
            flood_ids = await _flood(publishers, room)
            expected = await history_ids(inst_a, room)
            assert len(expected) == 200 + MESSAGES
            assert set(flood_ids) <= set(expected)
            # The reading member gets everything while the other one still does not read.
            await fast.wait_for_count(room, len(expected), timeout=20)
            assert_ids_equal(fast.ids[room], expected, "reading member")
            assert not stalled.closed.is_set() or stalled.close_code == 4408
        finally:
            stop.set()
            await watcher

        assert peak.backlog >= MIN_BACKLOG, f"no real backpressure: peak unsent bytes {peak.backlog}"
        growth = peak.rss - baseline
        assert growth < MAX_RSS_GROWTH, f"server RSS grew by {growth / 2**20:.1f} MiB"

        got = await _finish_stalled(queued, stalled, room, expected, timeout=30)
        assert_ids_equal(got, expected, "stalled member after resuming")
    finally:
        for client in (fast, stalled, *publishers):
            await client.close()


@pytest.fixture(scope="module")
def impatient(instance_factory: Any) -> Instance:
    return instance_factory.start("S1", OUTBOUND_QUEUE=OUTBOUND_QUEUE, SLOW_CONSUMER_TIMEOUT=str(STALL_TIMEOUT))


async def test_reader_stalled_longer_than_the_timeout_is_dropped_and_resumes(
    impatient: Instance, inst_a: Instance, room: str, uid: Callable[[str], str]
) -> None:
    fast, stalled, publishers = await _setup(impatient, [inst_a], room, uid)
    try:
        await stalled.pause()
        baseline = rss_bytes(impatient.pid)
        client_port = stalled.ws.transport.get_extra_info("sockname")[1]
        peak, stop = Peak(), asyncio.Event()
        watcher = asyncio.create_task(_watch(impatient, stalled, peak, stop))
        try:
            await _flood(publishers, room)
            expected = await history_ids(inst_a, room)
            await fast.wait_for_count(room, len(expected), timeout=20)
            assert_ids_equal(fast.ids[room], expected, "reading member")
            # Unable to write for longer than SLOW_CONSUMER_TIMEOUT, the server gives
            # up on the connection. Either it drops the TCP connection (its socket
            # towards the client goes away: the client can only see 1006), or it
            # keeps the socket to deliver the 4408 close frame behind the data.
            def server_side_gone() -> bool:
                sock = tcp_socket(impatient.port, client_port)
                return sock is None or sock.state != "ESTABLISHED"

            try:
                await async_wait_until(server_side_gone, timeout=STALL_TIMEOUT + 5)
                dropped = True
            except AssertionError:
                dropped = False
        finally:
            stop.set()
            await watcher
        assert peak.rss - baseline < MAX_RSS_GROWTH, f"server RSS grew by {(peak.rss - baseline) / 2**20:.1f} MiB"

        unsent = tcp_socket(impatient.port, client_port)
        stalled.resume()
        closed_code = await stalled.wait_closed(timeout=30)
        # Plain ASGI cannot drop it, nor write the close frame into the full
        # window: the server closes the socket behind the data instead.
        if dropped or not DROPS_STALLED_SOCKETS:
            assert closed_code in (4408, 1006), f"expected 4408 or a dropped connection, got {closed_code}"
        else:
            assert closed_code == 4408, (
                f"the server kept the stalled socket open for {STALL_TIMEOUT + 5:.0f}s ({unsent}) "
                f"yet the client, reading on, got close code {closed_code} instead of 4408 "
                f"after {len(stalled.ids[room])} of {len(expected)} messages"
            )
        got = await _finish_stalled(impatient, stalled, room, expected, timeout=30)
        assert_ids_equal(got, expected, "stalled member after reconnecting")
    finally:
        for client in (fast, stalled, *publishers):
            await client.close()
