"""Connection-state events: what the application hears about the link.

The client calls the application's ``on_state`` callback with one of these
as the connection goes through its life cycle (the names follow
centrifuge-js and socket.io-client):

- :class:`Connecting` before each attempt, with the attempt's URL;
- :class:`Connected` once an instance said ``welcome``;
- :class:`Disconnected` when a connection that was up ends, with the close
  code and whether the client will reconnect;
- :class:`Resumed` after a reconnect, once every room was joined again,
  with how much was replayed and how many rooms lost messages for good;
- :class:`Refreshed` when the token was renewed in band.

The callback runs on the client's own task: it must return quickly and not
block (hand work to a queue or a task of your own). An exception it raises
is logged and ignored.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass


class State(enum.Enum):
    CONNECTING = "connecting"
    CONNECTED = "connected"
    DISCONNECTED = "disconnected"  # between connections, or before the first
    CLOSED = "closed"  # closed by the application, or stopped for good


@dataclass(frozen=True, slots=True)
class Connecting:
    url: str
    attempt: int  # 1 for the first attempt after a connection ended


@dataclass(frozen=True, slots=True)
class Connected:
    url: str
    user: str
    instance: str
    reconnect: bool  # False for the first connection of the client


@dataclass(frozen=True, slots=True)
class Disconnected:
    url: str
    code: int | None  # the WebSocket close code; None when no close frame came
    reason: str
    reconnecting: bool  # False when the client stops (closed, or a fatal refusal)


@dataclass(frozen=True, slots=True)
class Resumed:
    """Every room was joined again after a reconnect."""

    url: str
    rooms: int  # rooms joined again
    replayed: int  # messages the server replayed for them (the missed ones)
    lost: int  # rooms whose join said recovered=false (a Gap was queued)


@dataclass(frozen=True, slots=True)
class Refreshed:
    exp: int | None  # the new token's expiry (unix seconds), None without one


ConnectionEvent = Connecting | Connected | Disconnected | Resumed | Refreshed
StateListener = Callable[[ConnectionEvent], object]
