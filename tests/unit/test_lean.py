"""The lean protocol class's write path: one ``transport.write`` per socket
per event-loop iteration, in order (app/lean.py)."""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.config import Config
from uvicorn.server import ServerState

from app.lean import LeanWebSocket
from app.protocol import wire_text_frame


class RecordingTransport(asyncio.Transport):
    """Keeps what is written, as the kernel would, and nothing else."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []
        self.closing = False

    def write(self, data: Any) -> None:
        self.writes.append(bytes(data))

    def get_write_buffer_size(self) -> int:
        return 0

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.closing = True

    def abort(self) -> None:
        self.closing = True


def _socket() -> tuple[LeanWebSocket, RecordingTransport]:
    sock = LeanWebSocket(Config(app="app.main:app"), ServerState(), {})
    transport = RecordingTransport()
    sock.connection_made(transport)
    return sock, transport


async def test_frames_of_one_iteration_leave_in_one_write() -> None:
    first, one = _socket()
    second, two = _socket()
    frames = [wire_text_frame(f'{{"n":{n}}}') for n in range(3)]
    for frame in frames:
        first.write(frame)
    second.write(frames[0])
    page = memoryview(b"".join(frames))
    first.write(page[: len(frames[0])])  # a slice of a shared page
    assert first.get_write_buffer_size() == sum(map(len, frames)) + len(frames[0])
    assert one.writes == [] and two.writes == []
    await asyncio.sleep(0)
    assert one.writes == [b"".join(frames) + frames[0]]
    assert two.writes == [frames[0]]
    assert first.get_write_buffer_size() == 0
    first.write(frames[1])  # a later iteration: a write of its own
    await asyncio.sleep(0)
    assert one.writes[1:] == [frames[1]]


async def test_nothing_is_written_once_the_connection_is_lost() -> None:
    sock, transport = _socket()
    sock.write(wire_text_frame("{}"))
    sock.connection_lost(None)
    sock.write(wire_text_frame("{}"))
    await asyncio.sleep(0)
    assert transport.writes == []
    assert sock.is_closing()
    assert await sock.receive() is None
