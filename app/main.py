"""The ASGI application: ``uvicorn app.main:app``.

State is built in the lifespan, so importing this module has no side
effects beyond reading the configuration.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles
from starlette.types import Receive, Scope, Send

from .config import Settings, load_settings
from .drain import Drainer
from .logs import configure as configure_logs
from .http import HTTPError, error_response
from .http import router as http_router
from .httpcount import HTTPCounter
from .service import Service
from .static import SDK_FILES, STATIC_DIR, sdk_dir
from . import asgi_socket
from .admission import SERVICE_KEY
from .tutorial import router as tutorial_router

WS_PATH = "/ws"


class StreamGate(FastAPI):
    """FastAPI, except that ``/ws`` goes straight to its endpoint.

    Each layer of the middleware stack and the router (error and exception
    middleware, FastAPI's exit stack, routing) would keep a coroutine frame
    and a few closures alive for a socket's whole life, about 5 KiB per
    socket (docs/benchmarks.md), for nothing ``/ws`` uses: it answers every
    refusal itself and raises no HTTP exception.
    """

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket" and _route_path(scope) == WS_PATH:
            scope["app"] = self
            await asgi_socket.serve(scope, receive, send)
            return
        await super().__call__(scope, receive, send)


def _route_path(scope: Scope) -> str:
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    return path[len(root):] if root and path.startswith(root) else path


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or load_settings()
    configure_logs(settings.instance_id, settings.log_format)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[dict[str, Service]]:
        service = Service(settings)
        app.state.service = service
        # Whatever started is stopped, even if a later start-up step fails;
        # Service.stop() is bounded, so the process always gets to exit.
        try:
            await service.start()
            Drainer(service, settings.drain_grace_s, settings.drain_timeout_s).install()
            # Lifespan state: how the server's protocol class for /ws
            # (app.lean) finds the service, the ASGI way.
            yield {SERVICE_KEY: service}
        finally:
            service.draining = True
            await service.stop()

    app = StreamGate(title="streamgate", lifespan=lifespan, docs_url=None, redoc_url=None)

    @app.exception_handler(HTTPError)
    async def _http_error(request: Request, exc: HTTPError):  # type: ignore[no-untyped-def]
        return error_response(exc)

    app.add_middleware(HTTPCounter)
    app.include_router(http_router)  # /ws: see StreamGate
    app.include_router(tutorial_router)  # /ws/{user_id}, /ws/{room}/{user_id}
    _serve_sdk(app)
    if STATIC_DIR.is_dir():
        app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    return app


def _serve_sdk(app: FastAPI) -> None:
    """``/static/streamgate.js`` and its types, from the SDK's own package;
    registered before the ``/static`` mount so they win over it."""
    where = sdk_dir()
    for name in SDK_FILES:
        if (where / name).is_file():
            app.add_api_route(f"/static/{name}", _file_endpoint(where / name), methods=["GET", "HEAD"],
                              include_in_schema=False)


def _file_endpoint(path: Path) -> Callable[[], Awaitable[FileResponse]]:
    """An endpoint without parameters: nothing in the request can choose the file."""
    media = "text/javascript; charset=utf-8" if path.suffix == ".js" else "text/plain; charset=utf-8"

    async def endpoint() -> FileResponse:
        return FileResponse(path, media_type=media)

    return endpoint


app = create_app()
