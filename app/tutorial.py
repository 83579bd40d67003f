"""The tutorial's interface, served on the durable core as a migration path.

Many deployments start from the well-known tutorial design this service grew
out of: ``/ws/{user_id}`` for broadcast and direct chat, and
``/ws/{room}/{user_id}?last_message_id=ID`` for a room with history. Its
clients work here unchanged and gain what the core gives every socket:
messages stored in the room's stream before anyone sees them, the same
delivery path (hub, session, bounded outbox), resume without a gap.

Nothing here delivers by itself. A socket is one :class:`app.session.Session`
whose outbox translates our frames into the tutorial's on the way out
(``app.protocol.tutorial_chat_line`` / ``tutorial_room_item``):

- ``/ws/{user_id}`` joins ``@all`` and the user's inbox ``@user`` live; a
  ``broadcast`` is a publish to ``@all``, a ``direct`` one to ``@U``.
- ``/ws/{room}/{user_id}`` joins the room after ``last_message_id`` (or the
  latest ``LATEST`` messages without one); what the client sends is
  published to the room.

Admission is the same as ``/ws`` (origin, token or ``?user=``, draining,
capacity); in jwt mode the path's user must be the token's subject. The
routes go through plain ASGI, and ``/ws`` itself is untouched.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from fastapi import APIRouter, WebSocket
from starlette.websockets import WebSocketDisconnect, WebSocketState

from streams.bounded import cancel_and_wait
from streams.model import is_id
from streams.retry import StorageUnavailable

from . import protocol as p
from .auth import CLOCK_LEEWAY_S, Principal, Unauthorized
from .limits import TokenBucket
from .outbox import Outbox, Signal, TooSlow
from .service import Forbidden, Service
from .session import FellBehind

log = logging.getLogger("streamgate.tutorial")

router = APIRouter()

# Messages a room socket without ``last_message_id`` starts with.
LATEST = 50
TASKS_STOP_S = 1.0
Translate = Callable[[str], "str | None"]


@router.websocket("/ws/{user_id}")
async def chat_socket(ws: WebSocket, user_id: str) -> None:
    """Broadcast and direct chat, as text lines."""
    svc: Service = ws.app.state.service
    who = await _admit(ws, svc, user_id)
    if who is None:
        return
    max_body = svc.settings.max_body_bytes
    conn = TutorialConnection(svc, ws, who, p.tutorial_chat_line,
                              lambda raw: p.parse_tutorial_chat(raw, max_body))
    await conn.run([(p.ALL_ROOM, "$"), (p.inbox(who.user), "$")])


@router.websocket("/ws/{room}/{user_id}")
async def room_socket(ws: WebSocket, room: str, user_id: str) -> None:
    """One room with its history: the messages after ``last_message_id``
    (else the latest ``LATEST``), then live ones."""
    svc: Service = ws.app.state.service
    since = ws.query_params.get("last_message_id")
    if not p.valid_room(room) or (since is not None and not is_id(since)):
        await ws.accept()
        await ws.close(p.CLOSE_POLICY, "invalid room or last_message_id")
        return
    who = await _admit(ws, svc, user_id)
    if who is None:
        return
    if not who.may_join(room):
        svc.metrics.refuse("forbidden")
        await ws.close(p.CLOSE_POLICY, "not allowed in this room")
        return
    max_body = svc.settings.max_body_bytes
    conn = TutorialConnection(svc, ws, who, p.tutorial_room_item,
                              lambda raw: p.parse_tutorial_room(raw, room, max_body))
    await conn.run([(room, since)], latest=LATEST)


async def _admit(ws: WebSocket, svc: Service, user_id: str) -> Principal | None:
    """Accept the socket and return its principal, or close it with the code
    ``/ws`` would use and return None."""
    await ws.accept()
    origin = ws.headers.get("origin")
    if origin is not None and not svc.settings.any_origin and origin not in svc.settings.allowed_origins:
        return await _refuse(ws, svc, p.CLOSE_ORIGIN, "origin not allowed", "origin")
    token = _token(ws)
    try:
        who = svc.auth.authenticate(token, user_id)
    except Unauthorized as exc:
        return await _refuse(ws, svc, p.CLOSE_UNAUTHORIZED, str(exc), "unauthorized")
    if who.user != user_id:
        return await _refuse(ws, svc, p.CLOSE_UNAUTHORIZED, "the path's user is not the token's",
                             "unauthorized")
    if svc.draining:
        return await _refuse(ws, svc, p.CLOSE_RESTARTING, "instance restarting", "draining")
    if svc.connections >= svc.settings.max_connections:
        return await _refuse(ws, svc, p.CLOSE_FULL, "instance full", "full")
    return who


async def _refuse(ws: WebSocket, svc: Service, code: int, reason: str, metric: str) -> None:
    svc.metrics.refuse(metric)
    await ws.close(code, reason)
    return None


def _token(ws: WebSocket) -> str | None:
    """``Authorization: Bearer`` (server-side clients), a ``bearer.<jwt>``
    subprotocol, or ``?token=``, in that order."""
    header = ws.headers.get("authorization", "")
    if header[:7].lower() == "bearer ":
        return header[7:].strip()
    for proto in ws.headers.get("sec-websocket-protocol", "").split(","):
        if proto.strip().startswith("bearer."):
            return proto.strip()[len("bearer."):]
    return ws.query_params.get("token")


class TutorialConnection:
    """One tutorial socket: a session whose frames are translated on the way
    out, and a reader that publishes what the client sends, one at a time.

    Offers what the instance asks of every connection (``outbox``,
    ``check_stalled``, ``drain``), so draining and the stall watchdog treat
    it like a ``/ws`` socket.
    """

    def __init__(self, svc: Service, ws: WebSocket, who: Principal, translate: Translate,
                 parse: Callable[[str], p.Publish]) -> None:
        self.svc = svc
        self.ws = ws
        self.who = who
        self._translate = translate
        self._parse = parse
        s = svc.settings
        self.outbox = Outbox(self._send, s.outbound_queue, s.slow_consumer_timeout_s,
                             max_bytes=s.outbound_bytes, on_error=self._failed)
        self.session = svc.open_session(who, self.outbox, self._failed)
        self.bucket = TokenBucket(s.publish_rate, s.publish_burst)
        self._why: tuple[int, str] | None = None
        self._reader: asyncio.Task[object] | None = None
        self._busy = False
        self._idle = Signal(True)
        self._finished = Signal()

    async def _send(self, frame: str) -> None:
        out = self._translate(frame)
        if out is not None:
            await self.ws.send_text(out)

    async def run(self, rooms: list[tuple[str, str | None]], latest: int = 0) -> None:
        """Join ``rooms`` (room, since; None with ``latest``: its newest
        ``latest`` messages), then read until something ends the socket."""
        svc, user = self.svc, self.who.user
        started = time.monotonic()
        first = svc.connected(user)
        svc.conns.add(self)
        self._reader = asyncio.current_task()
        expiry = None
        try:
            if self.who.expires_at is not None:
                loop = asyncio.get_running_loop()
                left = max(0.0, self.who.expires_at + CLOCK_LEEWAY_S - time.time())
                expiry = loop.call_at(loop.time() + left, self._end, p.CLOSE_UNAUTHORIZED,
                                      "token expired")
            if first:
                await svc.came_online(user)
            for room, since in rooms:
                if since is None and latest:
                    since = await svc.log.start_of_latest(room, latest)
                point = await svc.join_point(self.who, room, since)
                await self.session.join_from(room, point.since, point.recovered, point.floor,
                                             epoch=point.epoch)
                await svc.entered(room, user)
            await self._read()
        except asyncio.CancelledError:
            task = self._reader
            if self._why is None or (task is not None and task.uncancel() > 0):
                raise  # not ours: the server is shutting down
        except StorageUnavailable:
            self._end(p.CLOSE_RESTARTING, "storage unavailable; reconnect")
        except (WebSocketDisconnect, OSError):
            self._end(1000)
        except Exception as exc:
            self._failed(exc)
        finally:
            if expiry is not None:
                expiry.cancel()
            code, reason = self._why or (1000, "")
            try:
                tasks = [t for t in (self.outbox.close(), self.session.close()) if t is not None]
                if tasks:
                    await cancel_and_wait(tasks, TASKS_STOP_S, "tutorial connection tasks")
                await self._close(code, reason)
            finally:
                svc.conns.discard(self)
                svc.disconnected(user, self.session.detach_all())
                svc.metrics.connection_duration.observe(time.monotonic() - started)
                self._finished.set()

    async def _read(self) -> None:
        limit = self.svc.settings.max_frame_bytes
        metrics = self.svc.metrics
        while self._why is None:
            msg = await self.ws.receive()
            if msg["type"] == "websocket.disconnect":
                return
            text = msg.get("text")
            if text is None or len(text.encode()) > limit:
                kind = "binary" if text is None else "too_large"
                metrics.received(kind)
                self._error("bad_frame" if text is None else "too_large",
                            "send JSON text" if text is None else f"frames are limited to {limit} bytes")
                continue
            try:
                frame = self._parse(text)
            except p.FrameError as exc:
                metrics.received("invalid")
                self._error(exc.code, exc.reason, exc.ref)
                continue
            metrics.received("tutorial")
            if not self.bucket.take():
                metrics.rate_limited.inc()
                self._error("rate_limited", "publishing too fast; slow down and retry", frame.room)
                continue
            self._busy = True
            self._idle.clear()
            try:
                await self.svc.publish(self.who, frame.room, frame.body, None)
            except Forbidden:
                self._error("forbidden", "not allowed to publish here", frame.room)
            except StorageUnavailable:
                self._error("unavailable", "storage could not confirm; send again", frame.room)
            finally:
                self._busy = False
                self._idle.set()

    def _error(self, code: str, reason: str, ref: str | None = None) -> None:
        if not self.outbox.push(p.error_frame(code, reason, ref)):
            raise TooSlow("error frames not read")
        self.svc.metrics.sent("error")
        self.svc.metrics.error_sent(code)

    def _end(self, code: int, reason: str = "") -> None:
        """End the socket with ``code`` unless something ended it first; a
        publish being stored is finished first (see ``drain``)."""
        if self._why is None:
            self._why = (code, reason)
        reader = self._reader
        if reader is not None and reader is not asyncio.current_task() and not self._busy:
            reader.cancel()

    def _failed(self, exc: BaseException) -> None:
        if isinstance(exc, (TooSlow, FellBehind)):
            self._end(p.CLOSE_TOO_SLOW, "too slow: reconnect")
        elif isinstance(exc, (OSError, WebSocketDisconnect)):
            self._end(1000)
        else:
            log.error("tutorial connection failed", exc_info=exc, extra={"user": self.who.user})
            self._end(1011, "internal error")

    def check_stalled(self, now: float) -> bool:
        """Called by the instance's watchdog: end a socket whose write is stuck."""
        if self.outbox.stalled(now):
            self._end(p.CLOSE_TOO_SLOW, "too slow: reconnect")
            return True
        return False

    async def drain(self, patience_s: float, code: int = p.CLOSE_RESTARTING,
                    reason: str = "instance restarting") -> None:
        """Let the publish being stored finish (up to ``patience_s``), then
        close with ``code``."""
        if self._why is None:
            self._why = (code, reason)
        try:
            async with asyncio.timeout(patience_s):
                await self._idle.wait()
        except TimeoutError:
            pass
        reader = self._reader
        if reader is not None and not reader.done():
            reader.cancel()
        await self._finished.wait()

    async def _close(self, code: int, reason: str) -> None:
        if WebSocketState.DISCONNECTED in (self.ws.application_state, self.ws.client_state):
            return
        try:
            async with asyncio.timeout(2.0):
                await self.ws.close(code, reason)
        except Exception:
            pass  # the peer is gone or not reading; the server drops it
