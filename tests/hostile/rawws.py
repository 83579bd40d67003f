"""A bare-bones WebSocket client on a raw asyncio stream, for hostile tests.

It does the opening handshake by hand and then writes exactly the bytes a test
asks for, so it can send what no well-behaved library will: invalid UTF-8 in a
text frame, reserved opcodes, unmasked or truncated frames. It reads only
when told to, so a test can stop reading and let TCP backpressure build up
for real (optionally with a tiny kernel receive buffer).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import socket
import struct
import time
from dataclasses import dataclass
from typing import Any

from tests.support.timeouts import scaled

OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA


def frame_bytes(opcode: int, payload: bytes, *, fin: bool = True, mask: bool = True, rsv: int = 0,
                length: int | None = None, key: bytes | None = None) -> bytes:
    """One frame as RFC 6455 lays it out; ``length`` may lie about the payload.

    ``key=b"\\0\\0\\0\\0"`` is a legal mask that leaves the payload as it is
    (cheap for frames of megabytes)."""
    n = len(payload) if length is None else length
    head = bytes([(0x80 if fin else 0) | (rsv & 0x7) << 4 | (opcode & 0xF)])
    bit = 0x80 if mask else 0
    if n < 126:
        head += bytes([bit | n])
    elif n < 1 << 16:
        head += bytes([bit | 126]) + struct.pack("!H", n)
    else:
        head += bytes([bit | 127]) + struct.pack("!Q", n)
    if not mask:
        return head + payload
    key = os.urandom(4) if key is None else key
    if key == b"\0\0\0\0":
        return head + key + payload
    return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


def close_payload(code: int, reason: str = "") -> bytes:
    return struct.pack("!H", code) + reason.encode()


@dataclass
class Received:
    opcode: int
    payload: bytes

    @property
    def text(self) -> str:
        return self.payload.decode()

    @property
    def close_code(self) -> int | None:
        if self.opcode != OP_CLOSE:
            return None
        return struct.unpack("!H", self.payload[:2])[0] if len(self.payload) >= 2 else 1005

    def json(self) -> Any:
        return strict_json(self.payload.decode())


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def strict_json(text: str) -> Any:
    """RFC 8259 JSON only: what a browser's JSON.parse accepts (no NaN/Infinity)."""
    return json.loads(text, parse_constant=_no_constant)


class HandshakeRefused(Exception):
    def __init__(self, status: int, head: bytes) -> None:
        super().__init__(f"handshake answered with HTTP {status}")
        self.status = status
        self.head = head


class RawWebSocket:
    """A client connection over asyncio streams; every read is explicit."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, response: bytes) -> None:
        self.reader = reader
        self.writer = writer
        self.response = response

    @classmethod
    async def connect(cls, host: str, port: int, path: str, *, rcvbuf: int | None = None,
                      headers: dict[str, str] | None = None, timeout: float = 5.0) -> RawWebSocket:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.setblocking(False)
        loop = asyncio.get_running_loop()
        try:
            await asyncio.wait_for(loop.sock_connect(sock, (host, port)), scaled(timeout))
            # A small stream limit keeps this side's own buffering small too.
            reader, writer = await asyncio.open_connection(sock=sock, limit=2**16)
        except BaseException:
            sock.close()
            raise
        key = base64.b64encode(os.urandom(16)).decode()
        lines = [
            f"GET {path} HTTP/1.1",
            f"Host: {host}:{port}",
            "Upgrade: websocket",
            "Connection: Upgrade",
            f"Sec-WebSocket-Key: {key}",
            "Sec-WebSocket-Version: 13",
        ]
        lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), scaled(timeout))
        except BaseException:
            writer.transport.abort()
            raise
        status = int(head.split(b" ", 2)[1])
        if status != 101:
            writer.transport.abort()
            raise HandshakeRefused(status, head)
        return cls(reader, writer, head)

    @property
    def local_port(self) -> int:
        return self.writer.get_extra_info("sockname")[1]

    # -- writing -----------------------------------------------------------

    async def send_raw(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def send_text(self, text: str) -> None:
        await self.send_raw(frame_bytes(OP_TEXT, text.encode()))

    async def send_json(self, obj: Any) -> None:
        await self.send_text(json.dumps(obj))

    # -- reading -----------------------------------------------------------

    async def recv(self, timeout: float = 5.0) -> Received:
        """The next complete message (fragments joined); EOFError at end of stream."""
        return await asyncio.wait_for(self._recv(), scaled(timeout))

    async def _recv(self) -> Received:
        opcode, parts = None, []
        while True:
            try:
                b0, b1 = await self.reader.readexactly(2)
            except asyncio.IncompleteReadError:
                raise EOFError("connection ended without a close frame") from None
            n = b1 & 0x7F
            if n == 126:
                n = struct.unpack("!H", await self.reader.readexactly(2))[0]
            elif n == 127:
                n = struct.unpack("!Q", await self.reader.readexactly(8))[0]
            key = await self.reader.readexactly(4) if b1 & 0x80 else b""
            data = await self.reader.readexactly(n)
            if key:
                data = bytes(b ^ key[i % 4] for i, b in enumerate(data))
            op = b0 & 0xF
            if op >= 0x8:  # control frames may come between fragments
                return Received(op, data)
            if op != OP_CONT:
                opcode = op
            parts.append(data)
            if b0 & 0x80:
                return Received(opcode if opcode is not None else op, b"".join(parts))

    async def recv_json(self, timeout: float = 5.0) -> Any:
        """The next text message as strict JSON; fails on anything else."""
        got = await self.recv(timeout)
        assert got.opcode == OP_TEXT, f"expected a text frame, got opcode {got.opcode} {got.payload[:80]!r}"
        return got.json()

    async def expect_json(self, kind: str, timeout: float = 5.0) -> dict[str, Any]:
        """Skip frames until one of type ``kind``; fail on a close frame."""
        deadline = time.monotonic() + scaled(timeout)
        while True:
            got = await asyncio.wait_for(self._recv(), max(deadline - time.monotonic(), 0.001))
            if got.opcode == OP_CLOSE:
                raise AssertionError(f"closed with {got.close_code} while waiting for {kind!r}")
            if got.opcode in (OP_PING, OP_PONG):
                continue
            frame = got.json()
            if frame.get("type") == kind:
                return frame

    async def close_outcome(self, timeout: float = 5.0) -> int | None:
        """Read until the server's close frame (its code) or EOF (None)."""
        deadline = time.monotonic() + scaled(timeout)
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError("connection still open")
            try:
                got = await asyncio.wait_for(self._recv(), remaining)
            except EOFError:
                return None
            except (ConnectionResetError, asyncio.IncompleteReadError):
                return None
            if got.opcode == OP_CLOSE:
                return got.close_code

    def abort(self) -> None:
        self.writer.transport.abort()

    async def aclose(self) -> None:
        with contextlib.suppress(Exception):
            self.writer.write(frame_bytes(OP_CLOSE, close_payload(1000)))
        self.writer.transport.abort()
        with contextlib.suppress(Exception):
            await self.writer.wait_closed()


@dataclass
class Seen:
    at: float  # time.time() when read
    frame: dict[str, Any]


class Reader:
    """Reads a RawWebSocket in the background: every text frame parsed as
    strict JSON and stamped with its arrival time; server pings answered.

    Anything a conforming client could not accept (a binary frame, text that
    is not strict JSON, a frame that is not an object) is kept in
    ``violations``; a close frame or the end of the stream ends the reader.
    """

    def __init__(self, ws: RawWebSocket, name: str = "") -> None:
        self.ws = ws
        self.name = name
        self.seen: list[Seen] = []
        self.violations: list[str] = []
        self.close_code: int | None = None
        self.ended = asyncio.Event()
        self._changed = asyncio.Event()
        self._task = asyncio.create_task(self._run(), name=f"raw-reader-{name}")

    async def _run(self) -> None:
        try:
            while True:
                got = await self.ws._recv()
                if got.opcode == OP_PING:
                    self.ws.writer.write(frame_bytes(OP_PONG, got.payload))
                    continue
                if got.opcode == OP_PONG:
                    continue
                if got.opcode == OP_CLOSE:
                    self.close_code = got.close_code
                    return
                if got.opcode != OP_TEXT:
                    self.violations.append(f"opcode {got.opcode}: {got.payload[:100]!r}")
                    continue
                try:
                    frame = strict_json(got.payload.decode())
                except ValueError as exc:
                    self.violations.append(f"not strict JSON ({exc}): {got.payload[:200]!r}")
                    continue
                if not isinstance(frame, dict) or not isinstance(frame.get("type"), str):
                    self.violations.append(f"not a frame object: {got.payload[:200]!r}")
                    continue
                self.seen.append(Seen(time.time(), frame))
                self._changed.set()
        except (EOFError, ConnectionError, asyncio.IncompleteReadError):
            return
        finally:
            self.ended.set()
            self._changed.set()

    def frames(self, kind: str | None = None, room: str | None = None) -> list[dict[str, Any]]:
        return [s.frame for s in self.seen
                if (kind is None or s.frame["type"] == kind) and (room is None or s.frame.get("room") == room)]

    def ids(self, room: str) -> list[str]:
        return [f["id"] for f in self.frames("message", room)]

    async def wait_for(self, predicate: Any, timeout: float, what: str = "condition") -> Any:
        deadline = time.monotonic() + scaled(timeout)
        while True:
            value = predicate()
            if value:
                return value
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"{self.name}: {what} not met within {scaled(timeout):.1f}s "
                                     f"(ended={self.ended.is_set()}, close={self.close_code})")
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), min(remaining, 0.1))

    async def stop(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        await self.ws.aclose()
