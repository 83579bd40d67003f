"""The durable room log: one Redis Stream per room.

Contract:
- ``append`` is atomic (one server-side script): idempotency check on
  ``(sender, client_id)``, XADD with approximate trimming, and the Pub/Sub notification
  carrying the new entry and the id before it. Either all of it happens or
  none. A repeat of a ``client_id`` by the same sender within 24 h stores
  nothing and returns the first id; the same ``client_id`` from another
  sender is a different message (records are per room and sender).
- ``read_after`` returns entries strictly after an id, in id order.
- ``bounds`` tells what a reader who last saw an id has lost to trimming.

Replica durability (``replica_acks`` set): an append is confirmed only when
``WAIT`` says enough replicas have it. WAIT cannot run inside a script, so
the order is append (no notification), WAIT on the same connection, then
``confirm``: move the room's watermark forward and notify. Entries past the
watermark may still vanish in a failover, so every read stops at it: no
client is ever handed an entry that a failover can erase.
"""

from __future__ import annotations

from dataclasses import dataclass
import uuid
from importlib import resources

from redis.asyncio import Redis
from redis import exceptions as rex

from .keys import Keys
from .model import Envelope, exclusive_start, format_id, parse_id
from .retry import RetryPolicy, StorageUnavailable

IDEMPOTENCY_TTL_S = 24 * 3600
# Appends without a client_id get an internal one, so that the retry of an
# append whose reply was lost cannot store it twice; it only needs to outlive
# the retry budget.
INTERNAL_ID_TTL_S = 120


def _script(name: str) -> str:
    return resources.files(__package__).joinpath("lua", name).read_text()


@dataclass(frozen=True, slots=True)
class Appended:
    id: str
    duplicate: bool
    prev: str


@dataclass(frozen=True, slots=True)
class Bounds:
    """What the stream knows about its own history.

    ``last_id``: the last id ever generated (not only the last retained).
    ``trim_mark``: the first retained id when older entries were trimmed
    away, else ``0-0``. Redis does not record the largest trimmed id (its
    ``max-deleted-entry-id`` only follows XDEL), so a reader who last saw an
    id below the first retained one is counted as having missed something:
    when in doubt, say so rather than claim a gap-free resume.
    """

    last_id: str
    trim_mark: str
    length: int

    def recovered(self, since: str) -> bool:
        """Can a reader who last saw ``since`` get everything after it?

        No when entries after ``since`` may have been trimmed, and no when
        ``since`` is beyond the last id the stream ever generated: such an id
        was erased by a failover or made up, and replaying from it could
        skip entries the new master appended with a clock that runs behind.
        """
        s = parse_id(since)
        if s > parse_id(self.last_id):
            return False
        return parse_id(self.trim_mark) <= s


class NotConfirmed(StorageUnavailable):
    """WAIT fell short: the entry is stored but may not survive a failover."""


@dataclass(frozen=True, slots=True)
class ReplicaAcks:
    replicas: int
    timeout_ms: int


class RoomLog:
    def __init__(
        self,
        redis: Redis,
        keys: Keys,
        maxlen: int,
        policy: RetryPolicy,
        replica_acks: ReplicaAcks | None = None,
    ) -> None:
        self._redis = redis
        self._keys = keys
        self._maxlen = maxlen
        self._policy = policy
        self._acks = replica_acks
        self._append = redis.register_script(_script("append.lua"))
        self._confirm = redis.register_script(_script("confirm.lua"))
        self._read = redis.register_script(_script("read.lua"))
        self._ack = redis.register_script(_script("ack.lua"))

    async def _retry(self, call):  # type: ignore[no-untyped-def]
        return await self._policy.run(call)

    async def append(
        self, room: str, sender: str, body_json: str, client_id: str | None
    ) -> Appended:
        """Store a message; raise NotConfirmed when replicas did not ack it."""
        k = self._keys
        if client_id:
            cid, ttl = "c:" + client_id, IDEMPOTENCY_TTL_S
        else:
            cid, ttl = "i:" + uuid.uuid4().hex, INTERNAL_ID_TTL_S
        keys = [k.log(room), k.idem(room, sender, cid)]
        acks = self._acks
        channel = k.channel(room) if acks is None else ""
        args = [self._maxlen, sender, body_json, cid, ttl, channel]

        async def call() -> Appended:
            if acks is None:
                sid, dup, prev = await self._append(keys=keys, args=args)
                return Appended(_s(sid), bool(int(dup)), _s(prev))
            async with self._redis.pipeline(transaction=False) as pipe:
                await self._append(keys=keys, args=args, client=pipe)
                pipe.execute_command("WAIT", acks.replicas, acks.timeout_ms)
                (sid, dup, prev), acked = await pipe.execute()
            if int(acked) < acks.replicas:
                raise NotConfirmed(f"{acked} of {acks.replicas} replicas acknowledged")
            await self._confirm(keys=[k.log(room), k.confirmed(room)],
                                args=[_s(sid), k.channel(room)])
            return Appended(_s(sid), bool(int(dup)), _s(prev))

        return await self._retry(call)

    async def read_after(self, room: str, after: str, count: int) -> list[Envelope]:
        """Up to ``count`` entries with ids strictly greater than ``after``.

        ``after`` may come from a client: any valid id is answered, the
        largest one with nothing, without asking Redis for a range it refuses.
        """
        key = self._keys.log(room)
        start = exclusive_start(parse_id(after))
        if start is None:
            return []

        async def call() -> list[Envelope]:
            if self._acks is None:
                rows = await self._redis.xrange(key, min=start, max="+", count=count)
                return [_entry(room, sid, fields) for sid, fields in rows]
            raw = await self._read(keys=[key, self._keys.confirmed(room)], args=[start, count])
            return [_entry(room, sid, _pairs(flat)) for sid, flat in raw]

        return await self._retry(call)

    async def last_id(self, room: str) -> str:
        """Id of the newest readable entry, ``0-0`` for an empty room."""
        key = self._keys.log(room)

        async def call() -> str:
            if self._acks is not None:
                v = await self._redis.get(self._keys.confirmed(room))
                return _s(v) if v is not None else "0-0"
            rows = await self._redis.xrevrange(key, max="+", min="-", count=1)
            return _s(rows[0][0]) if rows else "0-0"

        return await self._retry(call)

    async def bounds(self, room: str) -> Bounds:
        key = self._keys.log(room)

        async def call() -> Bounds:
            try:
                info = await self._redis.xinfo_stream(key)
            except rex.ResponseError as exc:
                if "no such key" in str(exc).lower():
                    return Bounds("0-0", "0-0", 0)
                raise
            length = int(info["length"])
            last = _s(info["last-generated-id"])
            first = info.get("first-entry")
            trimmed = int(info.get("entries-added", length)) > length
            if not trimmed:
                mark = "0-0"
            elif first:
                mark = _s(first[0])
            else:  # everything trimmed: only ids at the end are safe
                mark = last
            return Bounds(last_id=last, trim_mark=mark, length=length)

        return await self._retry(call)

    async def ack(self, room: str, user: str, sid: str) -> str:
        """Move the user's cursor forward to ``sid``; return the stored cursor."""
        key = self._keys.cursor(room)
        sid = format_id(parse_id(sid))

        async def call() -> str:
            return _s(await self._ack(keys=[key], args=[user, sid]))

        return await self._retry(call)

    async def cursor(self, room: str, user: str) -> str | None:
        key = self._keys.cursor(room)

        async def call() -> str | None:
            v = await self._redis.hget(key, user)
            return _s(v) if v is not None else None

        return await self._retry(call)


def _s(v: bytes | str) -> str:
    return v.decode() if isinstance(v, bytes) else v


def _pairs(flat: list[bytes]) -> dict[bytes, bytes]:
    return dict(zip(flat[::2], flat[1::2]))


def _entry(room: str, sid: bytes | str, fields: dict[bytes, bytes]) -> Envelope:
    return Envelope(
        room=room,
        id=_s(sid),
        prev="",
        sender=_s(fields.get(b"u", b"")),
        body=_s(fields.get(b"b", b"null")),
    )
