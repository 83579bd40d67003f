"""The hub's shared replay pages, against a stream whose reads the test gates."""

from __future__ import annotations

import asyncio
from typing import Any

from app.hub import Hub
from streams.joinpoint import Bounds
from streams.model import ZERO, Envelope, StreamId, format_id, parse_id

WAIT = 2.0


class GatedLog:
    """A room log whose reads wait until ``gate`` is set; counts the reads."""

    def __init__(self) -> None:
        self.gate = asyncio.Event()
        self.reads = 0

    async def read_after(self, room: str, after: str, count: int) -> list[Envelope]:
        self.reads += 1
        await self.gate.wait()
        start = parse_id(after)[1]
        return [Envelope(room=room, id=f"1-{k}", prev="", sender="u", body='"x"')
                for k in range(start + 1, start + 1 + count)]

    async def bounds(self, room: str) -> Bounds:
        """Read with each page: an untrimmed stream."""
        return Bounds(last_id="1-100000", trim_mark="0-0", length=100000, epoch="E")


def _hub(log: GatedLog) -> Hub:
    return Hub(log, subscribe_timeout_s=1.0)  # type: ignore[arg-type]


async def _idle(turns: int = 20) -> None:
    for _ in range(turns):
        await asyncio.sleep(0)


async def test_sockets_asking_at_once_share_one_read() -> None:
    log = GatedLog()
    hub = _hub(log)
    asks = [asyncio.create_task(hub.replay_page("r", ZERO, 10, 2**20)) for _ in range(3)]
    await _idle()
    log.gate.set()
    async with asyncio.timeout(WAIT):
        got = await asyncio.gather(*asks)
    assert log.reads == 1
    assert got[0] is got[1] is got[2] and got[0].count == 10


async def test_a_socket_that_goes_away_mid_read_does_not_fail_the_others() -> None:
    log = GatedLog()
    hub = _hub(log)
    first = asyncio.create_task(hub.replay_page("r", ZERO, 10, 2**20))
    await _idle()
    second = asyncio.create_task(hub.replay_page("r", ZERO, 10, 2**20))
    await _idle()
    assert log.reads == 1
    first.cancel()  # its connection ended while the read was in flight
    await _idle()
    log.gate.set()
    async with asyncio.timeout(WAIT):
        page = await second
    assert page.count == 10 and page.last == (1, 10)
    assert log.reads == 1


async def test_a_page_still_held_is_found_without_reading_again() -> None:
    log = GatedLog()
    log.gate.set()
    hub = _hub(log)
    held: Any = await hub.replay_page("r", ZERO, 10, 2**20)
    again = await hub.replay_page("r", ZERO, 10, 2**20)
    assert again is held and log.reads == 1
    after: StreamId = held.last
    nxt = await hub.replay_page("r", after, 10, 2**20)
    assert nxt.last == parse_id(format_id((1, 20))) and log.reads == 2
