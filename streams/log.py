"""The durable room log: one Redis Stream per room.

Contract:
- ``append`` is atomic (one server-side script): idempotency check on
  ``(sender, client_id)``, XADD with approximate trimming, and the Pub/Sub notification
  carrying the new entry and the id before it. Either all of it happens or
  none. A repeat of a ``client_id`` by the same sender within 24 h stores
  nothing and returns the first id; the same ``client_id`` from another
  sender is a different message (records are per room and sender).
- ``read_after`` returns entries strictly after an id, in id order.
- ``bounds`` tells what a reader who last saw an id has lost to trimming,
  and which incarnation (epoch) of the stream it is, in one atomic read.
- The append that creates a stream also gives it a fresh epoch record (see
  streams/joinpoint.py); ``ack`` refuses ids beyond the stream's end.

Replica durability (``replica_acks`` set): an append is confirmed only when
``WAIT`` says enough replicas have it. WAIT cannot run inside a script, so
the order is append (no notification), WAIT on the same connection, then
``confirm``: move the room's watermark forward, WAIT again (so the watermark
a reader stops at survives a failover too), and notify. Entries past the
watermark may still vanish in a failover, so every read stops at it: no
client is ever handed an entry that a failover can erase.
"""

from __future__ import annotations

from dataclasses import dataclass
import itertools
import secrets
from typing import Any
import uuid
from collections.abc import Callable
from importlib import resources

from redis.asyncio import Redis

from .batch import ScriptBatcher
from .joinpoint import Bounds, Cursor
from .entries import decode_flat, decode_stored
from .keys import Keys
from .model import ZERO, Envelope, exclusive_start, format_id, parse_id
from .retry import RetryPolicy, StorageUnavailable

IDEMPOTENCY_TTL_S = 24 * 3600
# Appends without a client_id get an internal one, so that the retry of an
# append whose reply was lost cannot store it twice; it only needs to outlive
# the retry budget.
INTERNAL_ID_TTL_S = 120


def _script(name: str, sharded: bool = False) -> str:
    """A script's text; ``sharded``: notifications go out by ``SPUBLISH``."""
    text = resources.files(__package__).joinpath("lua", name).read_text()
    return text.replace("'PUBLISH'", "'SPUBLISH'") if sharded else text


@dataclass(frozen=True, slots=True)
class Appended:
    id: str
    duplicate: bool
    prev: str


def new_epoch() -> str:
    """A fresh epoch token (random here: Lua's random is deterministic)."""
    return uuid.uuid4().hex


class _Tokens:
    """Unique tokens, cheaply: 64 random bits per log, then a counter.

    Each append needs one, both for its internal idempotency id and as the
    epoch token of the stream it may create; a uuid4 per append costs a
    system call and more than all the rest of the token work.
    """

    def __init__(self) -> None:
        self._prefix = secrets.token_hex(8)
        self._count = itertools.count(secrets.randbits(40))

    def next(self) -> str:
        return f"{self._prefix}{next(self._count):016x}"


class BeyondEnd(ValueError):
    """An ack for an id the stream never generated (erased by a failover or
    made up); the cursor was left as it was."""


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
        *,
        sharded: bool = False,
        node_for: Callable[[str], Redis] | None = None,
    ) -> None:
        self._redis = redis
        # The client whose connection goes to the node that owns a key
        # (cluster mode); the one client otherwise.
        self._node_for: Callable[[str], Redis] = node_for or (lambda _key: redis)
        self._keys = keys
        self._maxlen = maxlen
        self._policy = policy
        self._acks = replica_acks
        self._append = redis.register_script(_script("append.lua", sharded))
        self._batch = ScriptBatcher(redis, _script("append.lua", sharded), policy)
        self._tokens = _Tokens()
        self._confirm = redis.register_script(_script("confirm.lua", sharded))
        self._read = redis.register_script(_script("read.lua"))
        self._ack = redis.register_script(_script("ack.lua"))
        bounds = _script("bounds.lua")
        self._bounds_read = redis.register_script("#!lua flags=no-writes\n" + bounds)
        self._bounds_adopt = redis.register_script("#!lua\n" + bounds)

    @property
    def ordered(self) -> bool:
        """Whether appends are stored in the order they are called, however
        many are in flight (batched: leader durability). Replica durability
        runs each append on its own connection: a caller that needs order
        waits for one before the next."""
        return self._acks is None

    async def _retry(self, call):  # type: ignore[no-untyped-def]
        return await self._policy.run(call)

    async def append(
        self, room: str, sender: str, body_json: str, client_id: str | None
    ) -> Appended:
        """Store a message; raise NotConfirmed when replicas did not ack it.

        With leader durability the call joins the appends of the same loop
        iteration in one pipeline (:mod:`streams.batch`), which also retries.
        """
        k = self._keys
        token = self._tokens.next()
        if client_id:
            cid, ttl = "c:" + client_id, IDEMPOTENCY_TTL_S
        else:
            cid, ttl = "i:" + token, INTERNAL_ID_TTL_S
        keys = [k.log(room), k.idem(room, sender, cid), k.epoch(room), k.confirmed(room)]
        acks = self._acks
        if acks is None:
            args = [self._maxlen, sender, body_json, cid, ttl, k.channel(room), token]
            sid, dup, prev = await self._batch.call(keys, args, len(body_json))
            return Appended(_s(sid), bool(int(dup)), _s(prev))
        args = [self._maxlen, sender, body_json, cid, ttl, "", token, "0"]

        async def call() -> Appended:
            async with self._node_for(keys[0]).pipeline(transaction=False) as pipe:
                await self._append(keys=keys, args=args, client=pipe)
                args[-1] = "1"  # a later attempt is a retry: check the record
                pipe.execute_command("WAIT", acks.replicas, acks.timeout_ms)
                (sid, dup, prev), acked = await pipe.execute()
            if int(acked) < acks.replicas:
                raise NotConfirmed(f"{acked} of {acks.replicas} replicas acknowledged")
            await self._confirm_replicated(room, _s(sid), acks)
            return Appended(_s(sid), bool(int(dup)), _s(prev))

        return await self._retry(call)

    async def _confirm_replicated(self, room: str, sid: str, acks: ReplicaAcks) -> None:
        """Move the watermark to ``sid``, WAIT until the replicas have it, and
        only then announce the entry: a reader after a failover stops at the
        watermark, so an entry anyone was told of must not be past it."""
        k = self._keys
        confirm_keys = [k.log(room), k.confirmed(room)]
        async with self._node_for(confirm_keys[0]).pipeline(transaction=False) as pipe:
            await self._confirm(keys=confirm_keys, args=[sid, "", "set"], client=pipe)
            pipe.execute_command("WAIT", acks.replicas, acks.timeout_ms)
            _, acked = await pipe.execute()
        if int(acked) < acks.replicas:
            raise NotConfirmed(f"watermark: {acked} of {acks.replicas} replicas acknowledged")
        await self._confirm(keys=confirm_keys, args=[sid, k.channel(room), "announce"])

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
                return [decode_stored(room, sid, fields) for sid, fields in rows]
            raw = await self._read(keys=[key, self._keys.confirmed(room)], args=[start, count])
            return [decode_flat(room, sid, flat) for sid, flat in raw]

        return await self._retry(call)

    async def read_before(self, room: str, before: str | None, count: int) -> list[Envelope]:
        """The ``count`` newest entries with ids strictly smaller than
        ``before`` (``None``: the newest of the room), oldest first.

        With replica durability nothing past the confirmed watermark is
        returned, as for :meth:`read_after`: the watermark is read first and
        the range ends at the smaller of the two. It only moves forward, so
        an entry at or below it is readable for good.
        """
        key = self._keys.log(room)
        limit = None if before is None else parse_id(before)
        if limit == ZERO:
            return []

        async def call() -> list[Envelope]:
            end = "+" if limit is None else f"({format_id(limit)}"
            if self._acks is not None:
                upto = await self._redis.get(self._keys.confirmed(room))
                if upto is None:
                    return []
                if limit is None or parse_id(_s(upto)) < limit:
                    end = _s(upto)
            rows = await self._redis.xrevrange(key, max=end, min="-", count=count)
            return [decode_stored(room, sid, fields) for sid, fields in reversed(rows)]

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

    async def start_of_latest(self, room: str, count: int) -> str:
        """The id after which the room's newest ``count`` readable entries
        begin, ``"0"`` when it holds no more than that: a join from here
        replays exactly the latest ``count``."""
        last = await self.last_id(room)
        if last == "0-0":
            return "0"
        key = self._keys.log(room)

        async def call() -> str:
            rows = await self._redis.xrevrange(key, max=last, min="-", count=count + 1)
            return _s(rows[count][0]) if len(rows) > count else "0"

        return await self._retry(call)

    async def bounds(self, room: str) -> Bounds:
        """The stream's bounds and epoch, read atomically (one script).

        The usual read is a read-only script; a stream older than epochs is
        given its record (born unknown) by the writing variant, once.
        """
        keys = [self._keys.log(room), self._keys.epoch(room)]

        async def call() -> Bounds:
            raw = await self._bounds_read(keys=keys, args=[""])
            if raw and not _s(raw[4]):
                raw = await self._bounds_adopt(keys=keys, args=[new_epoch()])
            return _bounds(raw)

        return await self._retry(call)

    async def ack(self, room: str, user: str, sid: str) -> str:
        """Move the user's cursor forward to ``sid``; return the stored cursor id.

        Raise :class:`BeyondEnd` when ``sid`` is beyond the stream's last
        generated id. A stored cursor from another epoch, or beyond the end,
        is replaced.
        """
        k = self._keys
        keys = [k.cursor(room), k.log(room), k.epoch(room)]
        sid = format_id(parse_id(sid))

        async def call() -> str:
            stored, cursor = await self._ack(keys=keys, args=[user, sid, new_epoch()])
            if not int(stored):
                raise BeyondEnd(sid)
            return _s(cursor)

        return await self._retry(call)

    async def cursor(self, room: str, user: str) -> Cursor | None:
        key = self._keys.cursor(room)

        async def call() -> Cursor | None:
            v = await self._redis.hget(key, user)
            return None if v is None else parse_cursor(_s(v))

        return await self._retry(call)


def parse_cursor(text: str) -> Cursor:
    """``<id>/<epoch>``, or a bare ``<id>`` stored before cursors had an epoch."""
    sid, sep, epoch = text.partition("/")
    return Cursor(sid, epoch if sep and epoch else None)


def _bounds(raw: list[Any]) -> Bounds:
    """Decode the reply of bounds.lua (``[]``: no stream)."""
    if not raw:
        return Bounds("0-0", "0-0", 0)
    length, last, added, first, token, born = raw
    n, last_id, first_id = int(length), _s(last), _s(first)
    if int(added) <= n:
        mark = "0-0"
    elif first_id:
        mark = first_id
    else:  # everything trimmed: only ids at the end are safe
        mark = last_id
    return Bounds(last_id=last_id, trim_mark=mark, length=n, epoch=_s(token), born=_s(born))


def _s(v: bytes | str) -> str:
    return v.decode() if isinstance(v, bytes) else v
