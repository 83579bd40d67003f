"""The client's tunables, in one frozen dataclass."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Literal

TokenProvider = Callable[[], Awaitable[str]]
"""An async callable returning a fresh token: asked before the current one
expires (refreshed in band) and again after every 4401."""


@dataclass(frozen=True, slots=True)
class Options:
    """Tunables. Times are in seconds."""

    max_queue: int = 1000  # messages waiting for the application
    open_timeout: float = 10.0  # TCP + WebSocket handshake + welcome; a token_provider call
    connect_timeout: float = 30.0  # entering `async with`: the first connection, retries included
    request_timeout: float = 10.0  # join and leave answers
    publish_timeout: float = 30.0  # one publish until confirmed, retries included
    ping_interval: float = 10.0  # WebSocket keepalive: a silent dead peer is found
    ping_timeout: float = 10.0  # within ping_interval + ping_timeout
    close_timeout: float = 2.0
    backoff_base: float = 0.2  # first reconnect delay window; doubles per failed attempt
    backoff_max: float = 10.0
    max_auth_failures: int = 3  # consecutive 4401 refusals before giving up
    ack_batch: int = 100  # auto_ack: send the acks at least this often
    max_size: int = 4 * 1024 * 1024  # largest frame accepted from the server
    max_frame_bytes: int = 65536  # the server's MAX_FRAME_BYTES: larger publishes fail before sending
    # "subprotocol" (the default): in Sec-WebSocket-Protocol as
    # "bearer.<token>", kept out of URLs and proxy logs; "query": ?token=,
    # for servers or proxies that only read the URL.
    token_transport: Literal["query", "subprotocol"] = "subprotocol"
    # With a token_provider: ask it for a fresh token this long before the
    # current one expires (at most half its remaining life) and send it in
    # band, keeping the connection and its rooms. 0 turns refreshing off.
    refresh_margin: float = 30.0
    http_timeout: float = 10.0  # presence, members and history requests
