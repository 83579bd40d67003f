"""The ASGI application: ``uvicorn app.main:app``.

State is built in the lifespan, so importing this module has no side
effects beyond reading the configuration.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.staticfiles import StaticFiles
from starlette.routing import WebSocketRoute

from .config import Settings, load_settings
from .drain import Drainer
from .logs import configure as configure_logs
from .http import HTTPError, error_response
from .http import router as http_router
from .rawsocket import AbortableWebSockets
from .service import Service
from .static import STATIC_DIR
from .ws import websocket_endpoint


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or load_settings()
    configure_logs(settings.instance_id, settings.log_format)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        service = Service(settings)
        app.state.service = service
        # Whatever started is stopped, even if a later start-up step fails;
        # Service.stop() is bounded, so the process always gets to exit.
        try:
            await service.start()
            Drainer(service, settings.drain_grace_s, settings.drain_timeout_s).install()
            yield
        finally:
            service.draining = True
            await service.stop()

    app = FastAPI(title="streamgate", lifespan=lifespan, docs_url=None, redoc_url=None)

    @app.exception_handler(HTTPError)
    async def _http_error(request: Request, exc: HTTPError):  # type: ignore[no-untyped-def]
        return error_response(exc)

    app.add_middleware(AbortableWebSockets)
    app.include_router(http_router)
    # A plain Starlette route: no per-socket dependency machinery.
    app.router.routes.append(WebSocketRoute("/ws", websocket_endpoint))
    if STATIC_DIR.is_dir():
        app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    return app


app = create_app()
