"""``/ws`` over plain ASGI: any ASGI server, e.g. ``uvicorn app.main:app``.

ASGI gives an application no access to a socket's transport, so on this
path there are no direct writes of shared frames (every frame goes through
``send``, one at a time, by the outbox's writer) and a peer that stopped
reading cannot be dropped at once: its close waits (bounded) and the server
frees the socket when it gives up. streamgate's own protocol class
(:mod:`app.lean`, what ``python -m app`` runs) has neither limit.
"""

from __future__ import annotations

import asyncio

from starlette.types import Receive, Scope, Send
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from .admission import Refusal, admit, offered, subprotocol
from .service import Service
from .socket import FrameWriter
from .ws import Connection

CLOSE_WAIT_S = 2.0


class AsgiSocket:
    """The :class:`app.socket.Socket` of one ASGI WebSocket."""

    __slots__ = ("ws",)

    def __init__(self, ws: WebSocket) -> None:
        self.ws = ws

    @property
    def writer(self) -> FrameWriter | None:
        return None

    async def receive(self) -> str | bytes | None:
        msg = await self.ws.receive()
        if msg["type"] == "websocket.disconnect":
            return None
        text: str | None = msg.get("text")
        if text is not None:
            return text
        data: bytes = msg.get("bytes") or b""
        return data

    async def send_text(self, text: str) -> None:
        try:
            await self.ws.send_text(text)
        except WebSocketDisconnect as exc:
            raise ConnectionResetError("the peer is gone") from exc

    async def close(self, code: int, reason: str) -> None:
        ws = self.ws
        if (ws.application_state == WebSocketState.DISCONNECTED
                or ws.client_state == WebSocketState.DISCONNECTED):
            return
        try:
            async with asyncio.timeout(CLOSE_WAIT_S):
                await ws.close(code, reason)
        except Exception:
            # The close frame could not even be queued (the peer is not
            # reading) or the server already closed: returning lets the
            # server drop the connection.
            pass


async def serve(scope: Scope, receive: Receive, send: Send) -> None:
    """The ASGI app of ``/ws`` (see ``app.main.StreamGate``)."""
    ws = WebSocket(scope, receive, send)
    svc: Service = ws.app.state.service
    offers = offered(ws.headers.getlist("sec-websocket-protocol"))
    who = admit(svc, offers, ws.headers.get("origin"), ws.query_params)
    await ws.accept(subprotocol=subprotocol(offers))
    if isinstance(who, Refusal):
        await ws.close(who.code, who.reason)
        return
    await Connection(svc, AsgiSocket(ws), who).run()
