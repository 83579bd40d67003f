"""The WebSocket endpoint: authenticate, then read frames and answer them.

Each connection runs three tasks: this reader, the outbox writer, and the
session's catch-up worker. Whichever ends first ends the connection, and the
close code says why (4408 too slow, 1012 restarting, ...).
"""

from __future__ import annotations

import asyncio
import logging
import time

from fastapi import APIRouter, WebSocket
from starlette.websockets import WebSocketDisconnect, WebSocketState

from streams.retry import StorageUnavailable

from . import protocol as p
from .auth import Principal, Unauthorized
from .limits import TokenBucket
from .outbox import Outbox, TooSlow
from .service import Forbidden, Service
from .session import FellBehind, Session

log = logging.getLogger("streamgate.ws")
router = APIRouter()


class _Closed(Exception):
    def __init__(self, code: int, reason: str = "") -> None:
        self.code = code
        self.reason = reason


@router.websocket("/ws")
async def websocket_endpoint(ws: WebSocket) -> None:
    svc: Service = ws.app.state.service
    try:
        who = svc.auth.authenticate(ws.query_params.get("token"), ws.query_params.get("user"))
    except Unauthorized as exc:
        svc.metrics.refuse("unauthorized")
        await ws.accept()
        await ws.close(p.CLOSE_UNAUTHORIZED, str(exc))
        return
    if svc.draining:
        svc.metrics.refuse("draining")
        await ws.accept()
        await ws.close(p.CLOSE_RESTARTING, "instance restarting")
        return
    if svc.connections >= svc.settings.max_connections:
        svc.metrics.refuse("full")
        await ws.accept()
        await ws.close(p.CLOSE_FULL, "instance full")
        return
    await ws.accept()
    await Connection(svc, ws, who).run()


class Connection:
    def __init__(self, svc: Service, ws: WebSocket, who: Principal) -> None:
        self.svc = svc
        self.ws = ws
        self.who = who
        s = svc.settings
        self.outbox = Outbox(ws.send_text, s.outbound_queue, s.slow_consumer_timeout_s)
        self.session = Session(who, self.outbox, svc.hub, svc.log)
        self.bucket = TokenBucket(s.publish_rate, s.publish_burst)

    async def run(self) -> None:
        svc = self.svc
        started = time.monotonic()
        await svc.connected(self.who.user)
        svc.conns.add(self)
        self.reply(p.welcome_frame(self.who.user, svc.instance), "welcome")
        tasks = [
            asyncio.create_task(self._read(), name="ws-read"),
            asyncio.create_task(self.outbox.run(), name="ws-write"),
            asyncio.create_task(self.session.run_catch_up(), name="ws-catch-up"),
        ]
        code, reason = 1000, ""
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            exc = next(iter(done)).exception() if done else None
            if isinstance(exc, (TooSlow, FellBehind)):
                code, reason = p.CLOSE_TOO_SLOW, "too slow: reconnect and resume with since"
                svc.metrics.slow_closes.inc()
            elif isinstance(exc, _Closed):
                code, reason = exc.code, exc.reason
            elif exc is not None and not isinstance(exc, WebSocketDisconnect):
                log.error("connection failed", exc_info=exc)
                code, reason = 1011, "internal error"
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            svc.conns.discard(self)
            rooms = self.session.detach_all()
            await svc.disconnected(self.who.user, rooms)
            svc.metrics.connection_duration.observe(time.monotonic() - started)
            await self._close(code, reason)

    async def _close(self, code: int, reason: str) -> None:
        if self.ws.application_state == WebSocketState.DISCONNECTED:
            return
        if self.ws.client_state == WebSocketState.DISCONNECTED:
            return
        try:
            async with asyncio.timeout(2.0):
                await self.ws.close(code, reason)
        except Exception:
            pass

    def reply(self, frame: str, kind: str) -> None:
        if not self.outbox.push(frame):
            raise TooSlow("control frames not read")
        self.svc.metrics.sent(kind)

    def error(self, code: str, reason: str, ref: str | None) -> None:
        self.reply(p.error_frame(code, reason, ref), "error")

    async def _read(self) -> None:
        ws = self.ws
        while True:
            msg = await ws.receive()
            if msg["type"] == "websocket.disconnect":
                return
            text = msg.get("text")
            size = len(text) if text is not None else len(msg.get("bytes") or b"")
            if size > self.svc.settings.max_frame_bytes or (
                text is not None and len(text.encode()) > self.svc.settings.max_frame_bytes
            ):
                self.svc.metrics.received("too_large")
                self.error("too_large", f"frames are limited to {self.svc.settings.max_frame_bytes} bytes", None)
                continue
            if text is None:
                self.svc.metrics.received("binary")
                self.error("bad_frame", "binary frames are not accepted; send JSON text", None)
                continue
            try:
                frame = p.parse_frame(text)
            except p.FrameError as exc:
                self.svc.metrics.received("invalid")
                self.error(exc.code, exc.reason, exc.ref)
                continue
            self.svc.metrics.received(type(frame).__name__.lower())
            await self._handle(frame)

    async def _handle(self, frame: p.ClientFrame) -> None:
        svc, who = self.svc, self.who
        if isinstance(frame, p.Ping):
            self.reply(p.PONG_FRAME, "pong")
        elif isinstance(frame, p.Publish):
            if not self.bucket.take():
                svc.metrics.rate_limited.inc()
                self.error("rate_limited", "publishing too fast; slow down and retry",
                           frame.client_id or frame.room)
                return
            try:
                res = await svc.publish(who, frame.room, frame.body, frame.client_id)
            except Forbidden:
                self.error("forbidden", "not allowed to publish here", frame.client_id or frame.room)
            except StorageUnavailable:
                self.error("unavailable", "storage could not confirm; retry with the same client_id",
                           frame.client_id or frame.room)
            else:
                self.reply(p.published_frame(frame.room, res.id, frame.client_id, res.duplicate),
                           "published")
        elif isinstance(frame, p.Join):
            await self._join(frame)
        elif isinstance(frame, p.Leave):
            if self.session.leave(frame.room):
                if not svc.hub.has_user(frame.room, who.user):
                    await svc._best_effort(svc.presence.left(frame.room, who.user))
            self.reply(p.left_frame(frame.room), "left")
        elif isinstance(frame, p.Ack):
            if not who.may_join(frame.room):
                self.error("forbidden", "not allowed in this room", frame.room)
                return
            try:
                await svc.log.ack(frame.room, who.user, frame.id)
            except StorageUnavailable:
                self.error("unavailable", "could not store the ack", frame.room)

    async def _join(self, frame: p.Join) -> None:
        svc, who = self.svc, self.who
        if not who.may_join(frame.room):
            self.error("forbidden", "not allowed in this room", frame.room)
            return
        try:
            point = await svc.join_point(who, frame.room, frame.since)
            await self.session.join_from(frame.room, point.since, point.recovered, point.floor)
        except StorageUnavailable:
            self.error("unavailable", "storage unavailable; join again", frame.room)
            return
        await svc._best_effort(svc.presence.joined(frame.room, who.user))
