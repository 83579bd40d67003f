"""One admitted WebSocket: read its frames, answer them, close it.

The socket is an :class:`app.socket.Socket`, served either by streamgate's
own protocol class (:mod:`app.lean`) or by any ASGI server
(:mod:`app.asgi_socket`); who may connect is :mod:`app.admission`'s call.

An idle connection costs one task, its reader (on ASGI the server's task
that calls the endpoint). Everything else exists only while it has work,
and each has one owner:

- the outbox's writer (:class:`app.outbox.Outbox`), only while frames are
  queued; a frame written straight to the transport needs none;
- the session's catch-up worker (:class:`app.session.Session`), only while
  a feed is catching up;
- the token's expiry, a ``loop.call_at`` timer owned by the connection;
- the instance's watchdog (``Service._watch_writers``), one for all sockets,
  which asks each connection whether its write is stuck.

Whichever ends first ends the connection, and the close code says why:
each of them calls ``Connection._end(code, reason)``, which keeps the first
reason and cancels the reader; the reader's task then stops the writer and
the catch-up worker and closes with that code: 4408 too slow (a stuck
write, a full queue, entries trimmed before they were sent), 4401 token
expired, 1012 the instance is draining (``drain``: the frame being handled
and the publishes in flight finish first), 1011 a bug, 1000 when the client
went away.

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

from streams.bounded import cancel_and_wait
from streams.log import Appended, BeyondEnd
from streams.retry import StorageUnavailable

from . import protocol as p
from .auth import CLOCK_LEEWAY_S, Principal, Unauthorized
from .limits import TokenBucket
from .outbox import Outbox, Signal, TooSlow
from .service import Forbidden, Service
from .session import FellBehind
from .socket import Socket

log = logging.getLogger("streamgate.ws")

# How long a closing connection waits for its own tasks to end.
TASKS_STOP_S = 1.0
# Publishes of one socket being stored at once; the next one waits.
MAX_IN_FLIGHT = 64
TOO_SLOW_REASON = "too slow: reconnect and resume with since"


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


class Connection:
    """One served socket: reads its frames, answers them, and closes it with
    the code that says why it ended. Knows the socket only as a
    :class:`app.socket.Socket`, so it runs the same on every server."""

    __slots__ = ("svc", "sock", "who", "outbox", "session", "bucket", "control", "_closing",
                 "_settle_by", "_busy", "_in_flight", "_ended", "_window", "_task",
                 "_reading", "_stop_requested", "_why", "_expiry", "_frame_done", "_finished",
                 "_first", "_started")

    def __init__(self, svc: Service, sock: Socket, who: Principal) -> None:
        self.svc = svc
        self.sock = sock
        self.who = who
        s = svc.settings
        failed = self._failed  # what ends the writer or the catch-up ends the connection
        self.outbox = Outbox(sock.send_text, s.outbound_queue, s.slow_consumer_timeout_s,
                             max_bytes=s.outbound_bytes, on_error=failed)
        self.outbox.attach(sock.writer)
        self.session = svc.open_session(who, self.outbox, failed)
        self.bucket = TokenBucket(s.publish_rate, s.publish_burst)
        self.control = TokenBucket(s.control_rate, s.control_burst)
        self._closing: _Closed | None = None
        self._settle_by = 0.0  # draining: when publishes in flight are abandoned
        self._busy = False
        # Publishes (and frames refused behind them) in the order received,
        # answered in that order as they complete (made by the first).
        self._in_flight: deque[tuple[p.Publish | None, asyncio.Future[Appended]]] | None = None
        self._ended = False
        # Only a log that stores appends in call order lets them overlap.
        self._window = MAX_IN_FLIGHT if svc.publishes_keep_order else 1
        self._task: asyncio.Task[object] | None = None  # the reader: the server's task
        self._reading = False
        self._stop_requested = False
        self._why: tuple[int, str] | None = None  # the first reason to end
        self._expiry: asyncio.TimerHandle | None = None
        self._frame_done = Signal()
        self._finished = Signal()
        self._first: bool | None = None  # counted in: the user's first socket here?
        self._started = False

    def count_in(self) -> None:
        """Count the socket in, at once: a burst of handshakes handled in one
        loop iteration must see each other against MAX_CONNECTIONS. ``run``
        does it if nobody did; ``abandon`` undoes it if ``run`` never ran."""
        if self._first is None:
            self._first = self.svc.connected(self.who.user)
            self.svc.conns.add(self)

    def abandon(self) -> None:
        """Count out a socket whose ``run`` never started (its task was
        cancelled first, at shutdown)."""
        if self._first is not None and not self._started:
            self._started = True
            self.svc.conns.discard(self)
            self.svc.disconnected(self.who.user, [])

    async def run(self) -> None:
        """Serve the socket until something ends it, then close it.

        Counted in before anything that can raise or be cancelled and
        counted out in ``finally``, so the connection counts always return.
        The close comes before any clean-up that talks to Redis: a 4401 or
        4408 is never held up by storage, and a close that cannot be sent
        aborts the socket (see ``_close``).
        """
        svc = self.svc
        started = time.monotonic()
        self.count_in()
        first = self._first
        self._started = True
        self._task = asyncio.current_task()
        try:
            if first:
                await svc.came_online(self.who.user)
            self.reply(p.welcome_frame(self.who.user, svc.instance), "welcome")
            self._arm_expiry()
            await self._serve()
            if self._closing is not None:
                await self._settle(self._settle_by - time.monotonic())
                # Draining: let the answers already queued reach the client.
                await self.outbox.flushed(timeout_s=1.0)
        finally:
            self._ended = True
            if self._expiry is not None:
                self._expiry.cancel()
            for _frame, pending in self._in_flight or ():
                if pending.done() and not pending.cancelled():
                    pending.exception()  # refused or failed: nobody is left to answer
                pending.cancel()
            code, reason = self._outcome()
            try:
                # A task stuck in a Redis call (a catch-up read) that does
                # not honour its cancellation is left behind, not waited for.
                tasks = [t for t in (self.outbox.close(), self.session.close()) if t is not None]
                if tasks:
                    await cancel_and_wait(tasks, TASKS_STOP_S, "connection tasks")
                await self._close(code, reason)
            finally:
                svc.conns.discard(self)
                svc.disconnected(self.who.user, self.session.detach_all())
                svc.metrics.connection_duration.observe(time.monotonic() - started)
                self._finished.set()

    async def _serve(self) -> None:
        """Read until the client leaves or ``_end`` cancels the reading."""
        task = self._task
        assert task is not None
        self._reading = True
        try:
            await self._read()
        except asyncio.CancelledError:
            # Ours (asked for by _end or drain) ends the reading; one from
            # outside (the server shutting down) goes on up.
            if not self._stop_requested or task.uncancel() > 0:
                raise
        except Exception as exc:
            self._failed(exc)
        finally:
            self._reading = False
        if self._stop_requested and task.cancelling():
            task.uncancel()  # ours, swallowed on the way (e.g. by a Redis call)

    def _outcome(self) -> tuple[int, str]:
        if self._closing is not None:
            return self._closing.code, self._closing.reason
        code, reason = self._why or (1000, "")
        if code == p.CLOSE_TOO_SLOW:
            self.svc.metrics.slow_closes.inc()
            log.info("slow consumer closed", extra={"user": self.who.user, "event": "slow_close"})
        return code, reason

    def _end(self, code: int, reason: str = "") -> None:
        """End the connection with ``code``, unless something ended it first."""
        if self._why is None:
            self._why = (code, reason)
        self._stop_reading()

    def _stop_reading(self) -> None:
        task = self._task
        if (self._reading and not self._stop_requested and task is not None
                and task is not asyncio.current_task()):
            self._stop_requested = True
            task.cancel()

    def _failed(self, exc: BaseException) -> None:
        """What ended the reader, the writer or the catch-up worker."""
        if isinstance(exc, (TooSlow, FellBehind)):
            self._end(p.CLOSE_TOO_SLOW, TOO_SLOW_REASON)
        elif isinstance(exc, _Closed):
            self._end(exc.code, exc.reason)
        elif isinstance(exc, OSError):
            self._end(1000)  # the client went away while we were writing
        else:
            log.error("connection failed", exc_info=exc, extra={"user": self.who.user})
            self._end(1011, "internal error")

    def _arm_expiry(self) -> None:
        """(Re)start the timer that ends the connection when its token expires."""
        if self._expiry is not None:
            self._expiry.cancel()
            self._expiry = None
        if self.who.expires_at is not None:
            loop = asyncio.get_running_loop()
            # The same clock leeway as when the token was checked at connect.
            left = max(0.0, self.who.expires_at + CLOCK_LEEWAY_S - time.time())
            self._expiry = loop.call_at(loop.time() + left, self._expired)

    def _refresh(self, frame: p.Refresh) -> None:
        """Swap the connection's token for a newer one of the same user.

        The connection, its rooms and their positions stay as they are; only
        the expiry timer moves and the new token's rights apply to the frames
        that follow. A refused token (invalid, another user, or not allowing
        a room that is joined) is answered with an error and changes nothing:
        the connection keeps running on the old token until it expires.
        """
        if self.svc.auth.mode == "none":
            self.reply(p.refreshed_frame(None), "refreshed")  # nothing expires
            return
        try:
            who = self.svc.auth.authenticate(frame.token, None)
        except Unauthorized as exc:
            self.error("unauthorized", str(exc), None)
            return
        if who.user != self.who.user:
            self.error("unauthorized", "the token is for another user", None)
            return
        for room in self.session.feeds:
            if not who.may_join(room):
                self.error("forbidden", "the new token does not allow this joined room; "
                           "leave it first", room)
                return
        self.who = who
        self.session.principal = who
        self._arm_expiry()
        self.reply(p.refreshed_frame(who.expires_at), "refreshed")

    def _expired(self) -> None:
        self._expiry = None
        self._end(p.CLOSE_UNAUTHORIZED, "token expired")

    def check_stalled(self, now: float) -> None:
        """Called by the instance's watchdog: end a socket whose write is stuck."""
        if self.outbox.stalled(now):
            self._end(p.CLOSE_TOO_SLOW, TOO_SLOW_REASON)

    async def drain(self, patience_s: float, code: int = p.CLOSE_RESTARTING,
                    reason: str = "instance restarting") -> None:
        """Finish the frame being handled and the publishes in flight (they
        complete and are answered), then close with ``code``. A publish still
        waiting for storage after ``patience_s`` is abandoned and answered
        ``unavailable``: retrying it with the same client_id is safe."""
        self._closing = _Closed(code, reason)
        self._settle_by = time.monotonic() + patience_s
        if self._busy:
            try:
                async with asyncio.timeout(patience_s):
                    while self._busy:
                        self._frame_done.clear()
                        await self._frame_done.wait()
            except TimeoutError:
                pass
        # Between frames the reader stops by itself (it checks ``_closing``);
        # one still waiting for a frame, or past its patience, is stopped.
        self._stop_reading()
        await self._finished.wait()

    async def _close(self, code: int, reason: str) -> None:
        await self.sock.close(code, reason)

    def reply(self, frame: str, kind: str) -> None:
        if not self.outbox.push(frame):
            raise TooSlow("control frames not read")
        self.svc.metrics.sent(kind)

    def error(self, code: str, reason: str, ref: str | None) -> None:
        self.reply(p.error_frame(code, reason, ref), "error")
        self.svc.metrics.error_sent(code)

    async def _read(self) -> None:
        sock = self.sock
        limit = self.svc.settings.max_frame_bytes
        metrics = self.svc.metrics
        while self._closing is None and self._why is None:
            msg = await sock.receive()
            if msg is None:
                return
            if isinstance(msg, str):
                text: str | None = msg
                # A character is 1-4 bytes: count bytes only when it matters.
                size = len(msg) if len(msg) > limit or len(msg) * 4 <= limit else len(msg.encode())
            else:
                text = None
                size = len(msg)
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
                if self._closing is not None:
                    self._frame_done.set()

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
            self.error("rate_limited", "too many join/leave/ack/refresh frames; slow down and "
                       "retry", None if isinstance(frame, p.Refresh) else frame.room)
        elif isinstance(frame, p.Join):
            await self._join(frame)
        elif isinstance(frame, p.Leave):
            await self._leave(frame)
        elif isinstance(frame, p.Ack):
            await self._ack(frame)
        elif isinstance(frame, p.Refresh):
            self._refresh(frame)

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
        in_flight = self._in_flight
        if in_flight is None:
            in_flight = self._in_flight = deque()
        in_flight.append((frame, pending))
        pending.add_done_callback(self._answer_ready)
        if len(in_flight) >= self._window:
            await asyncio.wait([in_flight[0][1]])
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
                self._ended = True
                self._end(p.CLOSE_TOO_SLOW, TOO_SLOW_REASON)
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
            self._end(p.CLOSE_TOO_SLOW, TOO_SLOW_REASON)

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
