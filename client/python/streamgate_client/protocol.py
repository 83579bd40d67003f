"""The wire contract from the client's side: frames out, frames in, close codes.

Pure: no I/O. Decoding is strict about the fields the client relies on and
lenient about the rest, so a server that adds optional fields or new frame
types (as the contract allows) does not break the client.
"""

from __future__ import annotations

import enum
import json
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from .events import Joined, Message
from .ids import is_id

Frame = dict[str, Any]

SUBPROTOCOL = "streamgate.v1"
TOKEN_SUBPROTOCOL_PREFIX = "bearer."

# Close codes the client acts on.
UNAUTHORIZED = 4401
ORIGIN_NOT_ALLOWED = 4403
TOO_SLOW = 4408
RESTARTING = 1012
ABNORMAL = 1006

# Names as the contract defines them. Checked before sending: the server's
# error for a bad name in a publish echoes the room, not the client_id, so it
# could not be matched to the publish that caused it.
_USER_RE = re.compile(r"[A-Za-z0-9_.:-]{1,64}")
_ROOM_RE = re.compile(r"[A-Za-z0-9_.:-]{1,128}")
ALL_ROOM = "@all"


def valid_user(user: object) -> bool:
    return isinstance(user, str) and _USER_RE.fullmatch(user) is not None and user != "all"


def valid_room(room: object) -> bool:
    """Ordinary rooms, ``@all``, and ``@<user>`` inboxes."""
    if not isinstance(room, str):
        return False
    if room.startswith("@"):
        return room == ALL_ROOM or valid_user(room[1:])
    return _ROOM_RE.fullmatch(room) is not None


def check_room(room: str) -> None:
    if not valid_room(room):
        raise ValueError(f"invalid room name: {room!r}")


def check_user(user: str) -> None:
    if not valid_user(user):
        raise ValueError(f"invalid user id: {user!r}")


# Error codes after which the same request may succeed later.
RETRYABLE_ERRORS = frozenset({"unavailable", "rate_limited"})


class CloseAction(enum.Enum):
    RECONNECT = "reconnect"  # resume anywhere after a backoff
    REFRESH_TOKEN = "refresh_token"  # fetch a fresh token, then reconnect
    FATAL = "fatal"  # stop and tell the application


def close_action(code: int | None) -> CloseAction:
    """What a closed connection means for the client.

    Only the two refusals are special. Everything else, including a normal
    close the client did not ask for, 1012 (instance restarting), 4408 (too
    slow), 1011, 1013 and a dropped TCP connection (1006), is resumable.
    """
    if code == UNAUTHORIZED:
        return CloseAction.REFRESH_TOKEN
    if code == ORIGIN_NOT_ALLOWED:
        return CloseAction.FATAL
    return CloseAction.RECONNECT


def with_identity(url: str, *, token: str | None = None, user: str | None = None) -> str:
    """``url`` with ``?token=`` (jwt mode) or ``?user=`` (development mode) set."""
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k not in ("token", "user")]
    if token is not None:
        query.append(("token", token))
    elif user is not None:
        query.append(("user", user))
    return urlunsplit(parts._replace(query=urlencode(query)))


# -- client frames --------------------------------------------------------------


def encode(frame: Frame) -> str:
    """Compact JSON text. NaN and Infinity are refused here: they are not JSON."""
    return json.dumps(frame, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def join_frame(room: str, since: str | None, epoch: str | None = None) -> Frame:
    """``epoch``: the one ``joined`` gave with ``since``; sent only with an id
    (``"$"`` needs none), so the server can tell a recreated stream apart."""
    frame: Frame = {"type": "join", "room": room}
    if since is not None:
        frame["since"] = since
        if epoch is not None and since != "$":
            frame["epoch"] = epoch
    return frame


def leave_frame(room: str) -> Frame:
    return {"type": "leave", "room": room}


def ack_frame(room: str, id_: str) -> Frame:
    return {"type": "ack", "room": room, "id": id_}


def refresh_frame(token: str) -> Frame:
    return {"type": "refresh", "token": token}


# -- server frames --------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Welcome:
    user: str
    instance: str


@dataclass(frozen=True, slots=True)
class Left:
    room: str


@dataclass(frozen=True, slots=True)
class Published:
    room: str
    id: str
    client_id: str | None
    duplicate: bool


@dataclass(frozen=True, slots=True)
class ErrorReply:
    code: str
    reason: str
    ref: str | None


@dataclass(frozen=True, slots=True)
class TokenRefreshed:
    """The answer to ``refresh``: the new token's expiry, or None."""

    exp: int | None


@dataclass(frozen=True, slots=True)
class Other:
    """A frame the client does not act on (``pong``, or a type added later)."""

    type: str


ServerFrame = Welcome | Message | Joined | Left | Published | ErrorReply | TokenRefreshed | Other


class BadFrame(ValueError):
    """The server sent something that is not a frame of the contract."""


def _str(frame: Frame, name: str) -> str:
    value = frame.get(name)
    if not isinstance(value, str):
        raise BadFrame(f"{frame.get('type')!r} frame without a string {name!r}")
    return value


def _id(frame: Frame, name: str = "id") -> str:
    value = _str(frame, name)
    if not is_id(value):
        raise BadFrame(f"{frame.get('type')!r} frame with a bad {name!r}: {value!r}")
    return value


def decode(raw: str | bytes) -> ServerFrame:
    """One server frame; raise BadFrame when it is unusable."""
    if isinstance(raw, bytes):
        raise BadFrame("binary frame")
    try:
        frame = json.loads(raw)
    except ValueError:
        raise BadFrame("invalid JSON") from None
    if not isinstance(frame, dict) or not isinstance(frame.get("type"), str):
        raise BadFrame("not a frame object")
    kind = frame["type"]
    if kind == "message":
        ts = frame.get("ts")
        if not isinstance(ts, int) or "body" not in frame:
            raise BadFrame("message frame without ts or body")
        return Message(_str(frame, "room"), _id(frame), _str(frame, "from"), frame["body"], ts)
    if kind == "joined":
        last_id = frame.get("last_id")
        replayed = frame.get("replayed")
        epoch = frame.get("epoch")
        return Joined(
            room=_str(frame, "room"),
            replayed=replayed if isinstance(replayed, int) else 0,
            recovered=frame.get("recovered") is not False,
            last_id=last_id if is_id(last_id) else None,
            epoch=epoch if isinstance(epoch, str) and epoch else None,
        )
    if kind == "published":
        cid = frame.get("client_id")
        return Published(_str(frame, "room"), _id(frame), cid if isinstance(cid, str) else None,
                         frame.get("duplicate") is True)
    if kind == "error":
        ref = frame.get("ref")
        reason = frame.get("reason")
        return ErrorReply(_str(frame, "code"), reason if isinstance(reason, str) else "",
                          ref if isinstance(ref, str) else None)
    if kind == "left":
        return Left(_str(frame, "room"))
    if kind == "welcome":
        return Welcome(_str(frame, "user"), str(frame.get("instance", "")))
    if kind == "refreshed":
        exp = frame.get("exp")
        return TokenRefreshed(exp if isinstance(exp, int) and not isinstance(exp, bool) else None)
    return Other(kind)
