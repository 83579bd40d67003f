"""Group the appends of one event-loop iteration into one Redis pipeline.

A publish costs Redis and this process far more in per-command overhead
(a pooled connection, a socket timeout, one write and one read, a retry
wrapper) than in the script itself. :class:`ScriptBatcher` sends every
script call submitted while the previous batch was on the wire as one
pipeline of ``EVALSHA`` calls: packed by hiredis into one write on a pooled
connection, the replies read in order.

Contract:

- **Order.** Members go out in submission order, in one pipeline on one
  connection, and a batch is sent only once the one before it is finished
  (one batch in flight). So two calls are stored in the order they were
  submitted, whichever batch they fall in, and a caller that submits in
  order is answered in order. A retry sends the members still unanswered in
  their order; a failure of the connection or of the master fails a suffix
  of a pipeline, so the order survives it.
- **One answer each.** Every member gets its own reply or its own error. A
  reply error that is not transient (a body Redis refuses, a script error)
  fails that member alone, with :class:`StorageUnavailable` as
  :class:`RetryPolicy` would raise it; the others are answered.
- **Retries.** Errors a failover explains (the connection dropped or timed
  out mid-batch, ``READONLY``, ``NOREPLICAS``...) retry the unanswered
  members under the batcher's :class:`RetryPolicy`, whose budget starts
  when the batch is first sent. A member that ran before its reply was lost
  runs again: the script must make that safe (``append.lua`` finds its
  idempotency record and stores nothing new). The script is told which
  attempt it is: one last argument, ``0`` on a member's first attempt and
  ``1`` on every later one, so it may skip work only a retry needs. When
  the budget is spent, every unanswered member gets ``StorageUnavailable``.
- **Cancellation.** A caller that stops waiting (its future is cancelled)
  is dropped if its batch has not been sent yet; once sent, it may still be
  stored, as with any call whose reply is abandoned.
- ``NOSCRIPT`` (a restarted or promoted server) loads the script and runs
  the members again at once, within the same attempt.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from hiredis import pack_command
from redis import exceptions as rex
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster

from .retry import RetryPolicy, StorageUnavailable, is_transient

log = logging.getLogger("streamgate.redis")

# A batch ends at this many members or once its arguments pass this many
# bytes, whichever comes first: a few large bodies must not make one
# pipeline (and its one reply read) arbitrarily long.
MAX_MEMBERS = 256
MAX_BYTES = 1 << 20


@dataclass(slots=True)
class _Member:
    keys: Sequence[str]
    args: Sequence[Any]
    size: int
    future: asyncio.Future[Any]
    tries: int = field(default=0)


class ScriptBatcher:
    """One script, called in batches; see the module docstring."""

    def __init__(self, redis: Redis | RedisCluster, script: str, policy: RetryPolicy) -> None:
        self._redis = redis
        self._script = redis.register_script(script)
        self._policy = policy
        self._queue: list[_Member] = []
        self._task: asyncio.Task[None] | None = None

    def submit(self, keys: Sequence[str], args: Sequence[Any], size: int = 0) -> asyncio.Future[Any]:
        """Queue one call; the future gets its reply (or its error)."""
        loop = asyncio.get_running_loop()
        member = _Member(keys, args, size, loop.create_future())
        self._queue.append(member)
        if self._task is None:
            # Starts at the next loop iteration: whatever else is submitted
            # in this one joins the same batch.
            self._task = loop.create_task(self._run(), name="append-batch")
        return member.future

    async def call(self, keys: Sequence[str], args: Sequence[Any], size: int = 0) -> Any:
        return await self.submit(keys, args, size)

    async def _run(self) -> None:
        try:
            while self._queue:
                await self._flush(self._take())
        finally:
            self._task = None
            if self._queue:  # cancelled (the loop is closing): nobody will send these
                for m in self._queue:
                    if not m.future.done():
                        m.future.cancel()
                self._queue.clear()

    def _take(self) -> list[_Member]:
        queue, size, n = self._queue, 0, 0
        while n < len(queue) and n < MAX_MEMBERS and size <= MAX_BYTES:
            size += queue[n].size
            n += 1
        batch, self._queue = queue[:n], queue[n:]
        return batch

    async def _flush(self, batch: list[_Member]) -> None:
        try:
            await self._policy.run(lambda: self._attempt(batch))
        except BaseException as exc:
            for m in batch:
                if not m.future.done():
                    if isinstance(exc, asyncio.CancelledError):
                        m.future.cancel()
                    else:
                        m.future.set_exception(exc)
            if not isinstance(exc, Exception):
                raise

    async def _attempt(self, batch: list[_Member]) -> None:
        """Send the unanswered members; raise the first transient error if
        any of them is left unanswered, so that the policy retries."""
        for _ in range(2):  # the second pass only after a NOSCRIPT
            todo = [m for m in batch if not m.future.done()]
            if not todo:
                return
            calls = [(b"EVALSHA", self._script.sha, len(m.keys), *m.keys, *m.args,
                      b"1" if m.tries else b"0") for m in todo]
            for m in todo:
                m.tries += 1
            if isinstance(self._redis, RedisCluster):
                replies = await self._per_node(calls)
            else:
                replies = await self._round_trip(b"".join([pack_command(c) for c in calls]), len(calls))
            again: BaseException | None = None
            missing = False
            for m, reply in zip(todo, replies):
                if m.future.done():
                    continue
                if isinstance(reply, rex.NoScriptError):
                    missing = True
                elif not isinstance(reply, Exception):
                    m.future.set_result(reply)
                elif is_transient(reply):
                    again = again or reply
                else:
                    log.warning("redis refused a script call: %s", reply)
                    m.future.set_exception(StorageUnavailable(str(reply)))
            if again is not None:
                raise again
            if not missing:
                return
            await self._redis.script_load(self._script.script)
        raise StorageUnavailable("the script could not be loaded")

    async def _per_node(self, calls: list[tuple[Any, ...]]) -> list[Any]:
        """A cluster's batch: its pipeline sends each call to the node that
        owns the call's keys (one slot per call, a room's), one round trip
        per node, replies in call order."""
        async with self._redis.pipeline(transaction=False) as pipe:
            for name, *args in calls:
                pipe.execute_command(name.decode(), *args)
            return list(await pipe.execute(raise_on_error=False))

    async def _round_trip(self, packed: bytes, n: int) -> list[Any]:
        """Write ``n`` packed commands on a pooled connection at once and read
        their ``n`` replies in order; an error reply takes its command's place.

        What redis-py's pipeline does, without what a batch of script calls
        never needs (per-command packing and response callbacks, its own
        retry wrapper, fieldset bookkeeping): for one or two calls a batch,
        as in rooms of a few members, that machinery cost more than the rest
        of the publish. The connection comes from the client's pool, so a
        failover that empties the pool (streams/connection.py) reaches it.
        """
        pool = self._redis.connection_pool
        conn = await pool.get_connection()
        try:
            await conn.send_packed_command(packed, check_health=False)
            replies: list[Any] = []
            for _ in range(n):
                try:
                    replies.append(await conn.read_response())
                except rex.ResponseError as exc:
                    replies.append(exc)
            return replies
        except BaseException:
            # Replies may still be on the wire: never hand this connection on.
            try:
                await conn.disconnect(nowait=True)
            except Exception:
                pass  # the error that brought us here is the one to raise
            raise
        finally:
            await pool.release(conn)
