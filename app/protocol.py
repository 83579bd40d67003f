"""The wire protocol: client frames in, server frames out. Pure, no I/O.

Every frame is one JSON object in a text frame (see docs/protocol.md). Parsing
turns a raw frame into one of the dataclasses below or raises
:class:`FrameError` carrying the error code and the ``ref`` to echo; the
connection stays open either way.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import orjson

from streams.model import Envelope, is_id

PROTOCOL_VERSION = 1

USER_RE = re.compile(r"[A-Za-z0-9_.:-]{1,64}")
ROOM_RE = re.compile(r"[A-Za-z0-9_.:-]{1,128}")
CLIENT_ID_RE = re.compile(r"[\x21-\x7e]{1,128}")
EPOCH_RE = re.compile(r"[\x21-\x7e]{1,64}")
ALL_ROOM = "@all"

# Close codes.
CLOSE_UNAUTHORIZED = 4401
CLOSE_ORIGIN = 4403
CLOSE_TOO_SLOW = 4408
CLOSE_TOO_LARGE = 1009
CLOSE_RESTARTING = 1012
CLOSE_FULL = 1013


class FrameError(Exception):
    def __init__(self, code: str, reason: str, ref: str | None = None) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason
        self.ref = ref


def valid_user(user: object) -> bool:
    return isinstance(user, str) and USER_RE.fullmatch(user) is not None and user != "all"


def valid_room(room: object) -> bool:
    """Ordinary rooms, ``@all`` and ``@<user>`` inboxes."""
    if not isinstance(room, str):
        return False
    if room.startswith("@"):
        return room == ALL_ROOM or valid_user(room[1:])
    return ROOM_RE.fullmatch(room) is not None


def inbox(user: str) -> str:
    return "@" + user


@dataclass(frozen=True, slots=True)
class Join:
    room: str
    since: str | None  # "$", an id, or None for "resume from the ack cursor"
    epoch: str | None = None  # the epoch `joined` gave with that id, if the client has one


@dataclass(frozen=True, slots=True)
class Leave:
    room: str


@dataclass(frozen=True, slots=True)
class Publish:
    room: str
    body: str  # compact JSON text
    client_id: str | None


@dataclass(frozen=True, slots=True)
class Ack:
    room: str
    id: str


@dataclass(frozen=True, slots=True)
class Ping:
    pass


@dataclass(frozen=True, slots=True)
class Refresh:
    """A new token for the live connection: same user, later expiry."""

    token: str


ClientFrame = Join | Leave | Publish | Ack | Ping | Refresh

# Longer than any token a sane issuer signs; a bound on what is decoded.
MAX_TOKEN_CHARS = 8192


def _room(frame: dict[str, Any], field: str = "room") -> str:
    room = frame.get(field)
    if field not in frame:
        raise FrameError("bad_frame", f"missing field '{field}'")
    if not isinstance(room, str):
        raise FrameError("bad_frame", f"'{field}' must be a string")
    if not valid_room(room):
        raise FrameError("invalid_room", "invalid room name", ref=room[:200])
    return room


def _client_id(frame: dict[str, Any]) -> str | None:
    cid = frame.get("client_id")
    if cid is None:
        return None
    if not isinstance(cid, str) or not CLIENT_ID_RE.fullmatch(cid):
        raise FrameError("bad_frame", "'client_id' must be 1-128 printable ASCII characters")
    return cid


MAX_DEPTH = 32


def _depth(value: Any) -> int:
    """Nesting depth of a JSON value, without recursion."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        v, d = stack.pop()
        if isinstance(v, dict):
            v = list(v.values())
        if isinstance(v, list):
            deepest = max(deepest, d)
            if d <= MAX_DEPTH:
                stack.extend((x, d + 1) for x in v)
    return deepest


def _body(frame: dict[str, Any], ref: str | None, max_bytes: int) -> str:
    if "body" not in frame:
        raise FrameError("bad_frame", "missing field 'body'", ref=ref)
    return checked_body(frame["body"], ref, max_bytes)


def checked_body(body: Any, ref: str | None, max_bytes: int) -> str:
    """Encode a message body, refusing one too deep or too large to store."""
    if _depth(body) > MAX_DEPTH:
        raise FrameError("too_large", f"body nested deeper than {MAX_DEPTH} levels", ref=ref)
    try:
        text = encode_body(body)
    except ValueError as exc:
        raise FrameError("bad_frame", f"body is not storable JSON: {exc}", ref=ref) from None
    if len(text.encode()) > max_bytes:
        raise FrameError("too_large", f"body larger than {max_bytes} bytes", ref=ref)
    return text


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _finite(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise ValueError(f"number out of range: {text[:40]}")
    return value


def decode_json(raw: str | bytes) -> Any:
    """Strict JSON in: integers of any size kept exactly, no NaN/Infinity
    (neither as literals nor as overflowing numbers such as ``1e999``).

    The standard library parser is used on the way in (orjson would turn
    integers beyond 64 bits into floats and change a client's body); frames
    going out are built with orjson.
    """
    return json.loads(raw, parse_constant=_no_constants, parse_float=_finite)


def encode_body(body: Any) -> str:
    """Compact JSON text of a message body, as stored and as sent.

    Raises ValueError for text no UTF-8 peer could read (lone surrogates,
    which JSON's ``\\ud800`` escapes can produce).
    """
    text = json.dumps(body, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    try:
        text.encode()
    except UnicodeEncodeError:
        raise ValueError("lone surrogate in a string") from None
    return text


def parse_frame(raw: str | bytes, max_body_bytes: int = 65536) -> ClientFrame:
    """Parse one client frame; raise FrameError with the code to answer."""
    frame = _json_object(raw)
    kind = frame.get("type")
    if not isinstance(kind, str):
        raise FrameError("bad_frame", "missing field 'type'")
    if kind == "ping":
        return Ping()
    if kind == "refresh":
        token = frame.get("token")
        if not isinstance(token, str) or not token:
            raise FrameError("bad_frame", "'token' must be a non-empty string")
        if len(token) > MAX_TOKEN_CHARS:
            raise FrameError("too_large", f"'token' is limited to {MAX_TOKEN_CHARS} characters")
        return Refresh(token)
    if kind == "join":
        room = _room(frame)
        since = frame.get("since")
        if since is not None and not (since == "$" or is_id(since)):
            raise FrameError("bad_frame", "'since' must be \"$\", \"0\" or a message id", ref=room)
        epoch = frame.get("epoch")
        if epoch is not None and not (isinstance(epoch, str) and EPOCH_RE.fullmatch(epoch)):
            raise FrameError("bad_frame", "'epoch' must be 1-64 printable ASCII characters", ref=room)
        return Join(room, since, epoch)
    if kind == "leave":
        return Leave(_room(frame))
    if kind == "ack":
        room = _room(frame)
        sid = frame.get("id")
        if not is_id(sid):
            raise FrameError("bad_frame", "'id' must be a message id", ref=room)
        return Ack(room, sid)
    if kind in ("publish", "direct", "broadcast"):
        cid = _client_id(frame)
        if kind == "publish":
            room = _room(frame)
        elif kind == "direct":
            to = frame.get("to")
            if not isinstance(to, str):
                raise FrameError("bad_frame", "'to' must be a user id", ref=cid)
            if not valid_user(to):
                raise FrameError("invalid_room", "invalid user id", ref=cid or to[:200])
            room = inbox(to)
        else:
            room = ALL_ROOM
        return Publish(room, _body(frame, cid or room, max_body_bytes), cid)
    raise FrameError("unknown_type", f"unknown frame type {kind[:40]!r}")


def _dump(obj: dict[str, Any]) -> str:
    return orjson.dumps(obj).decode()


def message_frame(env: Envelope) -> str:
    """The ``message`` frame, built once per fan-out and shared by every socket.

    The body is spliced in as the JSON text it was stored as, so it is never
    decoded and re-encoded on the way out.
    """
    return (
        '{"type":"message","room":' + orjson.dumps(env.room).decode()
        + ',"id":"' + env.id
        + '","from":' + orjson.dumps(env.sender).decode()
        + ',"body":' + env.body
        + ',"ts":' + str(env.ts) + "}"
    )


def wire_text_frame(text: str) -> bytes:
    """The bytes of an unmasked, unfragmented server text frame carrying ``text``.

    Server frames are never masked (RFC 6455 5.1), so these bytes are the same
    for every socket: built once per fan-out, written to each transport as is.
    """
    data = text.encode()
    n = len(data)
    if n < 126:
        head = bytes((0x81, n))
    elif n < 65536:
        head = bytes((0x81, 126)) + n.to_bytes(2, "big")
    else:
        head = bytes((0x81, 127)) + n.to_bytes(8, "big")
    return head + data


# -- the tutorial's interface (app/tutorial.py, docs/migrating.md) ----------
#
# Its clients send ``{"type":"broadcast","message":M}`` and
# ``{"type":"direct","to":U,"message":M}`` on ``/ws/{user_id}`` and read
# text lines; on ``/ws/{room}/{user_id}`` they send a message and read JSON
# objects with ``id``, ``timestamp`` and ``message``. ``M`` is stored as the
# message body, so native clients of the same rooms see it unchanged.

# A tutorial path with an invalid room or id, or a room the user may not join.
CLOSE_POLICY = 1008


def chat_text(body: Any) -> str:
    """A body as one line of chat: a string as is, ``{"text": T}`` as T,
    anything else as compact JSON (what the demo page shows too)."""
    if isinstance(body, str):
        return body
    if isinstance(body, dict) and isinstance(body.get("text"), str):
        return str(body["text"])
    return encode_body(body)


def parse_tutorial_chat(raw: str, max_body_bytes: int) -> Publish:
    """A frame of ``/ws/{user_id}``: broadcast to ``@all`` or direct to ``@U``."""
    frame = _json_object(raw)
    kind = frame.get("type")
    if kind == "broadcast":
        room = ALL_ROOM
    elif kind == "direct":
        to = frame.get("to")
        if not valid_user(to):
            raise FrameError("invalid_room", "'to' must be a valid user id")
        room = inbox(str(to))
    else:
        raise FrameError("unknown_type", "expected type 'broadcast' or 'direct'")
    if "message" not in frame:
        raise FrameError("bad_frame", "missing field 'message'", ref=room)
    return Publish(room, checked_body(frame["message"], room, max_body_bytes), None)


def parse_tutorial_room(raw: str, room: str, max_body_bytes: int) -> Publish:
    """A frame of ``/ws/{room}/{user_id}``: ``{"message": M}``, or any other
    text, which is stored as a string message."""
    try:
        frame = decode_json(raw)
    except (ValueError, RecursionError):
        frame = None
    message: Any = frame["message"] if isinstance(frame, dict) and "message" in frame else raw
    return Publish(room, checked_body(message, room, max_body_bytes), None)


def _json_object(raw: str | bytes) -> dict[str, Any]:
    """The frame as a JSON object, or the ``bad_frame`` refusal."""
    try:
        frame = decode_json(raw)
    except (ValueError, RecursionError):
        raise FrameError("bad_frame", "invalid JSON") from None
    if not isinstance(frame, dict):
        raise FrameError("bad_frame", "a frame must be a JSON object")
    return frame


def tutorial_chat_line(frame: str) -> str | None:
    """What a ``/ws/{user_id}`` client reads for one of our frames:
    ``alice: hi`` for ``@all``, ``[Private from alice]: hi`` for the inbox,
    error frames as they are, nothing for the rest (welcome, joined)."""
    obj = decode_json(frame)
    if obj.get("type") == "error":
        return frame
    if obj.get("type") != "message":
        return None
    text = chat_text(obj["body"])
    if obj["room"] == ALL_ROOM:
        return f"{obj['from']}: {text}"
    return f"[Private from {obj['from']}]: {text}"


def tutorial_room_item(frame: str) -> str | None:
    """What a ``/ws/{room}/{user_id}`` client reads for one of our frames:
    ``{"id", "user_id", "message", "timestamp"}`` (ISO 8601, UTC) per
    message, error frames as they are, nothing for the rest."""
    obj = decode_json(frame)
    if obj.get("type") == "error":
        return frame
    if obj.get("type") != "message":
        return None
    stamp = datetime.fromtimestamp(obj["ts"] / 1000, timezone.utc).isoformat(timespec="milliseconds")
    return ('{"id":"' + obj["id"] + '","user_id":' + orjson.dumps(obj["from"]).decode()
            + ',"message":' + encode_body(obj["body"])
            + ',"timestamp":"' + stamp + '"}')


def welcome_frame(user: str, instance: str) -> str:
    return _dump({"type": "welcome", "user": user, "instance": instance, "protocol": PROTOCOL_VERSION})


def joined_frame(room: str, replayed: int, recovered: bool, last_id: str,
                 epoch: str | None = None) -> str:
    """``last_id`` (an addition to v1): the room position the client is now
    at, so a client that received nothing yet can still resume from here.
    ``epoch``: the incarnation of the room's stream (None or "": no stream
    yet, sent as null),
    to be sent back with ``since`` on the next join."""
    return _dump({"type": "joined", "room": room, "replayed": replayed, "recovered": recovered,
                  "last_id": last_id, "epoch": epoch or None})


def left_frame(room: str) -> str:
    return _dump({"type": "left", "room": room})


def published_frame(room: str, sid: str, client_id: str | None, duplicate: bool) -> str:
    return _dump({"type": "published", "room": room, "id": sid, "client_id": client_id,
                  "duplicate": duplicate})


def error_frame(code: str, reason: str, ref: str | None = None) -> str:
    if ref is not None:
        # Echo what the client sent, but never text that cannot be encoded.
        ref = ref.encode("utf-8", "replace").decode("utf-8")
    return _dump({"type": "error", "code": code, "reason": reason, "ref": ref})


def refreshed_frame(expires_at: float | None) -> str:
    """The answer to ``refresh``: ``exp`` is the new token's expiry (seconds
    since the epoch, as in the token) or null where nothing expires."""
    exp = int(expires_at) if expires_at is not None else None
    return _dump({"type": "refreshed", "exp": exp})


PONG_FRAME = _dump({"type": "pong"})
