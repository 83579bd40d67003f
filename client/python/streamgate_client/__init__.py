"""Python client for streamgate: resumable, exactly-once, in-order room messages.

    async with connect(["ws://a:8000/ws", "ws://b:8000/ws"], user="alice") as c:
        await c.join("lobby", since="$")
        await c.publish("lobby", {"text": "hi"})
        async for item in c.messages():
            if isinstance(item, Gap):
                ...  # messages of item.room were lost for good (trimmed history)
            else:
                print(item.room, item.id, item.sender, item.body)

See docs/clients.md. Layers: :mod:`streamgate_client.ids` and :mod:`streamgate_client.protocol`
(the wire contract) and :mod:`streamgate_client.state` (delivery rules) are pure;
:mod:`streamgate_client.connection` does the I/O.
"""

from .connection import Client, connect
from .errors import (
    AuthError,
    ClientClosed,
    FatalError,
    OriginRejected,
    PublishTimeout,
    ServerError,
    StreamgateError,
)
from .events import Gap, Item, Joined, Message
from .http import HistoryPage
from .ids import StreamId, format_id, parse_id
from .options import Options, TokenProvider
from .status import Connected, ConnectionEvent, Connecting, Disconnected, Refreshed, Resumed, State

__all__ = [
    "AuthError",
    "Client",
    "ClientClosed",
    "Connected",
    "ConnectionEvent",
    "Connecting",
    "Disconnected",
    "HistoryPage",
    "Refreshed",
    "Resumed",
    "State",
    "FatalError",
    "Gap",
    "Item",
    "Joined",
    "Message",
    "Options",
    "OriginRejected",
    "PublishTimeout",
    "ServerError",
    "StreamId",
    "StreamgateError",
    "TokenProvider",
    "connect",
    "format_id",
    "parse_id",
]
