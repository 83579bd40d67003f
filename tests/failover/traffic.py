"""Traffic through a fault, and the accounting that follows it.

- :class:`Publisher` publishes numbered messages, one at a time, each with
  its own client_id, and repeats a message with the *same* client_id until it
  gets ``published`` (on ``unavailable``, and after reconnecting when its
  socket dropped). The body carries the client_id too, so the history can be
  checked for duplicates.
- :class:`Subscriber` joins a room and records every id it receives. With
  ``reconnect`` it resumes a dropped socket with ``since`` = the last id it
  received; without, a dropped socket is a failure the test reports.
- :func:`check_account` accounts by id: every confirmed id is in the history,
  each client_id is stored once, no subscriber received an id the history
  lacks, and each subscriber received exactly the history after its join
  point, in order.

What a node really holds is read with ``ops.local.probes.stream_entries`` and
the stall of a run measured with ``ops.drill.report.longest_gap``, the same
functions the drill uses.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from websockets.exceptions import WebSocketException

from tests.support.client import Closed, ServerError, WsClient
from tests.support.ids import assert_ids_equal, id_key
from tests.support.timeouts import scaled
from tests.support.waiting import async_wait_until

Connect = Callable[[], Awaitable[WsClient]]

# What a dropped or refused socket looks like to a client.
_SOCKET_ERRORS = (Closed, OSError, WebSocketException, TimeoutError)


@dataclass
class Sent:
    """One message: its client_id and every answer it got."""

    cid: str
    body: dict[str, Any]
    ids: list[str] = field(default_factory=list)  # the id of each `published` answer
    unavailable: list[float] = field(default_factory=list)  # seconds each `unavailable` took
    confirmed_at: float | None = None  # monotonic time of the first `published`

    @property
    def id(self) -> str | None:
        return self.ids[0] if self.ids else None


class Publisher:
    """Publishes until told to stop; every message ends up confirmed or the test fails."""

    def __init__(self, name: str, connect: Connect, room: str, *, pace: float = 0.02,
                 reply_timeout: float = 25.0, give_up_after: float = 45.0) -> None:
        self.name = name
        self._connect = connect
        self.room = room
        self.pace = pace
        self.reply_timeout = reply_timeout
        self.give_up_after = give_up_after
        self.sent: list[Sent] = []
        self.reconnects = 0
        self._client: WsClient | None = None
        self._n = 0

    @property
    def confirmed(self) -> list[Sent]:
        return [s for s in self.sent if s.ids]

    async def publish_one(self, extra: dict[str, Any] | None = None) -> Sent:
        """Publish one new message, repeating it with the same client_id until stored."""
        return await self.deliver(self.new_message(extra))

    async def deliver(self, sent: Sent) -> Sent:
        """Publish ``sent`` until it is confirmed (the same client_id every time)."""
        deadline = time.monotonic() + scaled(self.give_up_after)
        while True:
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.name}: {sent.cid} not stored after "
                                     f"{scaled(self.give_up_after):.0f}s ({len(sent.unavailable)} "
                                     f"unavailable, {self.reconnects} reconnects)")
            try:
                client = await self._ensure_client()
                started = time.monotonic()
                frame = await client.publish(self.room, sent.body, sent.cid, timeout=self.reply_timeout)
            except ServerError as exc:
                if exc.code != "unavailable":
                    raise
                sent.unavailable.append(time.monotonic() - started)
                continue
            except _SOCKET_ERRORS:
                await self._drop()
                await asyncio.sleep(0.05)  # pace reconnects to a dead endpoint
                continue
            sent.ids.append(frame["id"])
            if sent.confirmed_at is None:
                sent.confirmed_at = time.monotonic()
            return sent

    async def attempt(self, sent: Sent) -> dict[str, Any]:
        """Publish ``sent`` once, without repeating; return the answer frame."""
        client = await self._ensure_client()
        started = time.monotonic()
        try:
            frame = await client.publish(self.room, sent.body, sent.cid, timeout=self.reply_timeout)
        except ServerError as exc:
            if exc.code == "unavailable":
                sent.unavailable.append(time.monotonic() - started)
            return exc.frame
        sent.ids.append(frame["id"])
        sent.confirmed_at = time.monotonic()
        return frame

    def new_message(self, extra: dict[str, Any] | None = None) -> Sent:
        """A new message (recorded as sent) for :meth:`attempt` or :meth:`deliver`."""
        cid = f"{self.name}-{self._n}-{uuid.uuid4().hex[:8]}"
        sent = Sent(cid, {"pub": self.name, "n": self._n, "cid": cid, **(extra or {})})
        self._n += 1
        self.sent.append(sent)
        return sent

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await self.publish_one()
            if self.pace:
                await asyncio.sleep(self.pace)

    async def _ensure_client(self) -> WsClient:
        if self._client is None or self._client.closed.is_set():
            if self._client is not None:
                self.reconnects += 1
            self._client = await self._connect()
        return self._client

    async def _drop(self) -> None:
        if self._client is not None:
            await self._client.abort()
            self.reconnects += 1
            self._client = None

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None


class Subscriber:
    """Joins ``room`` and records every id received, across reconnects."""

    def __init__(self, name: str, connect: Connect, room: str, *, since: str = "0",
                 reconnect: bool = False, reconnect_within: float = 30.0) -> None:
        self.name = name
        self._connect = connect
        self.room = room
        self.since = since
        self.reconnect = reconnect
        self.reconnect_within = reconnect_within
        self.joined: list[dict[str, Any]] = []
        self.closes: list[tuple[int | None, str]] = []
        self.instances: list[str] = []  # the instance of each connection, from `welcome`
        self._earlier: list[str] = []  # ids received on connections that have closed
        self._client: WsClient | None = None
        self._watch: asyncio.Task[None] | None = None
        self._stopping = False

    @property
    def received(self) -> list[str]:
        current = self._client.ids[self.room] if self._client is not None else []
        return self._earlier + list(current)

    @property
    def client(self) -> WsClient | None:
        return self._client

    async def start(self) -> None:
        await self._open(self.since)
        self._watch = asyncio.create_task(self._supervise(), name=f"subscriber-{self.name}")

    async def _open(self, since: str) -> None:
        client = await self._connect()
        try:
            _replay, joined = await client.join(self.room, since=since, timeout=scaled(20))
        except BaseException:
            self._earlier += client.ids[self.room]
            await client.abort()
            raise
        self.joined.append(joined)
        if client.welcome is not None:
            self.instances.append(str(client.welcome.get("instance")))
        self._client = client

    async def _supervise(self) -> None:
        while not self._stopping:
            client = self._client
            assert client is not None
            await client.closed.wait()
            if self._stopping:
                return
            self.closes.append((client.close_code, client.close_reason))
            self._earlier += client.ids[self.room]
            self._client = None
            if not self.reconnect:
                return
            await self._resume()

    async def _resume(self) -> None:
        deadline = time.monotonic() + scaled(self.reconnect_within)
        while True:
            since = self._earlier[-1] if self._earlier else self.since
            try:
                await self._open(since)
                return
            except (ServerError, *_SOCKET_ERRORS):
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.05)

    async def wait_for(self, last_id: str, timeout: float = 20.0) -> None:
        """Wait until ``last_id`` has been received (ids arrive in order)."""
        def arrived() -> bool:
            if last_id in self.received:
                return True
            if self._watch is not None and self._watch.done():
                self._watch.result()  # a failed resume surfaces here
                raise AssertionError(f"{self.name}: socket closed {self.closes} "
                                     f"after {len(self.received)} ids")
            return False

        await async_wait_until(arrived, timeout, message=lambda: (
            f"{self.name}: {last_id} not received; got {len(self.received)} ids, "
            f"last {self.received[-3:]}, closes {self.closes}"))

    async def close(self) -> None:
        self._stopping = True
        if self._client is not None:
            await self._client.close()
        if self._watch is not None:
            self._watch.cancel()
            await asyncio.gather(self._watch, return_exceptions=True)


# -- accounting ----------------------------------------------------------------------


def check_account(history: Sequence[dict[str, Any]], raw: Sequence[tuple[str, dict[str, str]]],
                  publishers: Sequence[Publisher], subscribers: Sequence[Subscriber]) -> None:
    """Every id accounted for: see the module docstring.

    ``history``: the room read through the service (``GET /rooms/R/messages``);
    ``raw``: the stream read from the master itself, including anything past
    the confirmed watermark.
    """
    ids = [m["id"] for m in history]
    assert ids == sorted(ids, key=id_key), "history is not in id order"
    cids = Counter(m["body"]["cid"] for m in history)
    dup = [c for c, n in cids.items() if n > 1]
    assert not dup, f"{len(dup)} client_ids stored more than once in the history: {dup[:5]}"
    raw_cids = Counter(f.get("c") for _sid, f in raw)
    raw_dup = [c for c, n in raw_cids.items() if n > 1]
    assert not raw_dup, f"{len(raw_dup)} client_ids stored more than once in the stream: {raw_dup[:5]}"

    missing_raw = sorted(set(ids) - {sid for sid, _f in raw}, key=id_key)
    assert not missing_raw, f"history ids missing from the master's stream: {missing_raw[:5]}"

    by_id = {m["id"]: m for m in history}
    sent = [s for p in publishers for s in p.sent]
    unconfirmed = [s.cid for s in sent if not s.ids]
    assert not unconfirmed, f"messages never confirmed: {unconfirmed[:5]}"
    for s in sent:
        assert len(set(s.ids)) == 1, f"{s.cid} confirmed under different ids: {s.ids}"
        entry = by_id.get(s.ids[0])
        assert entry is not None, f"confirmed {s.cid} -> {s.ids[0]} is missing from the history"
        assert entry["body"]["cid"] == s.cid, f"id {s.ids[0]} holds {entry['body']}, not {s.cid}"
    stored = {m["body"]["cid"] for m in history}
    assert stored == {s.cid for s in sent}, (
        f"history holds client_ids nobody got confirmed: {sorted(stored - {s.cid for s in sent})[:5]}")

    problems: list[str] = []  # every subscriber's, not only the first one's
    for sub in subscribers:
        got = sub.received
        phantoms = [i for i in got if i not in by_id]
        if phantoms:
            problems.append(f"{sub.name} received ids that are not in the history: {phantoms[:5]}")
        start = sub.since
        expected = ids if start in ("0", "0-0") else [i for i in ids if id_key(i) > id_key(start)]
        try:
            assert_ids_equal(got, expected, f"{sub.name} (on {sub.instances}, since {start})")
        except AssertionError as exc:
            problems.append(str(exc))
        if not all(j.get("recovered") is True for j in sub.joined):
            problems.append(f"{sub.name} joins: {sub.joined}")
    assert not problems, "\n".join(problems)


# -- driving a run ----------------------------------------------------------------


def connector(instance: Any, user: str) -> Connect:
    """Connect to one instance (a tests.support Instance) as ``user``."""

    async def connect() -> WsClient:
        return await WsClient.open(instance.ws_url(user=user), name=f"{user}@{instance.name}")

    return connect


def confirmed_count(publishers: Sequence[Publisher]) -> int:
    return sum(len(p.confirmed) for p in publishers)


async def wait_confirmed(publishers: Sequence[Publisher], tasks: Sequence[asyncio.Task[None]],
                         count: int, timeout: float = 20.0) -> None:
    """Wait until ``count`` messages are confirmed in all; a failed publisher fails fast."""
    await async_wait_until(lambda: confirmed_count(publishers) >= count or fail_fast(tasks), timeout,
                           message=lambda: f"only {confirmed_count(publishers)} of {count} messages confirmed")


def fail_fast(tasks: Sequence[asyncio.Task[None]]) -> bool:
    """A poll predicate's guard: a traffic task that ended before it was told
    to fails the wait at once (with its own exception, if it raised)."""
    for t in tasks:
        if t.done():
            t.result()
            raise AssertionError(f"{t.get_name()} stopped early")
    return False


async def stop_publishers(stop: asyncio.Event, tasks: Sequence[asyncio.Task[None]]) -> None:
    """Let every publisher finish its current message; re-raise the first failure."""
    stop.set()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    for r in results:
        if isinstance(r, BaseException):
            raise r


async def shut_down(stop: asyncio.Event, tasks: Sequence[asyncio.Task[None]],
                    publishers: Sequence[Publisher], subscribers: Sequence[Subscriber]) -> None:
    """End a traffic run whatever state it is in: stop the publishers, then
    close every client."""
    stop.set()
    await asyncio.gather(*tasks, return_exceptions=True)
    for p in publishers:
        await p.close()
    for s in subscribers:
        await s.close()
