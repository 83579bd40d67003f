"""The load generator's clients: subscribers that account for every delivery,
publishers that stamp every message, and the subscriber worker process.

Speed matters here more than anywhere else in ops/: a generator that cannot
keep up inflates the latencies it reports. So subscribers use picows (a
Cython WebSocket client whose frame callback runs straight from the event
loop, no per-frame task or queue) on uvloop, and all bookkeeping for one
delivery is a handful of list and integer operations (:meth:`Tally.on_text`).
``--client websockets`` swaps in the pure-Python websockets client, for
comparison and for machines without picows.

Clock: the publisher writes ``time.monotonic_ns()`` into each body and the
subscriber compares it with its own ``time.monotonic_ns()``. On Linux that
is CLOCK_MONOTONIC, one clock for every process on the host, so the
publisher and subscriber processes may differ and the latency is still
exact; the generator must therefore run on one host (it does: loopback).

Accounting, per subscriber (one socket in one room; a socket joined to k
rooms is k subscribers that share it): every message body carries
``(publisher, seq, send time, step)``, where a publisher is one lane: one
room's sequence of messages (several lanes may share one socket). A bitmap per publisher marks the seqs received, so a
second arrival is a duplicate; stream ids must strictly increase, so a
smaller one is a disorder; and the first id seen for each ``(publisher,
seq)`` in this process must be the id every other subscriber sees too. Loss
is computed later against the ids the publishers had confirmed.
"""

from __future__ import annotations

import asyncio
import resource
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from ops.load.stats import BUCKETS, SUB, SUB_BITS, new_hist
from ops.load.traffic import Endpoint

try:  # the fast client; the websockets fallback needs nothing extra
    from picows import WSListener, WSMsgType, WSTransport, ws_connect

    HAVE_PICOWS = True
except ImportError:  # pragma: no cover - exercised only where picows is missing
    HAVE_PICOWS = False
    WSListener = object  # type: ignore[misc,assignment]

_mono = time.monotonic_ns
_loads = orjson.loads
_TWO_SUB = 2 * SUB
_LAST_BUCKET = BUCKETS - 1


def raise_nofile(wanted: int = 65536) -> int:
    """Raise this process's open-file limit towards ``wanted`` (children inherit it)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def use_uvloop() -> None:
    try:
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    except ImportError:  # pragma: no cover
        pass


# --- subscribers ------------------------------------------------------------------


@dataclass(slots=True, eq=False)
class SubState:
    """Everything one subscriber (one socket's membership of one room) saw."""

    name: str
    room: str
    url: str
    socket: str = ""  # the socket's user name when it holds several rooms (else ``name``)
    instance: str | None = None
    join_id: str | None = None
    last_ms: int = -1  # the last stream id, as (ms, seq)
    last_seq: int = -1
    received: int = 0
    duplicates: int = 0
    disorder: int = 0
    foreign: int = 0  # frames that are not ours (other rooms, other bodies)
    errors: list[str] = field(default_factory=list)
    bits: dict[int, bytearray] = field(default_factory=dict)
    close_code: int | None = None
    closed: bool = False
    joined: asyncio.Future[None] | None = None


class Tally:
    """One process's delivery accounting: the hot path of the generator."""

    def __init__(self) -> None:
        self.t0 = _mono()
        self.step_hist: dict[int, list[int]] = {}
        self.step_max: dict[int, int] = {}
        self.step_count: dict[int, int] = {}
        self.sec_hist: dict[int, list[int]] = {}
        self.ids: dict[int, str] = {}
        self.id_mismatch = 0
        self.delivered = 0

    def on_text(self, rooms: dict[str, SubState], data: bytes | str) -> None:
        """One frame on a socket whose subscribers are ``rooms`` (room -> state)."""
        now = _mono()
        try:
            m = _loads(data)
            kind = m["type"]
        except (orjson.JSONDecodeError, KeyError, TypeError):
            _any(rooms).foreign += 1
            return
        if kind != "message":
            self._control(rooms, m, kind)
            return
        try:
            body = m["body"]
            pub = body["p"]
            seq = body["s"]
            sent = body["t"]
            step = body["k"]
            sid = m["id"]
            s = rooms[m["room"]]
        except (KeyError, TypeError):
            _any(rooms).foreign += 1
            return
        bm = s.bits.get(pub)
        byte = seq >> 3
        if bm is None:
            bm = s.bits[pub] = bytearray(max(1024, byte + 1024))
        elif byte >= len(bm):
            bm.extend(bytes(byte + 1024 - len(bm)))
        mask = 1 << (seq & 7)
        if bm[byte] & mask:
            s.duplicates += 1
            return
        bm[byte] |= mask
        s.received += 1
        self.delivered += 1
        ms, _, sq = sid.partition("-")
        ms_i, sq_i = int(ms), int(sq)
        if ms_i > s.last_ms or (ms_i == s.last_ms and sq_i > s.last_seq):
            s.last_ms, s.last_seq = ms_i, sq_i
        else:
            s.disorder += 1
        key = (pub << 40) | seq
        first = self.ids.setdefault(key, sid)
        if first is not sid and first != sid:
            self.id_mismatch += 1
        if step < 0:  # a warm-up message: verified, not timed
            return
        us = (now - sent) // 1000
        if us < _TWO_SUB:
            idx = us if us > 0 else 0
        else:
            shift = us.bit_length() - SUB_BITS - 1
            idx = shift * SUB + (us >> shift)
            if idx > _LAST_BUCKET:
                idx = _LAST_BUCKET
        h = self.step_hist.get(step)
        if h is None:
            h = self.step_hist[step] = new_hist()
            self.step_max[step] = 0
            self.step_count[step] = 0
        h[idx] += 1
        self.step_count[step] += 1
        if us > self.step_max[step]:
            self.step_max[step] = us
        sec = (now - self.t0) // 1_000_000_000
        h = self.sec_hist.get(sec)
        if h is None:
            h = self.sec_hist[sec] = new_hist()
        h[idx] += 1

    def _control(self, rooms: dict[str, SubState], m: dict[str, Any], kind: str) -> None:
        s = rooms.get(m.get("room"))  # type: ignore[arg-type]
        if kind == "welcome":
            for s in rooms.values():
                s.instance = str(m.get("instance"))
        elif kind == "joined" and s is not None:
            s.join_id = str(m.get("last_id"))
            if s.joined is not None and not s.joined.done():
                s.joined.set_result(None)
        elif kind == "error":
            for s in ([s] if s is not None else rooms.values()):
                s.errors.append(str(m.get("code")))
                if s.joined is not None and not s.joined.done():
                    s.joined.set_exception(RuntimeError(f"join refused: {m.get('code')}"))
        else:
            _any(rooms).foreign += 1


def _any(rooms: dict[str, SubState]) -> SubState:
    return next(iter(rooms.values()))


class _PicoSub(WSListener):  # type: ignore[misc,valid-type]
    def __init__(self, tally: Tally, rooms: dict[str, SubState]) -> None:
        self.tally = tally
        self.rooms = rooms

    def on_ws_frame(self, transport: WSTransport, frame: Any) -> None:
        t = frame.msg_type
        if t == WSMsgType.TEXT:
            self.tally.on_text(self.rooms, frame.get_payload_as_bytes())
        elif t == WSMsgType.CLOSE:
            for s in self.rooms.values():
                s.close_code = frame.get_close_code()
            transport.send_close(frame.get_close_code())
            transport.disconnect()

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        _closed(self.rooms.values(), None)


def _closed(states: Any, code: int | None) -> None:
    for s in states:
        s.closed = True
        if code is not None:
            s.close_code = code
        if s.joined is not None and not s.joined.done():
            s.joined.set_exception(ConnectionError("closed before joined"))


class Connection:
    """A subscriber socket (one or more rooms), whichever client library runs it."""

    def __init__(self, states: Sequence[SubState], close: Callable[[], None]) -> None:
        self.states = states
        self.close = close


def _headers(endpoint: Endpoint) -> dict[str, str]:
    return {"Sec-WebSocket-Protocol": ", ".join(endpoint.subprotocols())}


async def open_subscriber(tally: Tally, states: Sequence[SubState], endpoint: Endpoint, *,
                          client: str = "picows", since: str = "$",
                          timeout: float = 30.0) -> Connection:
    """Connect one socket, join each state's room from ``since`` and return
    once every ``joined`` came. The states share the socket (``socket``, or
    the first one's ``name``, is its user)."""
    loop = asyncio.get_running_loop()
    rooms = {s.room: s for s in states}
    for s in states:
        s.joined = loop.create_future()
    joins = [orjson.dumps({"type": "join", "room": s.room, "since": since}) for s in states]
    url = endpoint.ws_url(states[0].socket or states[0].name)
    async with asyncio.timeout(timeout):
        if client == "picows":
            transport, _ = await ws_connect(
                lambda: _PicoSub(tally, rooms), url, websocket_handshake_timeout=timeout,
                extra_headers=_headers(endpoint), enable_auto_pong=True)
            for join in joins:
                transport.send(WSMsgType.TEXT, join)
            conn = Connection(states, lambda: transport.disconnect(graceful=False))
        else:
            conn = await _open_websockets(tally, rooms, endpoint, url, joins)
        try:
            for s in states:
                await s.joined  # type: ignore[misc]
        except BaseException:
            conn.close()
            raise
    return conn


async def _open_websockets(tally: Tally, rooms: dict[str, SubState], endpoint: Endpoint,
                           url: str, joins: list[bytes]) -> Connection:
    from websockets.asyncio.client import connect
    from websockets.exceptions import ConnectionClosed

    ws = await connect(url, subprotocols=endpoint.subprotocols(),  # type: ignore[arg-type]
                       proxy=None, max_queue=None, ping_interval=None, compression=None)

    async def pump() -> None:
        try:
            async for raw in ws:
                tally.on_text(rooms, raw)
        except ConnectionClosed:
            pass
        finally:
            _closed(rooms.values(), ws.close_code)

    task = asyncio.create_task(pump())
    for join in joins:
        await ws.send(join.decode())

    def close() -> None:
        task.cancel()
        ws.transport.abort()

    return Connection(list(rooms.values()), close)


async def open_many(tally: Tally, states: Sequence[SubState], endpoints: dict[str, Endpoint], *,
                    client: str, concurrency: int, since: str = "$", timeout: float = 30.0,
                    on_progress: Callable[[int, int], None] | None = None,
                    ) -> tuple[list[Connection], list[str]]:
    """Open every subscriber socket, ``concurrency`` handshakes at a time;
    return the connections and one error text per socket that could not
    join. States with the same ``socket`` share one socket."""
    sem = asyncio.Semaphore(concurrency)
    conns: list[Connection] = []
    errors: list[str] = []
    sockets: dict[str, list[SubState]] = {}
    for s in states:
        sockets.setdefault(s.socket or s.name, []).append(s)

    async def one(group: list[SubState]) -> None:
        async with sem:
            try:
                conns.append(await open_subscriber(tally, group, endpoints[group[0].url],
                                                   client=client, since=since, timeout=timeout))
            except Exception as exc:  # noqa: BLE001 - counted and reported, not fatal
                errors.append(f"{group[0].socket or group[0].name}: {type(exc).__name__}: {exc}")
            if on_progress is not None:
                on_progress(len(conns), len(errors))

    await asyncio.gather(*(one(g) for g in sockets.values()))
    return conns, errors


# --- publishers -------------------------------------------------------------------


class Publisher:
    """Publishes stamped messages without waiting for each answer (pipelined).

    One publisher is one lane: one room, one sequence of seqs. Record per
    seq: send time, step, and the id from ``published``. On
    ``rate_limited`` / ``unavailable`` the same ``client_id`` is sent again
    after ``retry_after`` seconds (safe by the contract), at most
    ``max_attempts`` times.

    A lane either connects its own socket or shares another lane's
    (:meth:`share`: one socket publishing to many rooms, as a chat client
    does); the socket's owner hands each answer to its lane by the
    ``client_id`` (``run.lane.seq``).
    """

    def __init__(self, index: int, room: str, endpoint: Endpoint, *, pad: int = 0,
                 retry_after: float = 0.1, max_attempts: int = 20) -> None:
        self.index = index
        self.room = room
        self.endpoint = endpoint
        self.user = f"lt-pub-{index}-{uuid.uuid4().hex[:6]}"
        self.run = uuid.uuid4().hex[:8]
        self.pad = "x" * pad
        self.sent_ns: list[int] = []
        self.steps: list[int] = []
        self.ids: list[str | None] = []
        self.ack_ns: list[int] = []
        self.errors: dict[str, int] = {}
        self.attempts: dict[int, int] = {}
        self.retry_after = retry_after
        self.max_attempts = max_attempts
        self.transport: Any = None
        self._closed = False
        self._welcome: asyncio.Future[None] | None = None
        self._ws: Any = None
        self.owner: Publisher = self  # whose socket this lane publishes on
        self.lanes: dict[int, Publisher] = {index: self}

    def share(self, owner: Publisher) -> None:
        """Publish on ``owner``'s socket instead of a socket of its own."""
        self.owner = owner.owner
        self.run = self.owner.run
        self.owner.lanes[self.index] = self

    @property
    def closed(self) -> bool:
        return self.owner._closed

    @property
    def confirmed(self) -> int:
        return sum(1 for i in self.ids if i is not None)

    async def connect(self, client: str = "picows", timeout: float = 10.0) -> None:
        loop = asyncio.get_running_loop()
        self._welcome = loop.create_future()
        url = self.endpoint.ws_url(self.user)
        async with asyncio.timeout(timeout):
            if client == "picows":
                pub = self

                class _L(WSListener):  # type: ignore[misc,valid-type]
                    def on_ws_frame(self, transport: WSTransport, frame: Any) -> None:
                        if frame.msg_type == WSMsgType.TEXT:
                            pub.on_text(frame.get_payload_as_bytes())

                    def on_ws_disconnected(self, transport: WSTransport) -> None:
                        pub._closed = True

                self.transport, _ = await ws_connect(
                    _L, url, websocket_handshake_timeout=timeout,
                    extra_headers=_headers(self.endpoint))
            else:
                from websockets.asyncio.client import connect

                self._ws = await connect(url, subprotocols=self.endpoint.subprotocols(),  # type: ignore[arg-type]
                                         proxy=None, max_queue=None, ping_interval=None)

                async def pump() -> None:
                    try:
                        async for raw in self._ws:
                            self.on_text(raw)
                    except Exception:  # noqa: BLE001 - a drop shows as unconfirmed messages
                        pass
                    self._closed = True

                self._pump = asyncio.create_task(pump())
            await self._welcome

    def _send_raw(self, frame: bytes) -> None:
        o = self.owner
        if o.transport is not None:
            o.transport.send(WSMsgType.TEXT, frame)
        else:
            asyncio.ensure_future(o._ws.send(frame.decode()))

    def _frame(self, seq: int) -> bytes:
        body = {"p": self.index, "s": seq, "t": self.sent_ns[seq], "k": self.steps[seq]}
        if self.pad:
            body["x"] = self.pad
        return orjson.dumps({"type": "publish", "room": self.room, "body": body,
                             "client_id": f"{self.run}.{self.index}.{seq}"})

    def publish(self, step: int) -> int:
        """Send the next message now; return its seq."""
        seq = len(self.sent_ns)
        self.sent_ns.append(_mono())
        self.steps.append(step)
        self.ids.append(None)
        self.ack_ns.append(0)
        self._send_raw(self._frame(seq))
        return seq

    def on_text(self, data: bytes | str) -> None:
        """A frame on this lane's own socket: answers go to the lane they are for."""
        m = _loads(data)
        kind = m.get("type")
        if kind == "published" or kind == "error":
            self._lane(m.get("client_id" if kind == "published" else "ref"))._answer(kind, m)
        elif kind == "welcome" and self._welcome is not None and not self._welcome.done():
            self._welcome.set_result(None)

    def _lane(self, cid: object) -> Publisher:
        if len(self.lanes) > 1 and isinstance(cid, str):
            parts = cid.split(".", 2)
            if len(parts) == 3 and parts[0] == self.run and parts[1].isdigit():
                return self.lanes.get(int(parts[1]), self)
        return self

    def _answer(self, kind: str, m: dict[str, Any]) -> None:
        if kind == "published":
            seq = self._seq(m.get("client_id"))
            if seq is not None and self.ids[seq] is None:
                self.ids[seq] = str(m["id"])
                self.ack_ns[seq] = _mono()
        elif kind == "error":
            code = str(m.get("code"))
            self.errors[code] = self.errors.get(code, 0) + 1
            seq = self._seq(m.get("ref"))
            if seq is None:
                return
            n = self.attempts.get(seq, 1)
            if code in ("rate_limited", "unavailable") and n < self.max_attempts:
                self.attempts[seq] = n + 1
                asyncio.get_running_loop().call_later(self.retry_after, self._resend, seq)
            else:
                self.attempts[seq] = -1  # given up

    def _resend(self, seq: int) -> None:
        if not self.closed and self.ids[seq] is None:
            self._send_raw(self._frame(seq))

    def _seq(self, cid: object) -> int | None:
        if not isinstance(cid, str) or not cid.startswith(f"{self.run}.{self.index}."):
            return None
        try:
            return int(cid.rsplit(".", 1)[1])
        except ValueError:
            return None

    def close(self) -> None:
        if self.owner is not self:
            return
        if self.transport is not None:
            self.transport.disconnect(graceful=False)
        elif self._ws is not None:
            self._ws.transport.abort()


# --- replay probes -------------------------------------------------------------------


@dataclass(slots=True, eq=False)
class ReplayState:
    """One reconnecting client: the messages replayed before its ``joined``."""

    name: str
    room: str
    url: str
    since: str = "$"
    count: int = 0
    disorder: int = 0
    last_ms: int = -1
    last_seq: int = -1
    last_id: str | None = None
    joined_id: str | None = None
    replayed: int | None = None
    recovered: bool | None = None
    joined_at: int = 0  # monotonic ns
    done: asyncio.Future[None] | None = None
    prefix: bytes = b""  # how a message frame of this room starts, up to its id

    def on_text(self, data: bytes) -> None:
        # Hundreds of thousands of replayed frames go through here on the
        # generator's one core: a frame that starts the way the server lays
        # a message of this room out is checked without decoding all of it.
        prefix = self.prefix
        if not prefix:
            prefix = self.prefix = (b'{"type":"message","room":' + orjson.dumps(self.room)
                                    + b',"id":"')
        if data.startswith(prefix):
            end = data.find(b'"', len(prefix))
            if end > 0:
                self._message(data[len(prefix):end].decode())
                return
        m = _loads(data)
        kind = m.get("type")
        if kind == "message" and m.get("room") == self.room:
            self._message(m["id"])
        elif kind == "joined" and m.get("room") == self.room:
            self.joined_at = _mono()
            self.joined_id = m.get("last_id")
            self.replayed = m.get("replayed")
            self.recovered = m.get("recovered")
            if self.done is not None and not self.done.done():
                self.done.set_result(None)
        elif kind == "error" and self.done is not None and not self.done.done():
            self.done.set_exception(RuntimeError(f"join refused: {m.get('code')}"))

    def _message(self, sid: str) -> None:
        ms, _, sq = sid.partition("-")
        ms_i, sq_i = int(ms), int(sq)
        if ms_i > self.last_ms or (ms_i == self.last_ms and sq_i > self.last_seq):
            self.last_ms, self.last_seq = ms_i, sq_i
        else:
            self.disorder += 1
        self.count += 1
        self.last_id = sid


class _PicoReplay(WSListener):  # type: ignore[misc,valid-type]
    def __init__(self, state: ReplayState) -> None:
        self.state = state

    def on_ws_frame(self, transport: WSTransport, frame: Any) -> None:
        if frame.msg_type == WSMsgType.TEXT:
            self.state.on_text(frame.get_payload_as_bytes())

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        d = self.state.done
        if d is not None and not d.done():
            d.set_exception(ConnectionError("closed before joined"))


async def replay_join(state: ReplayState, endpoint: Endpoint, timeout: float) -> Any:
    """Connect, join ``state.room`` from ``state.since``; return the transport
    once ``joined`` came (every replayed message has been counted by then)."""
    state.done = asyncio.get_running_loop().create_future()
    async with asyncio.timeout(timeout):
        transport, _ = await ws_connect(lambda: _PicoReplay(state), endpoint.ws_url(state.name),
                                        websocket_handshake_timeout=timeout,
                                        extra_headers=_headers(endpoint))
        transport.send(WSMsgType.TEXT, orjson.dumps(
            {"type": "join", "room": state.room, "since": state.since}))
        try:
            await state.done
        except BaseException:
            transport.disconnect(graceful=False)
            raise
    return transport
