"""What plain ASGI does not offer: aborting a socket that stopped reading.

A client that stops reading keeps the server's send buffer full, so even the
close frame cannot be written; the socket (and its buffered megabytes) would
stay until the client reads again, which may be never. This middleware
records, for each WebSocket, a way to abort the underlying transport when
the server runs on uvicorn (whose ASGI ``send`` is a method of the protocol
object that owns the transport). Elsewhere the abort is a no-op and the
socket closes the ordinary way.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from starlette.types import ASGIApp, Receive, Scope, Send

ABORT_KEY = "streamgate.abort"


def _abort_for(send: Send) -> Callable[[], None]:
    transport: Any = getattr(getattr(send, "__self__", None), "transport", None)

    def abort() -> None:
        if transport is not None and not transport.is_closing():
            transport.abort()

    return abort


class AbortableWebSockets:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            scope[ABORT_KEY] = _abort_for(send)
            scope["streamgate.transport"] = getattr(getattr(send, "__self__", None), "transport", None)
        await self.app(scope, receive, send)


def abort(scope: Scope) -> None:
    """Drop the connection at once, without a closing handshake."""
    fn = scope.get(ABORT_KEY)
    if fn is not None:
        fn()
