"""Counts every HTTP response by route template, method and status.

Plain ASGI around the application's routes: the status is taken from the
response as it is sent, and the route from what the router matched
(``scope["route"]``), so ``/rooms/lobby/messages`` is counted as
``/rooms/{room}/messages`` and the label set stays bounded. A path no route
matches is counted as ``unmatched``; a request that raised before answering
as a 500, which is what the server error handler outside answers.
WebSockets are not counted here: they have their own metrics.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .metrics import Metrics

UNMATCHED = "unmatched"


class HTTPCounter:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500

        async def counting_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, counting_send)
        finally:
            _metrics(scope).http_answered(_route(scope), scope.get("method", ""), status)


def _route(scope: Scope) -> str:
    route = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) and path else UNMATCHED


def _metrics(scope: Scope) -> Metrics:
    metrics: Metrics = scope["app"].state.service.metrics
    return metrics
