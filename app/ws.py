"""The WebSocket endpoint: admit, then read frames and answer them.

Each connection runs three tasks: the reader below, the outbox writer and
the session's catch-up worker. Whichever ends first ends the connection, and
the close code says why: 4408 too slow, 4401 token expired, 1012 the
instance is draining, 1011 a bug.

Publishes are pipelined: the reader starts a publish and reads the next
frame while it is stored (so the publishes of one socket can share a Redis
pipeline, see streams/batch.py), up to ``MAX_IN_FLIGHT`` at a time (one
with replica durability, whose appends do not keep call order). Their
answers (``published`` or an error about that publish) go out in the order
the frames came; any other frame waits until every publish before it is
answered, so a join, leave or ack is handled as if the publishes before it
were done one at a time.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque

from fastapi import WebSocket
from starlette.websockets import WebSocketDisconnect, WebSocketState

from streams.bounded import cancel_and_wait
from streams.log import Appended, BeyondEnd
from streams.retry import StorageUnavailable

from . import protocol as p
from .rawsocket import abort, transport
from .auth import CLOCK_LEEWAY_S, Principal, Unauthorized
from .limits import TokenBucket
from .outbox import Outbox, TooSlow
from .service import Forbidden, Service
from .session import FellBehind

log = logging.getLogger("streamgate.ws")

SUBPROTOCOL = "streamgate.v1"
TOKEN_SUBPROTOCOL_PREFIX = "bearer."
# How long a closing connection waits for its own tasks to end.
TASKS_STOP_S = 1.0
# Publishes of one socket being stored at once; the next one waits.
MAX_IN_FLIGHT = 64


class _RateLimited(Exception):
    """A publish refused by the socket's bucket while earlier ones are in
    flight: answered in its turn."""


class _Refused(Exception):
    """A frame refused before it was handled (too large, binary, invalid)
    while publishes are in flight: its error is answered in its turn."""

    def __init__(self, code: str, reason: str, ref: str | None) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason
        self.ref = ref


class _Closed(Exception):
    def __init__(self, code: int, reason: str = "") -> None:
        self.code = code
        self.reason = reason


def _offered(ws: WebSocket) -> list[str]:
    header = ws.headers.get("sec-websocket-protocol", "")
    return [s.strip() for s in header.split(",") if s.strip()]


def _token(ws: WebSocket, offered: list[str]) -> str | None:
    """The token from ``Sec-WebSocket-Protocol: streamgate.v1, bearer.<jwt>``
    (kept out of URLs and proxy logs), else from ``?token=``."""
    for proto in offered:
        if proto.startswith(TOKEN_SUBPROTOCOL_PREFIX):
            return proto[len(TOKEN_SUBPROTOCOL_PREFIX):]
    return ws.query_params.get("token")


def _origin_allowed(svc: Service, origin: str | None) -> bool:
    """Browsers always send Origin; clients without one are servers or CLIs
    and are judged by their token alone."""
    if origin is None or svc.settings.any_origin:
        return True
    return origin in svc.settings.allowed_origins


async def _refuse(ws: WebSocket, svc: Service, code: int, reason: str, metric: str,
                  subprotocol: str | None) -> None:
    svc.metrics.refuse(metric)
    await ws.accept(subprotocol=subprotocol)
    await ws.close(code, reason)


async def websocket_endpoint(ws: WebSocket) -> None:
    svc: Service = ws.app.state.service
    offered = _offered(ws)
    subprotocol = SUBPROTOCOL if SUBPROTOCOL in offered else None
    if not _origin_allowed(svc, ws.headers.get("origin")):
        await _refuse(ws, svc, p.CLOSE_ORIGIN, "origin not allowed", "origin", subprotocol)
        return
    try:
        who = svc.auth.authenticate(_token(ws, offered), ws.query_params.get("user"))
    except Unauthorized as exc:
        await _refuse(ws, svc, p.CLOSE_UNAUTHORIZED, str(exc), "unauthorized", subprotocol)
        return
    if svc.draining:
        await _refuse(ws, svc, p.CLOSE_RESTARTING, "instance restarting", "draining", subprotocol)
        return
    if svc.connections >= svc.settings.max_connections:
        await _refuse(ws, svc, p.CLOSE_FULL, "instance full", "full", subprotocol)
        return
    await ws.accept(subprotocol=subprotocol)
    await Connection(svc, ws, who).run()


class Connection:
    def __init__(self, svc: Service, ws: WebSocket, who: Principal) -> None:
        self.svc = svc
        self.ws = ws
        self.who = who
        s = svc.settings
        self.outbox = Outbox(ws.send_text, s.outbound_queue, s.slow_consumer_timeout_s,
                             max_bytes=s.outbound_bytes)
        self.outbox.attach(transport(ws.scope))
        self.session = svc.open_session(who, self.outbox)
        self.bucket = TokenBucket(s.publish_rate, s.publish_burst)
        self.control = TokenBucket(s.control_rate, s.control_burst)
        self._closing: _Closed | None = None
        self._settle_by = 0.0  # draining: when publishes in flight are abandoned
        self._busy = False
        # Publishes started and not yet answered, in frame order.
        # Publishes (and frames refused behind them) in the order received,
        # answered in that order as they complete.
        self._in_flight: deque[tuple[p.Publish | None, asyncio.Future[Appended]]] = deque()
        self._ended = False
        # Only a log that stores appends in call order lets them overlap.
        self._window = MAX_IN_FLIGHT if svc.publishes_keep_order else 1
        self._reader: asyncio.Task[None] | None = None
        self._writer: asyncio.Task[None] | None = None
        self._too_slow = False
        self._finished = asyncio.Event()

    async def run(self) -> None:
        """Serve the socket until one of its tasks ends, then close it.

        Counted in before anything that can raise or be cancelled and
        counted out in ``finally``, so the connection counts always return.
        The close comes before any clean-up that talks to Redis: a 4401 or
        4408 is never held up by storage, and a close that cannot be sent
        aborts the socket (see ``_close``).
        """
        svc = self.svc
        started = time.monotonic()
        first = svc.connected(self.who.user)
        svc.conns.add(self)
        tasks: list[asyncio.Task[None]] = []
        code, reason = 1000, ""
        try:
            if first:
                await svc.came_online(self.who.user)
            self.reply(p.welcome_frame(self.who.user, svc.instance), "welcome")
            self._reader = asyncio.create_task(self._read(), name="ws-read")
            self._writer = asyncio.create_task(self.outbox.run(), name="ws-write")
            tasks += [
                self._reader,
                self._writer,
                asyncio.create_task(self.session.run_catch_up(), name="ws-catch-up"),
            ]
            if self.who.expires_at is not None:
                tasks.append(asyncio.create_task(self._expire(self.who.expires_at), name="ws-expiry"))
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            code, reason = self._outcome(next(iter(done)))
            if self._closing is not None:
                await self._settle(self._settle_by - time.monotonic())
                # Draining: let the answers already queued reach the client.
                await self.outbox.flushed(timeout_s=1.0)
        finally:
            self._ended = True
            for _frame, pending in self._in_flight:
                if pending.done() and not pending.cancelled():
                    pending.exception()  # refused or failed: nobody is left to answer
                pending.cancel()
            try:
                # A task stuck in a Redis call (a publish, a join) that does
                # not honour its cancellation is left behind, not waited for.
                await cancel_and_wait(tasks, TASKS_STOP_S, "connection tasks")
                await self._close(code, reason)
            finally:
                svc.conns.discard(self)
                svc.disconnected(self.who.user, self.session.detach_all())
                svc.metrics.connection_duration.observe(time.monotonic() - started)
                self._finished.set()

    def _outcome(self, task: asyncio.Task[None]) -> tuple[int, str]:
        if self._closing is not None:
            return self._closing.code, self._closing.reason
        exc = None if task.cancelled() else task.exception()
        if self._too_slow or isinstance(exc, (TooSlow, FellBehind)):
            self.svc.metrics.slow_closes.inc()
            log.info("slow consumer closed", extra={"user": self.who.user, "event": "slow_close"})
            return p.CLOSE_TOO_SLOW, "too slow: reconnect and resume with since"
        if isinstance(exc, _Closed):
            return exc.code, exc.reason
        if task.cancelled():
            return 1000, ""
        if isinstance(exc, OSError):
            return 1000, ""  # the client went away while we were writing
        if exc is not None and not isinstance(exc, WebSocketDisconnect):
            log.error("connection failed", exc_info=exc, extra={"user": self.who.user})
            return 1011, "internal error"
        return 1000, ""

    def check_stalled(self, now: float) -> None:
        """Called by the instance's watchdog: end a socket whose write is stuck."""
        if self.outbox.stalled(now) and self._writer is not None and not self._too_slow:
            self._too_slow = True
            self._writer.cancel()

    async def drain(self, patience_s: float, code: int = p.CLOSE_RESTARTING,
                    reason: str = "instance restarting") -> None:
        """Finish the frame being handled and the publishes in flight (they
        complete and are answered), then close with ``code``. A publish still
        waiting for storage after ``patience_s`` is abandoned and answered
        ``unavailable``: retrying it with the same client_id is safe."""
        self._closing = _Closed(code, reason)
        self._settle_by = time.monotonic() + patience_s
        if self._reader is not None:
            if not self._busy:
                self._reader.cancel()
            else:
                done, _ = await asyncio.wait([self._reader], timeout=patience_s)
                if not done:
                    self._reader.cancel()
        await self._finished.wait()

    async def _expire(self, expires_at: float) -> None:
        # The same clock leeway as when the token was checked at connect.
        await asyncio.sleep(max(0.0, expires_at + CLOCK_LEEWAY_S - time.time()))
        raise _Closed(p.CLOSE_UNAUTHORIZED, "token expired")

    async def _close(self, code: int, reason: str) -> None:
        if self.ws.application_state == WebSocketState.DISCONNECTED:
            return
        if self.ws.client_state == WebSocketState.DISCONNECTED:
            return
        t = transport(self.ws.scope)
        if t is not None and t.is_closing():
            # The server already sent its close frame (the peer answered no
            # ping) and waits for its buffer to drain: what the peer has not
            # read by now it is not going to read. Free it at once.
            t.abort()
            return
        try:
            async with asyncio.timeout(2.0):
                await self.ws.close(code, reason)
        except Exception:
            # The close frame could not even be queued: the peer is not
            # reading. Drop the connection so its buffers are freed now.
            abort(self.ws.scope)

    def reply(self, frame: str, kind: str) -> None:
        if not self.outbox.push(frame):
            raise TooSlow("control frames not read")
        self.svc.metrics.sent(kind)

    def error(self, code: str, reason: str, ref: str | None) -> None:
        self.reply(p.error_frame(code, reason, ref), "error")

    async def _read(self) -> None:
        ws = self.ws
        limit = self.svc.settings.max_frame_bytes
        metrics = self.svc.metrics
        while self._closing is None:
            msg = await ws.receive()
            if msg["type"] == "websocket.disconnect":
                return
            text = msg.get("text")
            if text is not None:
                # A character is 1-4 bytes: count bytes only when it matters.
                size = len(text) if len(text) > limit or len(text) * 4 <= limit else len(text.encode())
            else:
                size = len(msg.get("bytes") or b"")
            if size > limit:
                metrics.received("too_large")
                self._refuse("too_large", f"frames are limited to {limit} bytes", None)
                continue
            if text is None:
                metrics.received("binary")
                self._refuse("bad_frame", "binary frames are not accepted; send JSON text", None)
                continue
            try:
                frame = p.parse_frame(text, self.svc.settings.max_body_bytes)
            except p.FrameError as exc:
                metrics.received("invalid")
                self._refuse(exc.code, exc.reason, exc.ref)
                continue
            metrics.received(type(frame).__name__.lower())
            self._busy = True
            try:
                await self._handle(frame)
            finally:
                self._busy = False

    async def _handle(self, frame: p.ClientFrame) -> None:
        if isinstance(frame, p.Publish):
            await self._publish(frame)
            return
        if self._in_flight:  # answered after the publishes before it
            await asyncio.wait([pending for _, pending in self._in_flight])
            self._answer_ready()
        if isinstance(frame, p.Ping):
            self.reply(p.PONG_FRAME, "pong")
        elif not self.control.take():
            # join, leave and ack each cost Redis work (a join: a replay and
            # maybe a subscription), so they draw on their own bucket.
            self.svc.metrics.rate_limited.inc()
            self.error("rate_limited", "too many join/leave/ack frames; slow down and retry",
                       frame.room)
        elif isinstance(frame, p.Join):
            await self._join(frame)
        elif isinstance(frame, p.Leave):
            await self._leave(frame)
        elif isinstance(frame, p.Ack):
            await self._ack(frame)

    async def _publish(self, frame: p.Publish) -> None:
        if not self.bucket.take():
            self.svc.metrics.rate_limited.inc()
            if not self._in_flight:
                self._answer(frame, None, _RateLimited())
                return
            pending: asyncio.Future[Appended] = asyncio.get_running_loop().create_future()
            pending.set_exception(_RateLimited())
        else:
            try:
                pending = self.svc.start_publish(self.who, frame.room, frame.body,
                                                 frame.client_id)
            except Forbidden as exc:
                if not self._in_flight:
                    self._answer(frame, None, exc)
                    return
                pending = asyncio.get_running_loop().create_future()
                pending.set_exception(exc)
        self._in_flight.append((frame, pending))
        pending.add_done_callback(self._answer_ready)
        if len(self._in_flight) >= self._window:
            await asyncio.wait([self._in_flight[0][1]])
            self._answer_ready()

    def _refuse(self, code: str, reason: str, ref: str | None) -> None:
        """Answer a refused frame now, or in its turn behind the publishes
        still in flight: every answer goes out in the order of the frames."""
        if not self._in_flight:
            self.error(code, reason, ref)
            return
        refused: asyncio.Future[Appended] = asyncio.get_running_loop().create_future()
        refused.set_exception(_Refused(code, reason, ref))
        self._in_flight.append((None, refused))

    def _answer_ready(self, _: object = None) -> None:
        """Answer the publishes at the head of the line that are done."""
        queue = self._in_flight
        while queue and queue[0][1].done() and not self._ended:
            frame, pending = queue.popleft()
            self._answer_done(frame, pending)

    def _answer_done(self, frame: p.Publish | None, pending: asyncio.Future[Appended]) -> None:
        if pending.cancelled() or not pending.done():  # abandoned by the drain
            exc: BaseException | None = asyncio.CancelledError()
        else:
            exc = pending.exception()
        if isinstance(exc, _Refused):
            try:
                self.error(exc.code, exc.reason, exc.ref)
            except TooSlow:
                self._ended = self._too_slow = True
                if self._writer is not None:
                    self._writer.cancel()
        elif frame is not None:
            self._answer(frame, pending.result() if exc is None else None, exc)

    def _answer(self, frame: p.Publish, res: Appended | None, exc: BaseException | None) -> None:
        ref = frame.client_id or frame.room
        try:
            if res is not None:
                self.reply(p.published_frame(frame.room, res.id, frame.client_id, res.duplicate),
                           "published")
            elif isinstance(exc, _RateLimited):
                self.error("rate_limited", "publishing too fast; slow down and retry", ref)
            elif isinstance(exc, Forbidden):
                self.error("forbidden", "not allowed to publish here", ref)
            elif isinstance(exc, StorageUnavailable):
                self.error("unavailable", "storage could not confirm; retry with the same client_id", ref)
            elif isinstance(exc, asyncio.CancelledError):  # abandoned by the drain
                self.error("unavailable", "instance restarting; retry with the same client_id", ref)
            else:
                log.error("publish failed", exc_info=exc, extra={"user": self.who.user})
                self.error("unavailable", "the message may or may not be stored; retry with "
                           "the same client_id", ref)
        except TooSlow:
            # Not even an answer fits: the socket ends as too slow (the
            # reader or a callback may be the one answering).
            self._ended = True
            self._too_slow = True
            if self._writer is not None:
                self._writer.cancel()

    async def _settle(self, patience_s: float) -> None:
        """Draining: publishes in flight get ``patience_s`` to be stored and
        answered; the rest are abandoned and answered ``unavailable``."""
        if self._in_flight and patience_s > 0:
            await asyncio.wait([pending for _, pending in self._in_flight], timeout=patience_s)
        self._answer_ready()
        while self._in_flight:
            frame, pending = self._in_flight.popleft()
            if not pending.done():
                pending.cancel()
            if not self._ended:
                self._answer_done(frame, pending)

    async def _join(self, frame: p.Join) -> None:
        svc, who = self.svc, self.who
        if not who.may_join(frame.room):
            self.error("forbidden", "not allowed in this room", frame.room)
            return
        if frame.room not in self.session.feeds and len(self.session.feeds) >= svc.settings.max_joins:
            self.error("forbidden", f"at most {svc.settings.max_joins} rooms per connection", frame.room)
            return
        try:
            point = await svc.join_point(who, frame.room, frame.since, frame.epoch)
            await self.session.join_from(frame.room, point.since, point.recovered, point.floor,
                                         epoch=point.epoch)
        except StorageUnavailable:
            self.error("unavailable", "storage unavailable; join again", frame.room)
            return
        await svc.entered(frame.room, who.user)

    async def _leave(self, frame: p.Leave) -> None:
        left = self.session.leave(frame.room)
        self.reply(p.left_frame(frame.room), "left")  # not held up by presence
        if left:
            await self.svc.went_out(frame.room, self.who.user)

    async def _ack(self, frame: p.Ack) -> None:
        try:
            await self.svc.ack(self.who, frame.room, frame.id)
        except Forbidden:
            self.error("forbidden", "not allowed in this room", frame.room)
        except BeyondEnd:
            self.error("bad_frame", "'id' is beyond the room's last message", frame.room)
        except StorageUnavailable:
            self.error("unavailable", "could not store the ack", frame.room)
