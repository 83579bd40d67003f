"""HTTP routes: health, readiness, metrics, history, publish, presence."""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, JSONResponse, Response

from streams.model import is_id
from streams.retry import StorageUnavailable

from .auth import Principal, Unauthorized, bearer
from .protocol import FrameError, checked_body, decode_json, valid_room
from .service import Forbidden, Service
from .static import INDEX

router = APIRouter()

MAX_PAGE = 1000
DEFAULT_PAGE = 100


# Room for the envelope around a body: ``{"body":...,"client_id":...}`` with
# a 128-character client_id and some whitespace.
ENVELOPE_MARGIN = 4096


class HTTPError(Exception):
    def __init__(self, status: int, code: str, reason: str) -> None:
        self.status = status
        self.code = code
        self.reason = reason


def error_response(exc: HTTPError) -> JSONResponse:
    return JSONResponse({"error": exc.code, "reason": exc.reason}, status_code=exc.status)


def post_limit(max_frame_bytes: int, max_body_bytes: int) -> int:
    """The most bytes of a POST request body the instance reads.

    The request is the envelope a socket ``publish`` frame carries, so it
    gets the same limit as a frame; but never less than the body limit plus
    room for the envelope, so a body the socket accepts is never refused
    over HTTP for its wrapping. The body inside is checked against
    MAX_BODY_BYTES afterwards, as on the socket.
    """
    return max(max_frame_bytes, max_body_bytes + ENVELOPE_MARGIN)


async def read_limited(request: Request, limit: int) -> bytes:
    """The request body, refused with 413 past ``limit`` bytes without
    holding more than that in memory.

    A declared ``Content-Length`` over the limit is refused before reading
    anything; a body without one (chunked) is counted as it streams in and
    refused at the first chunk past the limit. The server keeps the
    connection: uvicorn discards what the client still sends once the answer
    is out, so memory stays flat, and a client that reads only after sending
    its whole request (most HTTP libraries) gets the 413 instead of a reset,
    which closing with unread data would cause.
    """
    too_large = HTTPError(413, "too_large", f"request bodies are limited to {limit} bytes")
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise too_large
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_large
        chunks.append(chunk)
    return b"".join(chunks)


def _svc(request: Request) -> Service:
    return request.app.state.service


def _who(request: Request) -> Principal:
    svc = _svc(request)
    try:
        return svc.auth.authenticate(
            bearer(request.headers.get("authorization")), request.query_params.get("user")
        )
    except Unauthorized as exc:
        raise HTTPError(401, "unauthorized", str(exc)) from None


def _room(room: str) -> str:
    if not valid_room(room):
        raise HTTPError(400, "invalid_room", "invalid room name")
    return room


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz")
async def readyz(request: Request) -> JSONResponse:
    svc = _svc(request)
    shards = svc.shards()
    extra: dict[str, Any] = {} if shards is None else {"shards": shards}
    if shards is not None:
        # Still ready while other masters serve: say which shards are not.
        extra["degraded"] = [addr for addr, s in shards.items() if not s["healthy"]]
    if await svc.ready():
        return JSONResponse({"status": "ready", "instance": svc.instance, **extra})
    reason = svc.not_ready_reason()
    return JSONResponse({"status": "not ready", "reason": reason, **extra}, status_code=503)


@router.get("/metrics")
async def metrics(request: Request) -> Response:
    return Response(_svc(request).metrics.render(), media_type="text/plain; version=0.0.4")


@router.get("/")
async def index() -> FileResponse:
    return FileResponse(INDEX)


@router.get("/rooms/{room}/messages")
async def history(request: Request, room: str, after: str | None = None,
                  before: str | None = None, limit: int = DEFAULT_PAGE) -> Any:
    """A page of the room's history, oldest first.

    ``after=ID`` (default ``0``) pages forward: ``next`` is the ``after`` of
    the following page. ``before=ID`` pages backward from that id, and
    ``before=$`` starts at the newest message (the latest ``limit``, as a
    chat window opens): ``prev`` is the ``before`` of the older page, null
    once nothing older is retained; ``next`` is then always null.
    """
    who = _who(request)
    _room(room)
    if not who.may_join(room):
        raise HTTPError(403, "forbidden", "not allowed in this room")
    if after is not None and before is not None:
        raise HTTPError(400, "bad_request", "give 'after' or 'before', not both")
    if after is not None and not is_id(after):
        raise HTTPError(400, "bad_request", "'after' must be a message id")
    if before is not None and before != "$" and not is_id(before):
        raise HTTPError(400, "bad_request", "'before' must be a message id or \"$\"")
    if limit < 1:
        raise HTTPError(400, "bad_request", "'limit' must be at least 1")
    limit = min(limit, MAX_PAGE)
    svc = _svc(request)
    try:
        if before is None:
            rows = await svc.history(room, after or "0", limit + 1)
        else:
            rows = await svc.history_before(room, None if before == "$" else before, limit + 1)
    except StorageUnavailable:
        raise HTTPError(503, "unavailable", "storage unavailable") from None
    more = len(rows) > limit
    if before is None:
        rows = rows[:limit]
        cursors = [b'"next":', orjson.dumps(rows[-1].id if more else None)]
    else:
        rows = rows[-limit:] if more else rows
        cursors = [b'"next":null,"prev":', orjson.dumps(rows[0].id if more else None)]
    body = b"".join([
        b'{"messages":[',
        b",".join(
            b'{"id":"%s","from":%s,"body":%s,"ts":%d}'
            % (e.id.encode(), orjson.dumps(e.sender), e.body.encode(), e.ts)
            for e in rows
        ),
        b"],",
        *cursors,
        b"}",
    ])
    return Response(body, media_type="application/json")


@router.post("/rooms/{room}/messages", status_code=201)
async def publish(request: Request, room: str) -> Any:
    who = _who(request)
    _room(room)
    svc = _svc(request)
    raw = await read_limited(request, post_limit(svc.settings.max_frame_bytes,
                                                 svc.settings.max_body_bytes))
    try:
        payload = decode_json(raw)
    except (ValueError, RecursionError):
        raise HTTPError(400, "bad_frame", "invalid JSON") from None
    if not isinstance(payload, dict) or "body" not in payload:
        raise HTTPError(400, "bad_frame", "expected {\"body\": ..., \"client_id\": ...}")
    cid = payload.get("client_id")
    if cid is not None and (not isinstance(cid, str) or not 1 <= len(cid) <= 128
                            or not cid.isascii() or not cid.isprintable() or " " in cid):
        raise HTTPError(400, "bad_frame", "'client_id' must be 1-128 printable ASCII characters")
    if not svc.http_publish_limit.take(who.user):
        svc.metrics.rate_limited.inc()
        raise HTTPError(429, "rate_limited", "publishing too fast; slow down and retry")
    try:
        body = checked_body(payload["body"], cid, svc.settings.max_body_bytes)
    except FrameError as exc:
        raise HTTPError(413 if exc.code == "too_large" else 400, exc.code, exc.reason) from None
    try:
        res = await svc.publish(who, room, body, cid)
    except Forbidden:
        raise HTTPError(403, "forbidden", "not allowed to publish here") from None
    except StorageUnavailable:
        raise HTTPError(503, "unavailable", "storage could not confirm; retry with the same client_id") from None
    return JSONResponse({"id": res.id, "duplicate": res.duplicate}, status_code=201)


@router.get("/presence")
async def presence(request: Request) -> Any:
    _who(request)
    try:
        return {"users": await _svc(request).online_users()}
    except StorageUnavailable:
        raise HTTPError(503, "unavailable", "storage unavailable") from None


@router.get("/rooms/{room}/members")
async def members(request: Request, room: str) -> Any:
    who = _who(request)
    _room(room)
    if not who.may_join(room):
        raise HTTPError(403, "forbidden", "not allowed in this room")
    try:
        return {"members": await _svc(request).room_members(room)}
    except StorageUnavailable:
        raise HTTPError(503, "unavailable", "storage unavailable") from None
