"""Who may open ``/ws``: the checks before a socket is served.

Shared by both ways of serving ``/ws`` (:mod:`app.lean` and
:mod:`app.asgi_socket`), so that a refusal means the same close code on
either: the handshake completes (with the subprotocol, if offered) and the
close frame says why, which browsers can read and an HTTP 403 would hide.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from . import protocol as p
from .auth import Principal, Unauthorized
from .service import Service

# Where the lifespan state holds the service, for a server's protocol class
# that serves /ws without going through the ASGI app (app.lean).
SERVICE_KEY = "streamgate.service"
SUBPROTOCOL = "streamgate.v1"
TOKEN_SUBPROTOCOL_PREFIX = "bearer."


@dataclass(frozen=True, slots=True)
class Refusal:
    """A socket to close right after the handshake: ``code`` and ``reason``
    go in the close frame, ``metric`` names it in ``streamgate_refused``."""

    code: int
    reason: str
    metric: str


def offered(headers: Iterable[str]) -> list[str]:
    """The subprotocols a client offered, over every Sec-WebSocket-Protocol
    header it sent."""
    return [s.strip() for header in headers for s in header.split(",") if s.strip()]


def subprotocol(offers: list[str]) -> str | None:
    """The subprotocol to answer with: ours when offered, else none (a
    token-only offer is never echoed: that would put it in a response)."""
    return SUBPROTOCOL if SUBPROTOCOL in offers else None


def _token(offers: list[str], query: Mapping[str, str]) -> str | None:
    """The token from ``Sec-WebSocket-Protocol: streamgate.v1, bearer.<jwt>``
    (kept out of URLs and proxy logs), else from ``?token=``."""
    for proto in offers:
        if proto.startswith(TOKEN_SUBPROTOCOL_PREFIX):
            return proto[len(TOKEN_SUBPROTOCOL_PREFIX):]
    return query.get("token")


def _origin_allowed(svc: Service, origin: str | None) -> bool:
    """Browsers always send Origin; clients without one are servers or CLIs
    and are judged by their token alone."""
    if origin is None or svc.settings.any_origin:
        return True
    return origin in svc.settings.allowed_origins


def admit(svc: Service, offers: list[str], origin: str | None,
          query: Mapping[str, str]) -> Principal | Refusal:
    """The principal to serve, or why not; counts the refusal."""
    refusal: Refusal | None = None
    if not _origin_allowed(svc, origin):
        refusal = Refusal(p.CLOSE_ORIGIN, "origin not allowed", "origin")
    else:
        try:
            who = svc.auth.authenticate(_token(offers, query), query.get("user"))
        except Unauthorized as exc:
            refusal = Refusal(p.CLOSE_UNAUTHORIZED, str(exc), "unauthorized")
        else:
            if svc.draining:
                refusal = Refusal(p.CLOSE_RESTARTING, "instance restarting", "draining")
            elif svc.connections >= svc.settings.max_connections:
                refusal = Refusal(p.CLOSE_FULL, "instance full", "full")
            else:
                return who
    svc.metrics.refuse(refusal.metric)
    return refusal
