"""A WebSocket test client over `websockets.asyncio.client.connect`.

One background task reads every frame the server sends: it records each
`message` frame per room (`ids`, `messages`) and queues every frame for the
helpers (`recv_frame`, `expect`, `join`, `publish`). Only one coroutine at a
time should consume the queue of a client.

A client can also be opened with `read=False` (or paused with `pause()`): then
nothing reads the socket, the library's small receive queue fills up, and TCP
backpressure builds up towards the server, as with a real stalled client.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from .timeouts import scaled

Frame = dict[str, Any]

DEFAULT_TIMEOUT = 5.0
MISSING: Any = object()
ABNORMAL_CLOSE = 1006


def new_client_id() -> str:
    return uuid.uuid4().hex


class ServerError(AssertionError):
    """The server answered with an `error` frame where a helper expected success."""

    def __init__(self, frame: Frame) -> None:
        super().__init__(f"server error frame: {frame!r}")
        self.frame = frame
        self.code = frame.get("code")
        self.ref = frame.get("ref")


class Closed(AssertionError):
    """The connection closed while a helper was waiting for a frame."""

    def __init__(self, code: int | None, reason: str) -> None:
        super().__init__(f"connection closed with code {code} ({reason!r})")
        self.code = code
        self.reason = reason


@dataclass(frozen=True)
class Binary:
    """A binary frame from the server (the contract never sends one)."""

    data: bytes


_CLOSED = object()


class WsClient:
    def __init__(self, ws: ClientConnection, name: str = "") -> None:
        self.ws = ws
        self.name = name
        self.frames: asyncio.Queue[Any] = asyncio.Queue()
        # Every frame received, in order (never consumed): for per-connection checks.
        self.log: list[Any] = []
        self.ids: defaultdict[str, list[str]] = defaultdict(list)
        self.messages: defaultdict[str, list[Frame]] = defaultdict(list)
        self.skipped: list[Any] = []
        self.welcome: Frame | None = None
        self.close_code: int | None = None
        self.close_reason = ""
        self.closed = asyncio.Event()
        self._changed = asyncio.Event()
        self._reader: asyncio.Task[None] | None = None
        self._published: dict[str, Frame] = {}

    # -- opening and closing ----------------------------------------------

    @classmethod
    async def open(
        cls,
        url: str,
        *,
        name: str = "",
        read: bool = True,
        welcome: bool = True,
        rcvbuf: int | None = None,
        max_queue: int | tuple[int | None, int | None] | None = 64,
        timeout: float = 10.0,
        **kwargs: Any,
    ) -> WsClient:
        """Connect to `url`. With `welcome`, wait for the `welcome` frame first.

        `rcvbuf` shrinks the kernel receive buffer of the socket before it
        connects (for slow-consumer tests).
        """
        options: dict[str, Any] = {
            "open_timeout": scaled(timeout),
            "close_timeout": scaled(3),
            "ping_interval": None,
            "max_queue": max_queue,
            "max_size": 4 * 1024 * 1024,
            "compression": None,
        }
        if rcvbuf is not None:
            options["sock"] = await _small_socket(url, rcvbuf)
        options.update(kwargs)
        ws = await connect(url, **options)
        client = cls(ws, name)
        if read or welcome:
            client.resume()
        if welcome:
            frame = await client.expect("welcome", timeout=timeout, skip=())
            client.welcome = frame
        if not read:
            await client.pause()
        return client

    async def close(self, code: int = 1000) -> None:
        """Close cleanly and wait until the reader has recorded every frame."""
        with contextlib.suppress(Exception):
            await self.ws.close(code)
        await self._finish_reader()

    async def abort(self) -> None:
        """Drop the TCP connection without a closing handshake."""
        transport = self.ws.transport
        if transport is not None:
            transport.abort()
        await self._finish_reader()

    async def _finish_reader(self) -> None:
        if self._reader is None:
            return
        try:
            await asyncio.wait_for(asyncio.shield(self._reader), scaled(10))
        except TimeoutError:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader

    async def __aenter__(self) -> WsClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- the reader ---------------------------------------------------------

    def resume(self) -> None:
        """Start (again) reading frames from the socket."""
        if self._reader is None or self._reader.done():
            self._reader = asyncio.create_task(self._read_loop(), name=f"ws-reader-{self.name}")

    async def pause(self) -> None:
        """Stop reading from the socket. Cancelling `recv()` loses no data."""
        if self._reader is not None and not self._reader.done():
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        self._reader = None

    async def _read_loop(self) -> None:
        while True:
            try:
                raw = await self.ws.recv()
            except ConnectionClosed as exc:
                close = exc.rcvd
                self.close_code = close.code if close is not None else ABNORMAL_CLOSE
                self.close_reason = close.reason if close is not None else ""
                self.closed.set()
                self.frames.put_nowait(_CLOSED)
                self._changed.set()
                return
            frame: Any
            if isinstance(raw, bytes):
                frame = Binary(raw)
            else:
                try:
                    frame = json.loads(raw)
                except ValueError:
                    frame = {"type": "<invalid json>", "raw": raw}
            self.log.append(frame)
            if isinstance(frame, dict) and frame.get("type") == "message":
                room = frame.get("room")
                self.ids[room].append(frame.get("id"))
                self.messages[room].append(frame)
            self.frames.put_nowait(frame)
            self._changed.set()

    # -- sending ------------------------------------------------------------

    async def send(self, frame: Frame) -> None:
        await self.ws.send(json.dumps(frame))

    async def send_text(self, text: str) -> None:
        await self.ws.send(text)

    async def send_bytes(self, data: bytes) -> None:
        await self.ws.send(data)

    # -- receiving ----------------------------------------------------------

    async def recv_frame(self, timeout: float = DEFAULT_TIMEOUT) -> Any:
        """The next queued frame. Raises `Closed` once the connection is closed."""
        return await self._recv_by(time.monotonic() + scaled(timeout))

    async def _recv_by(self, deadline: float) -> Any:
        remaining = max(deadline - time.monotonic(), 0.0)
        try:
            frame = await asyncio.wait_for(self.frames.get(), remaining)
        except TimeoutError:
            raise AssertionError(f"{self.name}: no frame before the deadline") from None
        if frame is _CLOSED:
            self.frames.put_nowait(_CLOSED)  # later calls see it too
            raise Closed(self.close_code, self.close_reason)
        return frame

    async def expect(
        self,
        type_: str,
        timeout: float = DEFAULT_TIMEOUT,
        *,
        skip: Iterable[str] = ("message",),
        match: Callable[[Frame], bool] | None = None,
    ) -> Frame:
        """Wait for a frame of `type_` (satisfying `match`).

        Frames whose type is in `skip` are set aside in `self.skipped`; any
        other frame fails the test (an unexpected `error` raises ServerError).
        """
        skip = set(skip)
        deadline = time.monotonic() + scaled(timeout)
        while True:
            frame = await self._recv_by(deadline)
            kind = frame.get("type") if isinstance(frame, dict) else None
            if kind == type_ and (match is None or match(frame)):
                return frame
            if kind in skip:
                self.skipped.append(frame)
                continue
            if kind == "error":
                raise ServerError(frame)
            raise AssertionError(f"{self.name}: expected a {type_!r} frame, got {frame!r}")

    async def request(self, frame: Frame, reply: str, timeout: float = DEFAULT_TIMEOUT, **kwargs: Any) -> Frame:
        await self.send(frame)
        return await self.expect(reply, timeout, **kwargs)

    async def ping(self, timeout: float = DEFAULT_TIMEOUT) -> Frame:
        return await self.request({"type": "ping"}, "pong", timeout)

    async def join(
        self, room: str, since: str | None = MISSING, timeout: float = DEFAULT_TIMEOUT,
        epoch: str | None = MISSING,
    ) -> tuple[list[Frame], Frame]:
        """Join `room`; return the replayed `message` frames and the `joined` frame."""
        frame: Frame = {"type": "join", "room": room}
        if since is not MISSING:
            frame["since"] = since
        if epoch is not MISSING:
            frame["epoch"] = epoch
        await self.send(frame)
        replay: list[Frame] = []
        deadline = time.monotonic() + scaled(timeout)
        while True:
            got = await self._recv_by(deadline)
            kind = got.get("type") if isinstance(got, dict) else None
            if kind == "message" and got.get("room") == room:
                replay.append(got)
            elif kind == "joined" and got.get("room") == room:
                return replay, got
            elif kind == "error" and got.get("ref") in (room, None):
                raise ServerError(got)
            else:
                self.skipped.append(got)

    async def leave(self, room: str, timeout: float = DEFAULT_TIMEOUT) -> Frame:
        return await self.request(
            {"type": "leave", "room": room}, "left", timeout, match=lambda f: f.get("room") == room
        )

    async def ack(self, room: str, id_: str) -> None:
        await self.send({"type": "ack", "room": room, "id": id_})

    async def publish(
        self, room: str, body: Any, client_id: str | None = None, timeout: float = DEFAULT_TIMEOUT
    ) -> Frame:
        """Publish and wait for the matching `published` frame."""
        frame: Frame = {"type": "publish", "room": room, "body": body}
        if client_id is not None:
            frame["client_id"] = client_id
        await self.send(frame)
        return await self._await_published(room, client_id, timeout)

    async def direct(self, to: str, body: Any, client_id: str | None = None, timeout: float = DEFAULT_TIMEOUT) -> Frame:
        frame: Frame = {"type": "direct", "to": to, "body": body}
        if client_id is not None:
            frame["client_id"] = client_id
        await self.send(frame)
        return await self._await_published(f"@{to}", client_id, timeout)

    async def broadcast(self, body: Any, client_id: str | None = None, timeout: float = DEFAULT_TIMEOUT) -> Frame:
        frame: Frame = {"type": "broadcast", "body": body}
        if client_id is not None:
            frame["client_id"] = client_id
        await self.send(frame)
        return await self._await_published("@all", client_id, timeout)

    async def _await_published(self, room: str, client_id: str | None, timeout: float) -> Frame:
        if client_id is not None and client_id in self._published:
            return self._published.pop(client_id)
        deadline = time.monotonic() + scaled(timeout)
        while True:
            got = await self._recv_by(deadline)
            kind = got.get("type") if isinstance(got, dict) else None
            if kind == "published":
                if client_id is None or got.get("client_id") == client_id:
                    return got
                self._published[got.get("client_id")] = got
            elif kind == "error" and got.get("ref") in (client_id, room, None):
                raise ServerError(got)
            else:
                self.skipped.append(got)

    async def publish_many(
        self,
        room: str,
        bodies: Sequence[Any],
        client_ids: Sequence[str] | None = None,
        *,
        window: int = 32,
        timeout: float = 30.0,
        on_published: Callable[[Frame], None] | None = None,
    ) -> list[Frame]:
        """Publish `bodies` in order with at most `window` unconfirmed at a time.

        Returns the `published` frames in the order of `bodies`.
        """
        if client_ids is None:
            client_ids = [new_client_id() for _ in bodies]
        assert len(client_ids) == len(bodies)
        results: dict[str, Frame] = {}
        deadline = time.monotonic() + scaled(timeout)
        sent = 0
        while len(results) < len(bodies):
            while sent < len(bodies) and sent - len(results) < window:
                await self.send(
                    {"type": "publish", "room": room, "body": bodies[sent], "client_id": client_ids[sent]}
                )
                sent += 1
            got = await self._recv_by(deadline)
            kind = got.get("type") if isinstance(got, dict) else None
            if kind == "published" and got.get("client_id") in client_ids:
                results[got["client_id"]] = got
                if on_published is not None:
                    on_published(got)
            elif kind == "error":
                raise ServerError(got)
            # message frames for joined rooms are recorded by the reader anyway
        return [results[c] for c in client_ids]

    async def wait_for(
        self,
        predicate: Callable[[], Any],
        timeout: float = DEFAULT_TIMEOUT,
        message: str | Callable[[], str] = "condition not met",
    ) -> Any:
        """Wait, woken by every received frame, until `predicate()` is truthy."""
        deadline = time.monotonic() + scaled(timeout)
        while True:
            value = predicate()
            if value:
                return value
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                text = message() if callable(message) else message
                raise AssertionError(f"{self.name}: timed out after {scaled(timeout):.1f}s: {text}")
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), min(remaining, 0.1))

    async def wait_for_id(self, room: str, id_: str, timeout: float = DEFAULT_TIMEOUT) -> None:
        await self.wait_for(
            lambda: id_ in self.ids[room],
            timeout,
            lambda: f"id {id_} not received in {room}; last ids {self.ids[room][-5:]} close={self.close_code}",
        )

    async def wait_for_count(self, room: str, count: int, timeout: float = DEFAULT_TIMEOUT) -> None:
        await self.wait_for(
            lambda: len(self.ids[room]) >= count,
            timeout,
            lambda: f"{len(self.ids[room])}/{count} messages in {room}; close={self.close_code}",
        )

    async def wait_closed(self, timeout: float = DEFAULT_TIMEOUT) -> int | None:
        try:
            await asyncio.wait_for(self.closed.wait(), scaled(timeout))
        except TimeoutError:
            raise AssertionError(f"{self.name}: connection still open after {scaled(timeout):.1f}s") from None
        return self.close_code


async def open_client(instance: Any, user: str | None = None, token: str | None = None, **kwargs: Any) -> WsClient:
    """Connect to `instance` as `user` (none mode) or with `token` (jwt mode)."""
    kwargs.setdefault("name", f"{user or 'token'}@{instance.name}")
    return await WsClient.open(instance.ws_url(user=user, token=token), **kwargs)


async def _small_socket(url: str, rcvbuf: int) -> socket.socket:
    parts = urlsplit(url)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, (parts.hostname, parts.port))
    return sock


@dataclass
class Refusal:
    """How the server refused a connection: `http` status or WebSocket `close` code."""

    kind: str  # "http" | "close" | "open"
    status: int | None = None
    frame: Any = None

    @property
    def refused(self) -> bool:
        if self.kind == "http":
            return self.status in (401, 403)
        if self.kind == "close":
            return self.status in (4401, 4403)
        return False


async def try_connect(url: str, timeout: float = DEFAULT_TIMEOUT, **kwargs: Any) -> Refusal:
    """Connect and report how the server answered, without assuming success.

    A refused connection is either an HTTP 401/403 on the handshake or an
    accepted socket that is closed at once (before `welcome`) with 4401/4403.
    """
    try:
        client = await WsClient.open(url, welcome=False, timeout=timeout, **kwargs)
    except InvalidStatus as exc:
        return Refusal("http", exc.response.status_code)
    try:
        frame = await client.recv_frame(timeout)
    except Closed as exc:
        return Refusal("close", exc.code)
    finally:
        await client.close()
    return Refusal("open", None, frame)
