"""Presence and history over the server's HTTP routes.

The socket carries live messages; who is online, who is in a room and pages
of a room's history are HTTP requests (``GET /presence``,
``/rooms/{room}/members``, ``/rooms/{room}/messages``) to the same host as
the socket URL. The standard library's ``urllib`` runs in a worker thread,
so the client needs no HTTP dependency; every request is bounded by a
timeout.
"""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlencode, urlsplit, urlunsplit

from .errors import AuthError, ServerError, StreamgateError
from .events import Message
from .ids import is_id
from .protocol import check_room

MAX_RESPONSE_BYTES = 16 * 1024 * 1024  # a page of 1,000 messages of 16 KiB


@dataclass(frozen=True, slots=True)
class HistoryPage:
    """One page of a room's history, oldest first.

    ``next``: the ``after`` of the following page (None at the newest
    message). ``prev``: the ``before`` of the older page when the page was
    read backwards (None once nothing older is retained).
    """

    room: str
    messages: list[Message]
    next: str | None
    prev: str | None


def http_base(ws_url: str) -> str:
    """``ws://host:port/prefix/ws`` -> ``http://host:port/prefix``."""
    parts = urlsplit(ws_url)
    scheme = {"ws": "http", "wss": "https"}.get(parts.scheme)
    if scheme is None:
        raise ValueError(f"not a ws:// or wss:// URL: {ws_url!r}")
    path = parts.path[:-3] if parts.path.endswith("/ws") else parts.path.rstrip("/")
    return urlunsplit((scheme, parts.netloc, path, "", ""))


def history_query(after: str | None, before: str | None, limit: int) -> dict[str, str]:
    """The query of a history page; ValueError for arguments the server refuses."""
    if after is not None and before is not None:
        raise ValueError("give after or before, not both")
    if after is not None and not is_id(after):
        raise ValueError(f"after must be a message id: {after!r}")
    if before is not None and before != "$" and not is_id(before):
        raise ValueError(f"before must be a message id or '$': {before!r}")
    if not 1 <= limit <= 1000:
        raise ValueError("limit must be 1-1000")
    query = {"limit": str(limit)}
    if after is not None:
        query["after"] = after
    if before is not None:
        query["before"] = before
    return query


def parse_page(room: str, data: Any) -> HistoryPage:
    if not isinstance(data, dict) or not isinstance(data.get("messages"), list):
        raise StreamgateError("unexpected history answer")
    messages = [Message(room, m["id"], m["from"], m["body"], m["ts"]) for m in data["messages"]]
    nxt, prev = data.get("next"), data.get("prev")
    return HistoryPage(room, messages, nxt if isinstance(nxt, str) else None,
                       prev if isinstance(prev, str) else None)


class HttpApi:
    """GET requests to one instance (or the proxy in front of them)."""

    def __init__(self, base: str, timeout: float) -> None:
        self.base = base
        self.timeout = timeout

    async def get(self, path: str, query: dict[str, str], *, token: str | None,
                  user: str | None) -> Any:
        """The decoded JSON answer; ServerError for a refusal (4xx/5xx with
        the server's error code), AuthError for 401, StreamgateError when
        the instance cannot be reached."""
        if token is None and user is not None:
            query = {**query, "user": user}
        url = self.base + path + ("?" + urlencode(query) if query else "")
        headers = {"Accept": "application/json"}
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        request = urllib.request.Request(url, headers=headers)
        return await asyncio.to_thread(self._fetch, request)

    def _fetch(self, request: urllib.request.Request) -> Any:
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                raw = response.read(MAX_RESPONSE_BYTES + 1)
            if len(raw) > MAX_RESPONSE_BYTES:
                raise StreamgateError(f"answer larger than {MAX_RESPONSE_BYTES} bytes")
            return json.loads(raw)
        except urllib.error.HTTPError as exc:
            try:
                err = json.loads(exc.read(65536))
            except ValueError:
                err = {}
            code = err.get("error", f"http_{exc.code}") if isinstance(err, dict) else f"http_{exc.code}"
            reason = err.get("reason", exc.reason) if isinstance(err, dict) else str(exc.reason)
            if exc.code == 401:
                raise AuthError(f"unauthorized: {reason}") from None
            raise ServerError(str(code), str(reason)) from None
        except (urllib.error.URLError, OSError, ValueError) as exc:
            raise StreamgateError(f"{request.full_url.split('?')[0]}: {exc}") from None


def room_path(room: str, suffix: str) -> str:
    check_room(room)
    return f"/rooms/{quote(room, safe='')}/{suffix}"
