"""What plain ASGI does not offer: a WebSocket's own transport.

Two things need it. Aborting a socket that stopped reading: its send buffer
is full, so even the close frame cannot be written, and the socket (with its
buffered megabytes) would stay until the client reads again, which may be
never. And writing the shared, pre-encoded frame bytes of a fan-out straight
to each socket. ``record_transport`` finds it when the server runs on
uvicorn (whose ASGI ``send`` is a method of the protocol object that owns
it); elsewhere it is None, the abort is a no-op and frames go through ASGI.
"""

from __future__ import annotations

from typing import Any

from starlette.types import Scope, Send

TRANSPORT_KEY = "streamgate.transport"


def record_transport(scope: Scope, send: Send) -> None:
    """Record a WebSocket's transport in its scope (None when not exposed)."""
    scope[TRANSPORT_KEY] = getattr(getattr(send, "__self__", None), "transport", None)


def transport(scope: Scope) -> Any:
    """The socket's transport, or None when the server does not expose it."""
    return scope.get(TRANSPORT_KEY)


def abort(scope: Scope) -> None:
    """Drop the connection at once, without a closing handshake."""
    t = transport(scope)
    if t is not None and not t.is_closing():
        t.abort()
