"""Test support: real redis-server and uvicorn processes, a WebSocket client, waits.

No mocks: every helper here drives real processes over loopback.
"""

from .client import Closed, Refusal, ServerError, WsClient, new_client_id, open_client, try_connect
from .instance import Instance, InstanceStartError, ModuleAppInstance
from .redis_server import RedisServer
from .timeouts import FACTOR, scaled
from .waiting import async_wait_until, wait_until

__all__ = [
    "FACTOR",
    "Closed",
    "Instance",
    "InstanceStartError",
    "ModuleAppInstance",
    "RedisServer",
    "Refusal",
    "ServerError",
    "WsClient",
    "async_wait_until",
    "new_client_id",
    "open_client",
    "scaled",
    "try_connect",
    "wait_until",
]
