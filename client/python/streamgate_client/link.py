"""One open WebSocket, and the requests waiting for its answers.

A :class:`Link` lives exactly as long as one connection. When it ends, every
request still waiting on it fails with :class:`Lost`, so that the request
is sent again on the next connection instead of waiting for an answer that
cannot come.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Iterable
from typing import Any

from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from .protocol import ErrorReply, Frame, Published, TokenRefreshed, encode


class Lost(Exception):
    """The connection ended before the answer came."""


class Link:
    """One open WebSocket, and the requests waiting for its answers."""

    def __init__(self, ws: ClientConnection, url: str, user: str, instance: str) -> None:
        self.ws = ws
        self.url = url
        self.user = user
        self.instance = instance
        self.down = asyncio.Event()
        self.answers: dict[str, asyncio.Future[Published | ErrorReply]] = {}
        self.left: dict[str, deque[asyncio.Future[None]]] = {}
        # The answer to the one refresh in flight, if any.
        self.refreshing: asyncio.Future[TokenRefreshed | ErrorReply] | None = None
        # Counted for the Resumed event: what the joins of this connection replayed.
        self.replayed = 0
        self.rooms_lost = 0
        self.resumed = False

    async def send(self, frames: Iterable[Frame]) -> bool:
        """False when the connection is gone (the next one will resend what matters)."""
        try:
            for frame in frames:
                await self.ws.send(encode(frame))
        except ConnectionClosed:
            return False
        return True

    async def request(self, client_id: str, text: str) -> Published | ErrorReply | None:
        """Send a publish and wait for its answer; None if the connection was lost."""
        future: asyncio.Future[Published | ErrorReply] = asyncio.get_running_loop().create_future()
        self.answers[client_id] = future
        try:
            await self.ws.send(text)
            return await future
        except ConnectionClosed:
            await self.down.wait()  # so that the caller never retries on this link
            return None
        except Lost:
            return None
        finally:
            if self.answers.get(client_id) is future:
                del self.answers[client_id]

    async def refresh(self, text: str) -> TokenRefreshed | ErrorReply | None:
        """Send a ``refresh`` frame and wait for its answer; None if the
        connection was lost first."""
        future: asyncio.Future[TokenRefreshed | ErrorReply] = asyncio.get_running_loop().create_future()
        self.refreshing = future
        try:
            await self.ws.send(text)
            return await future
        except (ConnectionClosed, Lost):
            return None
        finally:
            if self.refreshing is future:
                self.refreshing = None

    def lost(self) -> None:
        self.down.set()
        waiting: list[asyncio.Future[Any]] = [*self.answers.values()]
        if self.refreshing is not None:
            waiting.append(self.refreshing)
        waiting.extend(f for q in self.left.values() for f in q)
        for future in waiting:
            if not future.done():
                future.set_exception(Lost())
                future.exception()  # retrieved: no "never retrieved" warning if nobody awaits it
        self.answers.clear()
        self.left.clear()
