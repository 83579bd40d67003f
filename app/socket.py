"""What a connection needs from its WebSocket, whatever serves it.

The connection logic (:class:`app.ws.Connection`) is written against two
small interfaces so that one piece of code runs on both ways ``/ws`` can be
served: streamgate's own protocol class (:mod:`app.lean`, which owns the
transport) and plain ASGI (:mod:`app.asgi_socket`, e.g. ``uvicorn
app.main:app`` with one of uvicorn's WebSocket implementations).
"""

from __future__ import annotations

from typing import Protocol


class FrameWriter(Protocol):
    """Writes whole, pre-encoded server frames (shared by every socket a
    fan-out reaches) in order, without waiting. Only a server that owns
    the transport offers one; without it frames go through ``send_text``."""

    def offer(self, data: bytes) -> bool:
        """Write ``data`` if it can go now (not closing, buffer under its
        high-water mark), else False: one call on the fan-out's hot path."""

    def write(self, data: bytes | memoryview) -> None:
        """Queue bytes for the socket; never blocks, never reorders."""

    def get_write_buffer_size(self) -> int:
        """Bytes written but not yet handed to the kernel."""

    def is_closing(self) -> bool:
        """True once nothing more may be written: the close frame was sent
        or the connection is going away."""


class Socket(Protocol):
    """One accepted WebSocket, as the connection logic sees it."""

    @property
    def writer(self) -> FrameWriter | None:
        """Direct writes of shared frames, when the server allows them."""

    async def receive(self) -> str | bytes | None:
        """The next whole message (text or binary); None once the peer is
        gone or the server stopped reading (closing, keepalive timeout)."""

    async def send_text(self, text: str) -> None:
        """Send one text frame; raises OSError when the peer is gone."""

    async def close(self, code: int, reason: str) -> None:
        """Start the closing handshake, bounded in time: a peer that does
        not read (so not even the close frame fits) is dropped instead."""
