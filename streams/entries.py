"""A room entry as Redis holds it and as the live path carries it: the one
codec both directions share.

Stored entry (``P:{R}:log``, written by ``lua/append.lua``)::

    u  sender (a user id)
    b  body, as compact JSON text (never decoded on the way out)
    c  ``c:<client_id>``, only when the client gave one (the idempotency
       record's name; not read back). A publish without one has an internal
       ``i:<token>`` record but no ``c`` field.

Notification (``P:{R}:live``, published by ``lua/append.lua`` or, in replica
mode, ``lua/confirm.lua`` from the stored fields)::

    id \\n prev \\n sender \\n body

The first three never contain a newline (ids and user ids are validated);
the body may, so it comes last. The Lua scripts cannot import this module:
they follow the layout above, and ``tests/unit/test_model.py`` pins it.
"""

from __future__ import annotations

from .model import Envelope

SENDER = b"u"
BODY = b"b"


def decode_notification(room: str, payload: bytes) -> Envelope:
    """Decode a Pub/Sub notification; ValueError when it is not one."""
    text = payload.decode("utf-8")
    sid, prev, sender, body = text.split("\n", 3)
    return Envelope(room=room, id=sid, prev=prev, sender=sender, body=body)


def decode_stored(room: str, sid: bytes | str, fields: dict[bytes, bytes]) -> Envelope:
    """An entry read from the stream (``prev`` unknown: reads come in order)."""
    return Envelope(
        room=room,
        id=_text(sid),
        prev="",
        sender=_text(fields.get(SENDER, b"")),
        body=_text(fields.get(BODY, b"null")),
    )


def decode_flat(room: str, sid: bytes | str, flat: list[bytes]) -> Envelope:
    """An entry as a script returns it: fields as a flat list."""
    return decode_stored(room, sid, dict(zip(flat[::2], flat[1::2])))


def _text(v: bytes | str) -> str:
    return v.decode() if isinstance(v, bytes) else v
