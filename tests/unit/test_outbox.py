"""The per-socket bounded queue and its writer, with an in-memory send."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import Callable

import pytest

from app import pages
from app.outbox import RAW_HIGH_WATER, Outbox
from app.pages import Page
from app.protocol import wire_text_frame

STALL = 0.05  # stall timeout for the writer; nothing real is awaited here
WAIT = 2.0  # upper bound for something that should happen at once


class Socket:
    """A fake socket: records frames; ``gate`` cleared means the peer stopped reading."""

    def __init__(self) -> None:
        self.frames: list[str] = []
        self.gate = asyncio.Event()
        self.gate.set()

    async def send(self, frame: str) -> None:
        await self.gate.wait()
        self.frames.append(frame)


async def stop(outbox: Outbox) -> None:
    writer = outbox.close()
    if writer is not None:
        with contextlib.suppress(asyncio.CancelledError):
            await writer


async def until(cond: Callable[[], bool]) -> None:
    async with asyncio.timeout(WAIT):
        while not cond():
            await asyncio.sleep(0)


async def idle(turns: int = 20) -> None:
    for _ in range(turns):
        await asyncio.sleep(0)


@pytest.mark.parametrize("limit", [1, 8, 100])
async def test_offer_until_full(limit: int) -> None:
    box = Outbox(Socket().send, limit=limit, stall_timeout_s=STALL)
    assert all(box.offer(f"m{i}") for i in range(limit))
    assert len(box) == limit
    assert not box.offer("overflow")
    assert not box.offer("overflow")
    assert len(box) == limit


@pytest.mark.parametrize(("limit", "slack"), [(8, 0), (8, 3), (1, 256)])
async def test_push_allows_slack_beyond_the_limit(limit: int, slack: int) -> None:
    box = Outbox(Socket().send, limit=limit, stall_timeout_s=STALL, control_slack=slack)
    for i in range(limit):
        assert box.offer(f"m{i}")
    assert not box.offer("message")
    for i in range(slack):
        assert box.push(f"c{i}")
    assert len(box) == limit + slack
    assert not box.push("one too many")
    assert len(box) == limit + slack


async def test_push_fills_an_empty_queue_up_to_limit_plus_slack() -> None:
    box = Outbox(Socket().send, limit=4, stall_timeout_s=STALL, control_slack=2)
    assert all(box.push(f"c{i}") for i in range(6))
    assert not box.push("c6")
    assert not box.offer("m")


async def test_writer_sends_in_order_and_runs_only_while_something_is_queued() -> None:
    sock = Socket()
    box = Outbox(sock.send, limit=8, stall_timeout_s=STALL)
    assert box.writer is None
    box.offer("a")
    box.push("b")
    box.offer("c")
    assert box.writer is not None
    await until(lambda: len(sock.frames) == 3)
    await until(lambda: box.writer is None)  # an empty queue needs no task
    box.offer("d")
    assert await box.put("e", lambda: True)
    await until(lambda: len(sock.frames) == 5)
    await until(lambda: box.writer is None)
    assert sock.frames == ["a", "b", "c", "d", "e"]
    assert box.sent == 5
    assert len(box) == 0
    assert await box.flushed(timeout_s=WAIT)


async def test_direct_writes_need_no_writer() -> None:
    raw = Transport()
    box = Outbox(Socket().send, limit=8, stall_timeout_s=STALL)
    box.attach(raw)  # type: ignore[arg-type]
    assert box.offer("m", wire_text_frame("m"))
    assert box.push("c")
    assert box.writer is None and len(box) == 0
    assert raw.written == [wire_text_frame("m"), wire_text_frame("c")]
    raw.buffer = RAW_HIGH_WATER  # the peer stopped reading: frames queue, and a writer runs
    assert box.push("d")
    assert box.writer is not None and len(box) == 1
    await stop(box)


async def test_offer_works_again_after_the_writer_drains() -> None:
    sock = Socket()
    box = Outbox(sock.send, limit=4, stall_timeout_s=STALL)
    for i in range(4):
        box.offer(f"m{i}")
    assert not box.offer("dropped")
    await until(lambda: len(box) == 0)
    assert box.offer("m4")
    await until(lambda: len(sock.frames) == 5)
    assert sock.frames == ["m0", "m1", "m2", "m3", "m4"]


async def test_put_waits_for_space_and_resumes_when_the_writer_drains() -> None:
    sock = Socket()
    sock.gate.clear()  # the writer takes one frame and blocks on it
    box = Outbox(sock.send, limit=8, stall_timeout_s=WAIT)
    for i in range(9):
        assert await box.put(f"m{i}", lambda: True)  # room left: returns at once
        await idle()
    putter = asyncio.create_task(box.put("late", lambda: True))
    await idle()
    assert not putter.done()
    assert len(box) == 8
    sock.gate.set()
    async with asyncio.timeout(WAIT):
        await putter
    await until(lambda: len(sock.frames) == 10)
    assert sock.frames == [f"m{i}" for i in range(9)] + ["late"]


async def test_put_waits_again_until_drained_to_half() -> None:
    sock = Socket()
    box = Outbox(sock.send, limit=8, stall_timeout_s=WAIT)
    for i in range(8):
        box.offer(f"m{i}")
    putter = asyncio.create_task(box.put("late", lambda: True))
    sent_when_released: list[int] = []
    putter.add_done_callback(lambda _: sent_when_released.append(len(sock.frames)))
    async with asyncio.timeout(WAIT):
        await putter
    await until(lambda: len(sock.frames) == 9)
    # released once the queue was down to the low-water mark (half the limit)
    assert sent_when_released and sent_when_released[0] >= 4


@pytest.mark.parametrize("waiters", [1, 3])
async def test_several_putters_all_resume(waiters: int) -> None:
    sock = Socket()
    sock.gate.clear()
    box = Outbox(sock.send, limit=4, stall_timeout_s=WAIT)
    box.offer("m0")
    await idle()  # the writer holds m0
    for i in range(1, 5):
        box.offer(f"m{i}")
    putters = [asyncio.create_task(box.put(f"p{i}", lambda: True)) for i in range(waiters)]
    await idle()
    assert not any(t.done() for t in putters)
    sock.gate.set()
    async with asyncio.timeout(WAIT):
        await asyncio.gather(*putters)
    await until(lambda: len(sock.frames) == 5 + waiters)
    assert sorted(sock.frames[5:]) == [f"p{i}" for i in range(waiters)]


async def test_stalled_when_a_send_waits_past_the_timeout() -> None:
    sock = Socket()
    sock.gate.clear()  # the peer never reads
    box = Outbox(sock.send, limit=8, stall_timeout_s=STALL)
    box.offer("m0")
    loop = asyncio.get_running_loop()
    await until(lambda: box.stalled(loop.time()))
    await stop(box)
    assert box.sent == 0
    assert sock.frames == []


async def test_slow_but_moving_send_is_not_too_slow() -> None:
    async def send(frame: str) -> None:
        await asyncio.sleep(STALL / 10)
        sent.append(frame)

    sent: list[str] = []
    box = Outbox(send, limit=8, stall_timeout_s=STALL)
    for i in range(5):  # together longer than the stall timeout, each one quicker
        box.offer(f"m{i}")
    loop = asyncio.get_running_loop()
    for _ in range(5):
        await asyncio.sleep(STALL / 10)
        assert not box.stalled(loop.time())
    await until(lambda: len(sent) == 5)
    await until(lambda: box.writer is None)


async def test_send_errors_go_to_the_owner_and_nothing_more_is_taken() -> None:
    async def send(frame: str) -> None:
        raise ConnectionResetError("peer went away")

    errors: list[BaseException] = []
    box = Outbox(send, limit=8, stall_timeout_s=STALL, on_error=errors.append)
    box.offer("m0")
    await until(lambda: bool(errors))
    assert isinstance(errors[0], ConnectionResetError)
    await until(lambda: box.writer is None)
    assert not box.offer("m1")
    assert not box.push("c")
    assert not await box.flushed(timeout_s=WAIT)


# -- the byte bound ------------------------------------------------------------


async def test_offer_refuses_past_the_byte_bound_with_frames_to_spare() -> None:
    box = Outbox(Socket().send, limit=100, stall_timeout_s=STALL, max_bytes=1000)
    assert box.offer("x" * 600)
    assert box.offer("x" * 400)
    assert box.nbytes == 1000
    assert not box.offer("y")
    assert len(box) == 2


async def test_one_item_larger_than_the_bound_is_let_in_when_nothing_is_held() -> None:
    box = Outbox(Socket().send, limit=100, stall_timeout_s=STALL, max_bytes=1000)
    assert box.offer("x" * 5000)
    assert not box.offer("y")


async def test_bytes_count_until_written_and_put_waits_for_them() -> None:
    sock = Socket()
    sock.gate.clear()
    box = Outbox(sock.send, limit=100, stall_timeout_s=WAIT, max_bytes=1000)
    box.offer("a" * 700)
    await idle()  # the writer holds "a..." in flight: still counted
    assert len(box) == 0 and box.nbytes == 700
    putter = asyncio.create_task(box.put("b" * 400, lambda: True))
    await idle()
    assert not putter.done()
    sock.gate.set()
    async with asyncio.timeout(WAIT):
        assert await putter
    await until(lambda: len(sock.frames) == 2)
    assert box.nbytes == 0


async def test_put_asks_whether_still_wanted_only_once_there_is_room() -> None:
    sock = Socket()
    sock.gate.clear()
    box = Outbox(sock.send, limit=2, stall_timeout_s=WAIT)
    box.offer("m0")
    await idle()  # the writer holds m0
    box.offer("m1")
    box.offer("m2")
    wanted = [True]
    asked: list[int] = []

    def still_wanted() -> bool:
        asked.append(len(box))
        return wanted[0]

    putter = asyncio.create_task(box.put("stale", still_wanted))
    await idle()
    assert not putter.done() and asked == []
    box.push("left")  # the room is left while the put waits
    wanted[0] = False
    sock.gate.set()
    async with asyncio.timeout(WAIT):
        assert await putter is False
    await until(lambda: len(sock.frames) == 4)
    assert asked and sock.frames == ["m0", "m1", "m2", "left"]
    assert box.nbytes == 0


class Transport:
    """A raw transport whose peer reads only when told to."""

    def __init__(self) -> None:
        self.buffer = 0
        self.written: list[bytes] = []
        self.peak = 0
        self.closing = False

    def write(self, data: memoryview) -> None:
        self.written.append(bytes(data))
        self.buffer += len(data)
        self.peak = max(self.peak, self.buffer)

    def offer(self, data: bytes) -> bool:
        if self.closing or self.buffer >= RAW_HIGH_WATER:
            return False
        self.write(data)
        return True

    def get_write_buffer_size(self) -> int:
        return self.buffer

    def is_closing(self) -> bool:
        return self.closing

    def get_protocol(self) -> object:
        return None


def _page(entries: int, body: int) -> Page:
    frames = [wire_text_frame(f'{{"n":{n},"b":"{"x" * body}"}}') for n in range(entries)]
    return pages.build(frames, [(1, n) for n in range(entries)], budget=10 * 2**20)


async def test_a_page_goes_to_the_transport_a_slice_at_a_time_at_frame_boundaries() -> None:
    page = _page(200, 2000)  # ~400 KB: several slices
    raw = Transport()
    box = Outbox(Socket().send, limit=8, stall_timeout_s=WAIT, max_bytes=page.nbytes)
    box.attach(raw)  # type: ignore[arg-type]
    assert await box.put(page, lambda: True)
    for _ in range(1000):  # bounded: the peer reads a little at a time
        await until(lambda: raw.buffer > RAW_HIGH_WATER or box.nbytes == 0)
        if box.nbytes == 0:
            break
        assert box.nbytes == page.nbytes  # counted until all of it has drained
        raw.buffer = max(0, raw.buffer - 50_000)
    assert box.nbytes == 0
    assert b"".join(raw.written) == page.blob
    assert len(raw.written) > 1
    assert raw.peak <= RAW_HIGH_WATER + pages.SLICE_BYTES
    # frames of 126..65535 bytes have a 4-byte header
    frame_ends = set(itertools.accumulate(len(t.encode()) + 4 for t in page.texts()))
    slice_ends = list(itertools.accumulate(len(chunk) for chunk in raw.written))
    assert set(slice_ends) <= frame_ends, "a slice ends inside a frame"


async def test_the_writer_ends_once_the_socket_is_closing() -> None:
    """Nothing more can reach a socket whose close frame was sent: the writer
    stops (ending the connection) instead of consuming the queue unwritten."""
    page = _page(200, 2000)
    raw = Transport()
    errors: list[BaseException] = []
    box = Outbox(Socket().send, limit=8, stall_timeout_s=WAIT, max_bytes=page.nbytes,
                 on_error=errors.append)
    box.attach(raw)  # type: ignore[arg-type]
    await box.put(page, lambda: True)
    await until(lambda: raw.buffer > RAW_HIGH_WATER)
    raw.closing = True
    raw.buffer = 0
    await until(lambda: bool(errors))
    assert isinstance(errors[0], ConnectionResetError)
    assert box.writer is None
    assert len(b"".join(raw.written)) < page.nbytes
