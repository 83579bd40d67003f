"""Traffic against a streamgate endpoint: publishers and subscribers that keep
account of every message, by id.

A reusable asyncio library (the failover drill uses it; a load-test tool can
too). Everything talks to one WebSocket URL, usually nginx, so each
(re)connection lands on whichever instance nginx picks.

- :class:`Publisher` publishes to one room at a target rate, one message at a
  time. Each message has its own ``client_id`` and a body carrying
  ``(publisher, seq, send time, client_id)``. On ``unavailable``,
  ``rate_limited``, a reply timeout or a lost connection it sends the *same*
  ``client_id`` again (reconnecting as needed) until ``published``: the
  contract makes that safe, so a retried message must never be stored twice.
  Each message ends as one :class:`PublishRecord`.
- :class:`Subscriber` joins the room and records every message id in the
  order received (with the receive time). On any close or drop it reconnects
  to the same URL and joins with ``since`` = the last id received (or the
  ``last_id`` of its latest ``joined`` frame when it has received nothing),
  counting reconnects and ``recovered: false`` answers.
- :func:`read_history` pages through ``GET /rooms/{room}/messages``.

Every loop is bounded: by the ``stop`` event it is given and by per-step
deadlines (:class:`Limits`). Nothing here decides what counts as a failure;
:mod:`ops.drill.report` does, from the records.
"""

from __future__ import annotations

import asyncio
import json
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, WebSocketException

SUBPROTOCOL = "streamgate.v1"
# What a dropped, refused or half-open socket looks like to a client.
SOCKET_ERRORS = (ConnectionClosed, InvalidHandshake, WebSocketException, OSError, TimeoutError)


@dataclass(frozen=True)
class Limits:
    """Every deadline of a traffic run, in seconds."""

    connect: float = 5.0  # one WebSocket handshake
    # A publish answer: the server retries storage for up to its retry
    # budget (10 s by default) before it answers `unavailable`.
    reply: float = 15.0
    give_up: float = 60.0  # one message: stop retrying it after this long
    join: float = 15.0  # `join` -> `joined` (includes the replay)
    resume: float = 60.0  # a subscriber gives up after failing to reconnect this long
    backoff: float = 0.05  # first pause between retries (doubles up to backoff_max)
    backoff_max: float = 1.0
    ping_interval: float = 2.0  # keepalive pings find a half-open socket
    ping_timeout: float = 5.0


@dataclass
class Endpoint:
    """Where and as whom to connect.

    ``base`` is ``http://host:port/`` (``ws://`` is derived from it). With
    ``token`` (AUTH_MODE=jwt) the token goes in ``Sec-WebSocket-Protocol``
    and ``Authorization``; otherwise the user id goes in ``?user=``
    (AUTH_MODE=none).
    """

    base: str
    token: str | None = None

    def ws_url(self, user: str) -> str:
        parts = urllib.parse.urlsplit(self.base)
        scheme = "wss" if parts.scheme == "https" else "ws"
        query = "" if self.token else "?" + urllib.parse.urlencode({"user": user})
        return urllib.parse.urlunsplit((scheme, parts.netloc, "/ws", "", "")) + query

    def subprotocols(self) -> list[str]:
        protos = [SUBPROTOCOL]
        if self.token:
            protos.append("bearer." + self.token)
        return protos

    def http_url(self, path: str, user: str, **params: str) -> str:
        if not self.token:
            params["user"] = user
        query = urllib.parse.urlencode(params)
        return urllib.parse.urljoin(self.base, path) + ("?" + query if query else "")


async def open_socket(endpoint: Endpoint, user: str, limits: Limits) -> ClientConnection:
    """One WebSocket connection, never through an HTTP proxy from the environment."""
    return await connect(
        endpoint.ws_url(user), subprotocols=endpoint.subprotocols(),  # type: ignore[arg-type]
        open_timeout=limits.connect, ping_interval=limits.ping_interval,
        ping_timeout=limits.ping_timeout, close_timeout=1.0, proxy=None,
        max_queue=None,  # never let a slow reader of ours push back on the server
    )


async def _abort(ws: ClientConnection | None) -> None:
    if ws is None:
        return
    try:
        async with asyncio.timeout(2.0):
            await ws.close()
    except Exception:  # noqa: BLE001 - the socket is being thrown away anyway
        ws.transport.abort()


# --- publishing -----------------------------------------------------------------


@dataclass
class PublishRecord:
    """One message: from the first send to its confirmation (or giving up).

    Times are ``time.monotonic()`` values. ``outcome``: ``published``,
    ``gave_up`` (not confirmed within ``Limits.give_up`` or before the run
    was cut off), ``rejected:<code>`` (an error the contract says not to
    retry) or ``pending`` while in flight.
    """

    publisher: str
    seq: int
    client_id: str
    first_sent: float | None = None
    confirmed_at: float | None = None
    id: str | None = None
    duplicate: bool = False
    outcome: str = "pending"
    attempts: int = 0
    retries: Counter[str] = field(default_factory=Counter)  # reason -> count


class _Retry(Exception):
    def __init__(self, reason: str, drop: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.drop = drop


class Publisher:
    """Publishes numbered messages to ``room`` at ``rate`` per second until stopped."""

    def __init__(self, name: str, endpoint: Endpoint, room: str, rate: float,
                 limits: Limits = Limits(), *, user: str | None = None) -> None:
        self.name = name
        self.endpoint = endpoint
        self.room = room
        self.interval = 1.0 / rate if rate > 0 else 0.0
        self.limits = limits
        self.user = user or name
        self.records: list[PublishRecord] = []
        self.connects = 0
        self.instances: list[str] = []  # the instance of each connection, from `welcome`
        self._ws: ClientConnection | None = None
        self._run_id = uuid.uuid4().hex[:8]

    async def run(self, stop: asyncio.Event, hard_stop: asyncio.Event | None = None) -> None:
        """Publish until ``stop``; a message in flight is finished (or given up)
        unless ``hard_stop`` is set too."""
        hard = hard_stop or asyncio.Event()
        next_at = time.monotonic()
        try:
            while not stop.is_set():
                await self.publish_one(hard)
                # Keep the pace, but after a stall do not burst to catch up.
                next_at = max(next_at + self.interval, time.monotonic())
                delay = next_at - time.monotonic()
                if delay > 0:
                    await _wait(stop, delay)
        finally:
            await _abort(self._ws)
            self._ws = None

    async def publish_one(self, hard_stop: asyncio.Event | None = None) -> PublishRecord:
        seq = len(self.records)
        rec = PublishRecord(self.name, seq, f"{self.name}.{self._run_id}.{seq}")
        self.records.append(rec)
        body = {"pub": self.name, "seq": seq, "sent_ms": int(time.time() * 1000),
                "cid": rec.client_id}
        frame = json.dumps({"type": "publish", "room": self.room, "body": body,
                            "client_id": rec.client_id})
        deadline = time.monotonic() + self.limits.give_up
        backoff = self.limits.backoff
        while True:
            if time.monotonic() > deadline or (hard_stop is not None and hard_stop.is_set()):
                rec.outcome = "gave_up"
                return rec
            try:
                ws = await self._socket()
                if rec.first_sent is None:
                    rec.first_sent = time.monotonic()
                rec.attempts += 1
                await ws.send(frame)
                answer = await self._answer(ws, rec.client_id)
            except (_Retry, *SOCKET_ERRORS) as exc:
                retry = exc if isinstance(exc, _Retry) else _Retry("connection", drop=True)
                rec.retries[retry.reason] += 1
                if retry.drop:
                    await _abort(self._ws)
                    self._ws = None
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self.limits.backoff_max)
                continue
            if answer.get("type") == "published":
                rec.confirmed_at = time.monotonic()
                rec.id = str(answer.get("id"))
                rec.duplicate = bool(answer.get("duplicate"))
                rec.outcome = "published"
            else:
                rec.outcome = f"rejected:{answer.get('code')}"
            return rec

    async def _socket(self) -> ClientConnection:
        if self._ws is None:
            ws = await open_socket(self.endpoint, self.user, self.limits)
            self.connects += 1
            try:
                welcome = json.loads(await asyncio.wait_for(ws.recv(), self.limits.connect))
            except BaseException:
                await _abort(ws)
                raise
            self.instances.append(str(welcome.get("instance")))
            self._ws = ws
        return self._ws

    async def _answer(self, ws: ClientConnection, cid: str) -> dict[str, Any]:
        """The ``published`` or ``error`` frame about ``cid``; raise _Retry to retry."""
        deadline = time.monotonic() + self.limits.reply
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise _Retry("timeout", drop=True)
            try:
                raw = await asyncio.wait_for(ws.recv(), left)
            except TimeoutError:
                raise _Retry("timeout", drop=True) from None
            msg = json.loads(raw)
            kind = msg.get("type")
            if kind == "published" and msg.get("client_id") == cid:
                return msg
            if kind == "error" and msg.get("ref") == cid:
                code = str(msg.get("code"))
                if code in ("unavailable", "rate_limited"):
                    raise _Retry(code)
                return msg


# --- subscribing ----------------------------------------------------------------


@dataclass(frozen=True)
class JoinRecord:
    """One ``joined`` answer: where this connection's feed started."""

    at: float
    since: str
    last_id: str | None
    replayed: int
    recovered: bool
    instance: str


@dataclass(frozen=True)
class CloseRecord:
    at: float
    code: int | None
    reason: str


class Subscriber:
    """Joins ``room`` and records every message id received, across reconnects.

    ``received`` is the sequence over all connections, in arrival order;
    ``received_at`` the matching ``time.monotonic()`` values. ``join_point``
    is where the first join started (its ``joined.last_id``): from there on
    this subscriber must see exactly the room's history.
    """

    def __init__(self, name: str, endpoint: Endpoint, room: str,
                 limits: Limits = Limits(), *, user: str | None = None,
                 since: str = "$") -> None:
        self.name = name
        self.endpoint = endpoint
        self.room = room
        self.limits = limits
        self.user = user or name
        self.first_since = since
        self.received: list[str] = []
        self.received_at: list[float] = []
        self.seen: set[str] = set()
        self.joins: list[JoinRecord] = []
        self.closes: list[CloseRecord] = []
        self.errors: Counter[str] = Counter()
        self.reconnects = 0
        self.gave_up: str | None = None  # why resuming stopped for good
        self.joined = asyncio.Event()  # set by the first `joined`

    @property
    def join_point(self) -> str | None:
        return self.joins[0].last_id if self.joins else None

    @property
    def not_recovered(self) -> int:
        return sum(1 for j in self.joins if not j.recovered)

    @property
    def last_id(self) -> str | None:
        return self.received[-1] if self.received else None

    def resume_point(self) -> str:
        if self.received:
            return self.received[-1]
        if self.joins and self.joins[-1].last_id:
            return self.joins[-1].last_id
        return self.first_since

    async def run(self, stop: asyncio.Event) -> None:
        """Stay joined until ``stop``; resume after every drop.

        Never raises: a failure it cannot resume from ends up in ``gave_up``.
        """
        try:
            await self._run(stop)
        except Exception as exc:  # noqa: BLE001 - recorded, and reported as a finding
            self.gave_up = f"crashed: {exc!r}"

    async def _run(self, stop: asyncio.Event) -> None:
        failing_since: float | None = None
        backoff = self.limits.backoff
        connected_before = False
        while not stop.is_set():
            since = self.resume_point()
            ws: ClientConnection | None = None
            try:
                ws = await open_socket(self.endpoint, self.user, self.limits)
                if connected_before:
                    self.reconnects += 1
                connected_before = True
                failing_since, backoff = None, self.limits.backoff
                await self._session(ws, since, stop)
            except SOCKET_ERRORS as exc:
                code = ws.close_code if ws is not None else None
                reason = (ws.close_reason or "") if ws is not None else type(exc).__name__
                self.closes.append(CloseRecord(time.monotonic(), code, reason))
            finally:
                await _abort(ws)
            if stop.is_set():
                return
            now = time.monotonic()
            failing_since = failing_since or now
            if now - failing_since > self.limits.resume:
                self.gave_up = f"could not resume for {self.limits.resume:.0f}s"
                return
            await _wait(stop, backoff)
            backoff = min(backoff * 2, self.limits.backoff_max)

    async def _session(self, ws: ClientConnection, since: str, stop: asyncio.Event) -> None:
        """One connection: join, then record messages until it drops or ``stop``."""
        welcome = json.loads(await asyncio.wait_for(ws.recv(), self.limits.connect))
        instance = str(welcome.get("instance"))
        join = json.dumps({"type": "join", "room": self.room, "since": since})
        await ws.send(join)
        join_deadline: float | None = time.monotonic() + self.limits.join
        while not stop.is_set():
            if join_deadline is not None and time.monotonic() > join_deadline:
                raise TimeoutError("no `joined` answer")
            try:
                # Cancelling recv() loses nothing: the frame stays queued.
                raw = await asyncio.wait_for(ws.recv(), 0.5)
            except TimeoutError:
                continue
            msg = json.loads(raw)
            kind = msg.get("type")
            if kind == "message" and msg.get("room") == self.room:
                sid = str(msg["id"])
                self.received.append(sid)
                self.received_at.append(time.monotonic())
                self.seen.add(sid)
            elif kind == "joined" and msg.get("room") == self.room:
                last = msg.get("last_id")
                self.joins.append(JoinRecord(time.monotonic(), since,
                                             str(last) if last is not None else None,
                                             int(msg.get("replayed", 0)),
                                             bool(msg.get("recovered", True)), instance))
                self.joined.set()
                join_deadline = None
            elif kind == "error" and msg.get("ref") == self.room:
                self.errors[str(msg.get("code"))] += 1
                if join_deadline is not None:
                    # The join failed before any replay (`unavailable`): the
                    # contract says join again.
                    await asyncio.sleep(self.limits.backoff)
                    await ws.send(join)


# --- history ----------------------------------------------------------------------


@dataclass(frozen=True)
class StoredMessage:
    id: str
    sender: str
    body: Any
    ts: int

    @property
    def client_id(self) -> str | None:
        return self.body.get("cid") if isinstance(self.body, dict) else None


_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _get_json(url: str, headers: dict[str, str], timeout: float) -> dict[str, Any]:
    req = urllib.request.Request(url, headers=headers)
    with _NO_PROXY.open(req, timeout=timeout) as resp:
        return json.loads(resp.read())


async def read_history(endpoint: Endpoint, room: str, *, user: str = "drill-reader",
                       after: str = "0", page: int = 1000, timeout: float = 30.0) -> list[StoredMessage]:
    """Every readable message of ``room`` after ``after``, paging via ``next``.

    A page that fails (503 while storage recovers, a connection error) is
    asked for again until ``timeout``.
    """
    headers = {"Authorization": f"Bearer {endpoint.token}"} if endpoint.token else {}
    path = f"/rooms/{urllib.parse.quote(room, safe='')}/messages"
    out: list[StoredMessage] = []
    deadline = time.monotonic() + timeout
    cursor: str | None = after
    while cursor is not None:
        url = endpoint.http_url(path, user, after=cursor, limit=str(page))
        try:
            data = await asyncio.to_thread(_get_json, url, headers, 5.0)
        except (urllib.error.URLError, OSError, ValueError):
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)
            continue
        out += [StoredMessage(str(m["id"]), str(m.get("from")), m.get("body"), int(m.get("ts", 0)))
                for m in data["messages"]]
        cursor = data.get("next")
    return out


# --- running a set of clients -------------------------------------------------------


@dataclass
class Traffic:
    """P publishers and S subscribers on one room, started and stopped together."""

    endpoint: Endpoint
    room: str
    publishers: int = 2
    subscribers: int = 3
    rate: float = 50.0  # messages per second, per publisher
    limits: Limits = field(default_factory=Limits)
    pubs: list[Publisher] = field(init=False)
    subs: list[Subscriber] = field(init=False)

    def __post_init__(self) -> None:
        tag = uuid.uuid4().hex[:4]
        self.pubs = [Publisher(f"pub-{i}-{tag}", self.endpoint, self.room, self.rate, self.limits)
                     for i in range(1, self.publishers + 1)]
        self.subs = [Subscriber(f"sub-{i}-{tag}", self.endpoint, self.room, self.limits)
                     for i in range(1, self.subscribers + 1)]
        self._stop_pub = asyncio.Event()
        self._hard_stop = asyncio.Event()
        self._stop_sub = asyncio.Event()
        self._pub_tasks: list[asyncio.Task[None]] = []
        self._sub_tasks: list[asyncio.Task[None]] = []

    @property
    def records(self) -> list[PublishRecord]:
        return [r for p in self.pubs for r in p.records]

    def confirmed(self) -> int:
        return sum(1 for r in self.records if r.outcome == "published")

    async def start(self, join_timeout: float = 20.0) -> None:
        """Subscribers first (each until its first `joined`), then publishers."""
        self._sub_tasks = [asyncio.create_task(s.run(self._stop_sub), name=s.name)
                           for s in self.subs]
        try:
            async with asyncio.timeout(join_timeout):
                await asyncio.gather(*(s.joined.wait() for s in self.subs))
        except TimeoutError:
            await self.stop_subscribers()
            raise TimeoutError(f"subscribers not joined within {join_timeout:.0f}s") from None
        self._pub_tasks = [asyncio.create_task(p.run(self._stop_pub, self._hard_stop), name=p.name)
                           for p in self.pubs]

    async def stop_publishers(self, timeout: float | None = None) -> None:
        """Let each publisher finish its message in flight, for at most ``timeout``."""
        self._stop_pub.set()
        limit = timeout if timeout is not None else self.limits.give_up + 5
        _done, pending = await asyncio.wait(self._pub_tasks, timeout=limit) if self._pub_tasks \
            else (set(), set())
        if pending:
            self._hard_stop.set()
            await asyncio.wait(pending, timeout=self.limits.reply + 5)
        for t in self._pub_tasks:
            if t.done() and not t.cancelled() and t.exception() is not None:
                raise t.exception()  # type: ignore[misc]

    async def settle(self, last_id: str | None, timeout: float = 20.0) -> bool:
        """Wait until every subscriber received ``last_id``; False on timeout."""
        if last_id is None:
            return True
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all(last_id in s.seen for s in self.subs):
                return True
            if all(t.done() for t in self._sub_tasks):
                return False
            await asyncio.sleep(0.05)
        return False

    async def stop_subscribers(self) -> None:
        self._stop_sub.set()
        if self._sub_tasks:
            _done, pending = await asyncio.wait(self._sub_tasks, timeout=10.0)
            for t in pending:
                t.cancel()
            await asyncio.gather(*self._sub_tasks, return_exceptions=True)

    async def stop(self) -> None:
        await self.stop_publishers()
        await self.stop_subscribers()


async def _wait(event: asyncio.Event, seconds: float) -> None:
    """Sleep ``seconds`` or until ``event`` is set, whichever comes first."""
    try:
        async with asyncio.timeout(seconds):
            await event.wait()
    except TimeoutError:
        pass

