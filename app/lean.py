"""``/ws`` on streamgate's own WebSocket protocol class (``python -m app``).

uvicorn hands every WebSocket upgrade to the class named by ``ws=``, with
the transport. This one performs the upgrade of ``/ws`` itself and hands
any other upgrade to uvicorn's own sans-I/O class, which runs the ASGI app
for it (plain HTTP never gets here). Why, and what it saves per socket and
per frame: docs/design.md, "`/ws` on a protocol class of its own". The
framing (masking, control frames, fragments, size limit, close handshake)
is websockets' sans-I/O :class:`~websockets.server.ServerProtocol`; the
connection logic is :class:`app.ws.Connection`, as on the ASGI path, and
this class is its :class:`app.socket.Socket` and
:class:`app.socket.FrameWriter`. It honours uvicorn's ``ws_max_size``,
``ws_ping_interval`` and ``ws_ping_timeout``, and never offers
permessage-deflate.
"""

from __future__ import annotations

import asyncio
import logging
import random
import struct
from collections import deque
from typing import Any
from urllib.parse import parse_qsl, unquote

from uvicorn.config import Config
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from uvicorn.server import ServerState
from websockets.exceptions import InvalidState
from websockets.frames import Opcode
from websockets.http11 import Request
from websockets.protocol import State
from websockets.server import ServerProtocol

from .admission import SERVICE_KEY, Refusal, admit, offered, subprotocol
from .outbox import RAW_HIGH_WATER
from .protocol import CLOSE_RESTARTING, wire_text_frame
from .ws import Connection

log = logging.getLogger("streamgate.lean")
# The framer logs every open and close at INFO: not per socket here.
_FRAMER_LOG = logging.getLogger("streamgate.lean.framer")
_FRAMER_LOG.setLevel(logging.WARNING)

_HANDSHAKES = logging.getLogger("uvicorn.error")

WS_PATH = "/ws"
# Messages read ahead of the connection before the socket stops reading.
INBOX_BYTES = 64 * 1024
CLOSE_TIMEOUT_S = 10.0  # for the peer's answer to our close frame
CLOSE_WAIT_S = 2.0  # for room in a full buffer to send the close frame at all

_TEXT, _BINARY, _CONT = Opcode.TEXT, Opcode.BINARY, Opcode.CONT
_PONG, _CLOSE = Opcode.PONG, Opcode.CLOSE


# The sockets written to during this loop iteration, flushed by one callback
# at its end: what a socket was given in one iteration leaves in one
# ``transport.write``, so a notification batch that reaches a socket k times
# costs one syscall instead of k.
_dirty: list[LeanWebSocket] = []


def _flush_all() -> None:
    global _dirty
    dirty, _dirty = _dirty, []
    for sock in dirty:
        out = sock._out
        if out is None:
            continue
        sock._out = None
        sock._out_bytes = 0
        if not sock._shut:
            sock.transport.write(out[0] if len(out) == 1 else b"".join(out))


class LeanWebSocket(asyncio.Protocol):
    """One WebSocket connection, from the upgrade request to the close."""

    __slots__ = ("_config", "_state", "_app_state", "transport", "_framer", "_head", "_inbox",
                 "_inbox_bytes", "_waiter", "_frag", "_frag_text", "_out", "_out_bytes",
                 "_timer", "_ping", "_close_sent", "_gone", "_lost", "_shut", "_paused",
                 "_blocked", "_unblocked", "_conn")

    def __init__(self, config: Config, server_state: ServerState, app_state: dict[str, Any],
                 _loop: asyncio.AbstractEventLoop | None = None) -> None:
        self._config = config
        self._state = server_state
        self._app_state = app_state
        self.transport: asyncio.Transport = None  # type: ignore[assignment]
        self._framer = ServerProtocol(max_size=config.ws_max_size, logger=_FRAMER_LOG)
        self._head: bytes | None = b""  # the request's bytes until it is parsed
        self._inbox: deque[str | bytes] | None = None  # messages not yet read
        self._inbox_bytes = 0
        self._waiter: asyncio.Future[None] | None = None  # the reader, waiting
        self._frag: list[bytes] | None = None  # a fragmented message so far
        self._frag_text = False
        self._out: list[bytes | memoryview] | None = None  # written this iteration
        self._out_bytes = 0
        self._timer: asyncio.TimerHandle | None = None  # next ping, pong or close deadline
        self._ping: bytes | None = None  # the payload of the ping awaiting its pong
        self._close_sent = False
        self._gone = False  # no more messages for the reader
        self._lost = False
        self._shut = False  # close frame sent, or lost: nothing more is written
        self._paused = False  # reading paused: the inbox is full
        self._blocked = False  # the transport's buffer is above its high-water mark
        self._unblocked: asyncio.Future[None] | None = None
        self._conn: Connection | None = None  # while its task runs

    # -- asyncio.Protocol ----------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self._state.connections.add(self)  # type: ignore[arg-type]

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = self._shut = True
        self._out = None
        self._out_bytes = 0
        self._cancel_timer()
        self._state.connections.discard(self)  # type: ignore[arg-type]
        self._stop_reading()
        self._unblock()

    def pause_writing(self) -> None:
        self._blocked = True

    def resume_writing(self) -> None:
        self._blocked = False
        self._unblock()

    def data_received(self, data: bytes) -> None:
        if self._head is not None:
            try:
                self._handshake(data)
            except Exception:
                # A bug must cost this connection only, and say so.
                log.exception("WebSocket handshake failed")
                self._head = None
                self._close_sent = self._shut = True
                self.transport.abort()
            return
        framer = self._framer
        framer.receive_data(data)
        for event in framer.events_received():
            op = event.opcode  # type: ignore[union-attr]
            if op is _TEXT or op is _BINARY:
                if event.fin:  # type: ignore[union-attr]
                    self._message(event.data, op is _TEXT)  # type: ignore[union-attr]
                else:
                    self._frag = [event.data]  # type: ignore[union-attr, list-item]
                    self._frag_text = op is _TEXT
            elif op is _CONT:
                assert self._frag is not None  # the framer checks the sequence
                self._frag.append(event.data)  # type: ignore[union-attr, arg-type]
                if event.fin:  # type: ignore[union-attr]
                    data, self._frag = b"".join(self._frag), None
                    self._message(data, self._frag_text)
            elif op is _PONG:
                self._pong(event.data)  # type: ignore[union-attr]
            elif op is _CLOSE:
                self._peer_closed()
                return
            # A ping's pong is queued by the framer and sent below.
        if framer.parser_exc is not None:
            # A protocol error or a message over ws_max_size (1009): the
            # framer has queued its close frame.
            self._framer_closed()
            return
        self._send_framer_output()

    def eof_received(self) -> bool | None:
        return None  # the transport closes itself

    # -- the upgrade -----------------------------------------------------------

    def _handshake(self, data: bytes) -> None:
        assert self._head is not None
        self._head += data
        framer = self._framer
        framer.receive_data(data)
        events = framer.events_received()
        if not events:
            if framer.handshake_exc is not None:
                out = b"".join(framer.data_to_send()) or framer.reject(
                    400, "Failed to open a WebSocket connection: invalid request.\n").serialize()
                self._head = None
                self._close_sent = self._shut = True
                self.transport.write(out)
                self.transport.close()
            return
        request = events[0]
        assert isinstance(request, Request)
        raw_path, _, query = request.path.partition("?")
        svc = self._app_state.get(SERVICE_KEY)
        if svc is None or unquote(raw_path) != WS_PATH:
            self._hand_over()
            return
        self._head = None
        offers = offered(request.headers.get_all("Sec-WebSocket-Protocol"))
        response = framer.accept(request)
        if response.status_code != 101:
            framer.send_response(response)
            self._close_sent = self._shut = True
            self.transport.write(b"".join(framer.data_to_send()))
            self.transport.close()
            return
        who = admit(svc, offers, request.headers.get("Origin"),
                    dict(parse_qsl(query, keep_blank_values=True)))
        if _HANDSHAKES.isEnabledFor(logging.INFO):  # as uvicorn logs it (tokens redacted: app/logs.py)
            peer = self.transport.get_extra_info("peername")
            _HANDSHAKES.info('%s - "WebSocket %s" [accepted]',
                             "%s:%d" % peer[:2] if peer else "", request.path.replace('"', "%22"))
        chosen = subprotocol(offers)
        if chosen is not None:
            response.headers["Sec-WebSocket-Protocol"] = chosen
        framer.send_response(response)
        self._send_framer_output()
        # A framer of its own for the open connection: the handshake's keeps
        # the parsed request (headers and all, ~2 KiB) in its parser for as
        # long as it lives. uvicorn hands over the request alone, so nothing
        # of the stream is left in the first one.
        self._framer = ServerProtocol(state=State.OPEN, max_size=self._config.ws_max_size,
                                      logger=_FRAMER_LOG)
        if isinstance(who, Refusal):
            self._send_close(who.code, who.reason)
            return
        self._keepalive()
        conn = self._conn = Connection(svc, self, who)
        conn.count_in()
        task = asyncio.get_running_loop().create_task(conn.run())
        self._state.tasks.add(task)
        task.add_done_callback(self._served)

    def _hand_over(self) -> None:
        """Not ours: uvicorn's own class serves it, through the ASGI app."""
        head, self._head = self._head, None
        other = WebSocketsSansIOProtocol(config=self._config, server_state=self._state,
                                         app_state=self._app_state)
        self._state.connections.discard(self)  # type: ignore[arg-type]
        other.connection_made(self.transport)
        self.transport.set_protocol(other)
        other.data_received(head or b"")

    def _served(self, task: asyncio.Task[None]) -> None:
        self._state.tasks.discard(task)
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.abandon()
        if not task.cancelled() and task.exception() is not None:
            log.error("connection failed", exc_info=task.exception())
        if not self._lost and not self._close_sent:
            self.flush()
            self.transport.close()

    # -- app.socket.Socket -----------------------------------------------------

    @property
    def writer(self) -> LeanWebSocket:
        return self

    async def receive(self) -> str | bytes | None:
        while True:
            inbox = self._inbox
            if inbox:
                msg = inbox.popleft()
                self._inbox_bytes -= len(msg)
                if not inbox:
                    self._inbox = None  # an idle socket keeps no deque
                    if self._paused and not self._gone:
                        self._paused = False
                        self.transport.resume_reading()
                return msg
            if self._gone:
                return None
            waiter = self._waiter = asyncio.get_running_loop().create_future()
            try:
                await waiter
            finally:
                self._waiter = None

    async def send_text(self, text: str) -> None:
        """A frame the outbox could not write directly: waits while the
        transport's buffer is above its high-water mark."""
        if self.is_closing():
            raise ConnectionResetError("the socket is closing")
        self.write(wire_text_frame(text))
        self.flush()
        while self._blocked and not self._lost:
            await self._wait_unblocked()

    async def close(self, code: int, reason: str) -> None:
        if self._lost:
            return
        if self._close_sent or self.transport.is_closing():
            # The close frame went out already (the peer answered no ping)
            # and the buffer still waits: what the peer has not read by now
            # it is not going to read. Free it at once.
            self.transport.abort()
            return
        self.flush()
        if self._blocked:
            try:
                async with asyncio.timeout(CLOSE_WAIT_S):
                    while self._blocked and not self._lost:
                        await self._wait_unblocked()
            except TimeoutError:
                # Not even the close frame fits: the peer is not reading.
                self.transport.abort()
                return
            if self._lost:
                return
        self._send_close(code, reason)

    # -- app.socket.FrameWriter --------------------------------------------

    def offer(self, data: bytes) -> bool:
        # The transport says when its buffer passes its high-water mark
        # (pause_writing): no query per frame.
        if self._shut or self._blocked or self._out_bytes >= RAW_HIGH_WATER:
            return False
        # write(), inlined: this runs once per delivery.
        out = self._out
        if out is None:
            self._out = [data]
            if not _dirty:
                asyncio.get_running_loop().call_soon(_flush_all)
            _dirty.append(self)
        else:
            out.append(data)
        self._out_bytes += len(data)
        return True

    def write(self, data: bytes | memoryview) -> None:
        if self._lost:
            return
        out = self._out
        if out is None:
            self._out = [data]
            if not _dirty:
                asyncio.get_running_loop().call_soon(_flush_all)
            _dirty.append(self)
        else:
            out.append(data)
        self._out_bytes += len(data)

    def get_write_buffer_size(self) -> int:
        return self._out_bytes + self.transport.get_write_buffer_size()

    def is_closing(self) -> bool:
        return self._shut or self.transport.is_closing()

    def flush(self) -> None:
        """Hand what was written since the last flush to the transport."""
        out = self._out
        if out is None:
            return
        self._out = None
        self._out_bytes = 0
        if not self._lost and not self.transport.is_closing():
            self.transport.write(out[0] if len(out) == 1 else b"".join(out))

    # -- uvicorn's shutdown ------------------------------------------------------

    def shutdown(self) -> None:
        """The server is exiting (the drain closes sockets before this; this
        is for those it did not reach)."""
        self._cancel_timer()
        if self._lost:
            return
        if self._head is None and not self._close_sent and self._framer.state is State.OPEN:
            self._send_close(CLOSE_RESTARTING, "instance restarting")
        self._stop_reading()
        self.flush()
        if self.transport.get_write_buffer_size() > RAW_HIGH_WATER:
            self.transport.abort()
        else:
            self.transport.close()

    # -- internals -------------------------------------------------------------

    def _message(self, data: bytes, text: bool) -> None:
        if self._gone:
            return  # past our close frame: discarded until the peer's answer
        msg: str | bytes
        if text:
            try:
                msg = data.decode()
            except UnicodeDecodeError:
                self._framer.fail(1007, "invalid UTF-8")
                self._framer_closed()
                return
        else:
            msg = bytes(data)
        inbox = self._inbox
        if inbox is None:
            inbox = self._inbox = deque()
        inbox.append(msg)
        self._inbox_bytes += len(msg)
        if self._inbox_bytes > INBOX_BYTES and not self._paused:
            self._paused = True
            self.transport.pause_reading()
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _stop_reading(self) -> None:
        """No more messages: the reader gets None once it has read the rest."""
        self._gone = True
        self._wake()

    def _send_framer_output(self) -> None:
        for chunk in self._framer.data_to_send():
            if chunk:  # b"" is the framer asking for EOF: closing does that
                self.write(chunk)

    def _send_close(self, code: int, reason: str) -> None:
        try:
            self._framer.send_close(code, reason)
        except InvalidState:
            self.transport.abort()
            return
        self._send_framer_output()
        self.flush()
        self._close_sent = self._shut = True
        self._stop_reading()
        if self._paused:  # read on, for the peer's close frame
            self._paused = False
            self.transport.resume_reading()
        self._cancel_timer()
        self._timer = asyncio.get_running_loop().call_later(CLOSE_TIMEOUT_S, self.transport.close)

    def _peer_closed(self) -> None:
        if not self._close_sent:
            self._send_framer_output()  # the framer's answer to the close frame
            self._close_sent = self._shut = True
            self._stop_reading()
        self._cancel_timer()
        self.flush()
        self.transport.close()

    def _framer_closed(self) -> None:
        self._send_framer_output()
        self._close_sent = self._shut = True
        self._stop_reading()
        self._cancel_timer()
        self.flush()
        self.transport.close()

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _unblock(self) -> None:
        fut, self._unblocked = self._unblocked, None
        if fut is not None and not fut.done():
            fut.set_result(None)

    async def _wait_unblocked(self) -> None:
        if self._unblocked is None or self._unblocked.done():
            self._unblocked = asyncio.get_running_loop().create_future()
        await self._unblocked

    # -- keepalive ---------------------------------------------------------------

    def _keepalive(self) -> None:
        interval = self._config.ws_ping_interval
        if interval is not None and interval > 0:
            self._timer = asyncio.get_running_loop().call_later(interval, self._send_ping)

    def _send_ping(self) -> None:
        self._timer = None
        if self.is_closing():
            return
        self._ping = struct.pack("!I", random.getrandbits(32))
        self._framer.send_ping(self._ping)
        self._send_framer_output()
        timeout = self._config.ws_ping_timeout
        if timeout is not None and timeout > 0:
            self._timer = asyncio.get_running_loop().call_later(timeout, self._ping_timeout)
        else:
            self._keepalive()

    def _pong(self, data: bytes) -> None:
        if self._ping is None or bytes(data) != self._ping:
            return  # unsolicited, or an old one
        self._ping = None
        if self._timer is not None:  # the deadline of this ping
            self._cancel_timer()
            self._keepalive()

    def _ping_timeout(self) -> None:
        self._timer = None
        self._ping = None
        if self.is_closing():
            return
        self._framer.fail(1011, "keepalive ping timeout")
        self._framer_closed()
