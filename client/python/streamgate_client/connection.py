"""The client's I/O: one supervisor task owns the WebSocket and reconnects it.

- :class:`Client` is what the application holds. Its requests update the
  pure :class:`~streamgate_client.state.Delivery` state and send the frames it returns
  on the current connection, if there is one; the next connection sends
  them otherwise (every wanted room is joined again on each connection).
- The supervisor loops: pick the next URL, connect, wait for ``welcome``,
  subscribe every room from its resume point, read frames until the
  connection ends, then decide: reconnect after a jittered backoff, fetch a
  fresh token first (4401), or stop for good (4403, repeated 4401).
- The reader never waits for the application: a message goes into the
  bounded queue or is dropped and fetched again later (see
  :mod:`streamgate_client.state`), so ``published`` answers keep flowing even when the
  application is slow to take messages.

Every wait is bounded: connecting and ``welcome`` by ``open_timeout``, a
dead connection by the WebSocket keepalive, requests by their timeouts.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections import deque
from collections.abc import AsyncIterator, Sequence
from types import TracebackType
from typing import Any

from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus, InvalidURI
from websockets.typing import Subprotocol

from .backoff import Backoff
from .errors import (
    AuthError,
    ClientClosed,
    FatalError,
    OriginRejected,
    PublishTimeout,
    ServerError,
    StreamgateError,
)
from .events import Item, Joined, Message
from .ids import check_epoch, check_since
from .http import HistoryPage, HttpApi, history_query, http_base, parse_page, room_path
from .link import Link, Lost
from .options import Options, TokenProvider
from .protocol import (
    ABNORMAL,
    ORIGIN_NOT_ALLOWED,
    RETRYABLE_ERRORS,
    SUBPROTOCOL,
    TOKEN_SUBPROTOCOL_PREFIX,
    UNAUTHORIZED,
    BadFrame,
    CloseAction,
    ErrorReply,
    Frame,
    Left,
    Published,
    ServerFrame,
    TokenRefreshed,
    Welcome,
    check_room,
    check_user,
    close_action,
    decode,
    encode,
    with_identity,
)
from .refresher import Refresher
from .state import AckBook, Delivery
from .status import (
    Connected,
    ConnectionEvent,
    Connecting,
    Disconnected,
    Refreshed,
    Resumed,
    State,
    StateListener,
)

log = logging.getLogger("streamgate.client")

class Client:
    """A resumable connection to a streamgate cluster. Use :func:`connect`.

    Guarantees, per joined room: :meth:`messages` yields every message after
    the join point exactly once and in id order, across reconnects to any
    instance, or yields a :class:`~streamgate_client.events.Gap` where the server says
    messages were lost for good (trimmed history).
    """

    def __init__(
        self,
        urls: str | Sequence[str],
        *,
        token: str | None = None,
        user: str | None = None,
        token_provider: TokenProvider | None = None,
        auto_ack: bool = False,
        options: Options | None = None,
        on_state: StateListener | None = None,
    ) -> None:
        self._urls = [urls] if isinstance(urls, str) else list(urls)
        if not self._urls or not all(u.startswith(("ws://", "wss://")) for u in self._urls):
            raise ValueError("urls: one or more ws:// or wss:// URLs")
        self._token = token
        self._user = user
        self._provider = token_provider
        self._auto_ack = auto_ack
        self._opts = options or Options()
        self._state = Delivery(self._opts.max_queue)
        self._acks = AckBook()
        self._backoff = Backoff(self._opts.backoff_base, self._opts.backoff_max)
        self._link: Link | None = None
        self._linked = asyncio.Event()  # a connection is up, or the client ended
        self._items = asyncio.Event()  # the queue has items, or the client ended
        self._joins: dict[str, list[asyncio.Future[Joined]]] = {}
        self._taken: Message | None = None  # handed out, not yet marked processed
        self._supervisor: asyncio.Task[None] | None = None
        self._fatal: FatalError | None = None
        self._closed = False
        self._last_error: BaseException | None = None
        self.connections = 0  # connections that reached `welcome`
        self.user: str | None = None  # from the last `welcome`
        self.instance: str | None = None
        self.url: str | None = None
        self._listener = on_state
        self._now = State.DISCONNECTED
        self._close_reason = ""  # of the connection that ended last
        self._refresher: asyncio.Task[None] | None = None

    # -- life cycle -----------------------------------------------------------

    async def __aenter__(self) -> Client:
        return await self.start()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        # Leaving the block by an exception: the message being handled was
        # not processed, so auto_ack must not acknowledge it.
        await self._shutdown(processed=exc_type is None)

    async def start(self) -> Client:
        """Connect; return once the first connection is up (``connect_timeout``)."""
        if self._supervisor is not None:
            raise RuntimeError("client already started")
        self._supervisor = asyncio.create_task(self._supervise(), name="streamgate-client")
        try:
            async with asyncio.timeout(self._opts.connect_timeout):
                await self._wait_link()
        except TimeoutError:
            await self._shutdown(processed=False)
            raise TimeoutError(
                f"no connection to {self._urls} within {self._opts.connect_timeout:g} s "
                f"(last error: {self._last_error!r})"
            ) from None
        except BaseException:
            await self._shutdown(processed=False)
            raise
        return self

    async def close(self) -> None:
        """Send pending acks, close the connection, stop reconnecting.

        With ``auto_ack``, the last message taken counts as processed."""
        await self._shutdown(processed=True)

    async def _shutdown(self, processed: bool) -> None:
        if self._closed:
            return
        if processed:
            self._mark_processed()
        link = self._link
        was_up = link is not None and not link.down.is_set()
        if link is not None and was_up:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(self._opts.close_timeout):
                    await self._flush_acks()
        self._closed = True
        if self._supervisor is not None:
            self._supervisor.cancel()
            await asyncio.gather(self._supervisor, return_exceptions=True)
        if link is not None and was_up:
            self._emit(Disconnected(link.url, 1000, "client closed", reconnecting=False))
        self._now = State.CLOSED
        self._end(ClientClosed("client closed"))

    @property
    def connected(self) -> bool:
        return self._link is not None and not self._link.down.is_set()

    @property
    def state(self) -> State:
        """Where the connection is now (the last event's state)."""
        return self._now

    @property
    def rooms(self) -> tuple[str, ...]:
        return tuple(self._state.rooms)

    def position(self, room: str) -> str | None:
        """The room's resume point: the last id handed to the application, else
        the position the last join reported; None when not known yet."""
        return self._state.position(room)

    def epoch(self, room: str) -> str | None:
        """The epoch of the room's stream that :meth:`position` belongs to
        (keep it with the position to resume after a restart)."""
        return self._state.epoch(room)

    # -- requests -----------------------------------------------------------------

    async def join(self, room: str, since: str | None = None, *, epoch: str | None = None,
                   timeout: float | None = None) -> Joined:
        """Join ``room`` and return the server's ``joined`` answer.

        ``since``: ``"$"`` only new messages, ``"0"`` everything retained, a
        message id: everything after it; None: from the user's stored ack
        cursor, else ``"$"``. ``epoch``: the one :meth:`epoch` gave with that
        id, so that a room whose stream was lost and recreated answers
        ``recovered=False``. Both apply to the first join only: afterwards
        the client resumes from what it delivered. On timeout the room stays
        wanted (it is joined when a connection allows); call :meth:`leave`
        to give it up. Joining a room already joined returns at once.
        """
        check_room(room)
        check_since(since)
        check_epoch(epoch)
        self._check_usable()
        known = self._state.rooms.get(room)
        if known is not None and known.joins > 0:
            return Joined(room, 0, True, self._state.position(room), self._state.epoch(room))
        future: asyncio.Future[Joined] = asyncio.get_running_loop().create_future()
        waiters = self._joins.setdefault(room, [])
        waiters.append(future)
        try:
            frames = self._state.join(room, since, epoch)
            if frames and self._link is not None:
                await self._link.send(frames)
            async with asyncio.timeout(self._timeout(timeout)):
                return await future
        finally:
            waiters.remove(future)
            if not waiters and self._joins.get(room) is waiters:
                del self._joins[room]

    async def leave(self, room: str, *, timeout: float | None = None) -> None:
        """Stop receiving ``room``; its messages not yet taken are dropped."""
        check_room(room)
        self._check_usable()
        frames = self._state.leave(room)
        self._acks.forget(room)
        self._resolve_joins(room, error=StreamgateError(f"left {room} before the join completed"))
        link = self._link
        if not frames or link is None or link.down.is_set():
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        link.left.setdefault(room, deque()).append(future)
        if not await link.send(frames):
            return
        with contextlib.suppress(Lost):
            async with asyncio.timeout(self._timeout(timeout)):
                await future

    async def publish(self, room: str, body: Any, *, client_id: str | None = None,
                      timeout: float | None = None) -> str:
        """Store ``body`` (any JSON value) in ``room``; return its message id.

        Retries on ``unavailable``/``rate_limited`` and across reconnects with
        the same ``client_id`` (a fresh uuid4 unless given), which the server
        stores at most once. Raises :class:`ServerError` for a refusal,
        :class:`PublishTimeout` after ``publish_timeout``, and ValueError at
        once for a bad room name, a body that is not JSON, or a frame larger
        than ``max_frame_bytes``.
        """
        check_room(room)
        return await self._confirmed({"type": "publish", "room": room, "body": body}, client_id, timeout)

    async def direct(self, user: str, body: Any, *, client_id: str | None = None,
                     timeout: float | None = None) -> str:
        """A direct message: stored in ``user``'s inbox room ``@user``."""
        check_user(user)
        return await self._confirmed({"type": "direct", "to": user, "body": body}, client_id, timeout)

    async def broadcast(self, body: Any, *, client_id: str | None = None, timeout: float | None = None) -> str:
        """A message to every user (room ``@all``); needs the broadcast right."""
        return await self._confirmed({"type": "broadcast", "body": body}, client_id, timeout)

    async def ack(self, room: str, id_: str) -> None:
        """Mark ``room`` processed up to ``id_``: a later join without ``since``
        (by any connection of this user) starts after it. Sent at once when
        connected, else after the next connection is up."""
        check_room(room)
        self._acks.processed(room, id_)
        await self._flush_acks()

    # -- receiving ----------------------------------------------------------------

    async def receive(self, timeout: float | None = None) -> Item:
        """The next :class:`Message` or :class:`Gap`, waiting at most ``timeout``
        (None: until one comes or the client ends).

        Raises the fatal error once everything before it was taken, and
        :class:`ClientClosed` after :meth:`close`. With ``auto_ack``, asking
        for the next item acknowledges the previous message.
        """
        self._mark_processed()
        async with asyncio.timeout(timeout):
            while True:
                if self._closed:
                    raise ClientClosed("client closed")
                item = self._state.pop()
                if item is not None:
                    await self._after_take()
                    if isinstance(item, Message):
                        self._taken = item
                    return item
                if self._fatal is not None:
                    raise self._fatal
                if self._auto_ack and self._acks.unsent and self.connected:
                    await self._flush_acks()  # sets unsent to 0: this runs once per idle spell
                    continue  # the flush awaited: look at the queue again
                self._items.clear()
                await self._items.wait()

    async def messages(self) -> AsyncIterator[Item]:
        """Every item, in order, until the client is closed. One consumer only."""
        while True:
            try:
                item = await self.receive()
            except ClientClosed:
                return
            yield item

    # -- presence and history (HTTP) ---------------------------------------------

    async def presence(self) -> list[str]:
        """Users with a live connection on any live instance (``GET /presence``)."""
        data = await self._get("/presence", {})
        return [u for u in data.get("users", []) if isinstance(u, str)]

    async def members(self, room: str) -> list[str]:
        """Users who joined ``room`` on a live connection; needs the join right."""
        data = await self._get(room_path(room, "members"), {})
        return [u for u in data.get("members", []) if isinstance(u, str)]

    async def history(self, room: str, *, after: str | None = None, before: str | None = None,
                      limit: int = 100) -> HistoryPage:
        """A page of ``room``'s history, oldest first; needs the join right.

        ``after=ID`` pages forward (``next`` is the following page's
        ``after``); ``before="$"`` gives the latest ``limit`` messages and
        ``before=ID`` the ones just before ``ID`` (``prev`` is the older
        page's ``before``). Neither: from the oldest retained message.
        """
        query = history_query(after, before, limit)
        return parse_page(room, await self._get(room_path(room, "messages"), query))

    async def _get(self, path: str, query: dict[str, str]) -> dict[str, Any]:
        self._check_usable()
        if self._token is None and self._provider is not None:
            async with asyncio.timeout(self._opts.open_timeout):
                self._token = await self._provider()
        api = HttpApi(http_base(self.url or self._urls[0]), self._opts.http_timeout)
        data = await api.get(path, query, token=self._token, user=self._user)
        if not isinstance(data, dict):
            raise StreamgateError(f"unexpected answer to {path}")
        return data

    # -- internals: state events ----------------------------------------------

    def _emit(self, event: ConnectionEvent) -> None:
        if isinstance(event, Connecting):
            self._now = State.CONNECTING
        elif isinstance(event, Connected):
            self._now = State.CONNECTED
        elif isinstance(event, Disconnected):
            self._now = State.DISCONNECTED if event.reconnecting else State.CLOSED
        if self._listener is None:
            return
        try:
            self._listener(event)
        except Exception:
            log.exception("the on_state callback failed on %r", event)

    def _refreshed(self, token: str, answer: TokenRefreshed) -> None:
        self._token = token
        self._emit(Refreshed(answer.exp))

    def _maybe_resumed(self, link: Link) -> None:
        if self.connections > 1 and not link.resumed and self._state.settled():
            link.resumed = True
            self._emit(Resumed(link.url, len(self._state.rooms), link.replayed, link.rooms_lost))

    # -- internals: requests --------------------------------------------------

    def _timeout(self, timeout: float | None) -> float:
        return self._opts.request_timeout if timeout is None else timeout

    def _check_usable(self) -> None:
        if self._fatal is not None:
            raise self._fatal
        if self._closed:
            raise ClientClosed("client closed")

    async def _wait_link(self) -> Link:
        while True:
            self._check_usable()
            link = self._link
            if link is not None and not link.down.is_set():
                return link
            await self._linked.wait()
            if self._link is None:
                self._check_usable()

    async def _confirmed(self, frame: Frame, client_id: str | None, timeout: float | None) -> str:
        cid = client_id or uuid.uuid4().hex
        text = encode({**frame, "client_id": cid})  # a body that is not JSON fails here, once
        if len(text.encode()) > self._opts.max_frame_bytes:
            raise ValueError(f"publish frame of {len(text.encode())} bytes exceeds {self._opts.max_frame_bytes}")
        limit = self._opts.publish_timeout if timeout is None else timeout
        backoff = Backoff(self._opts.backoff_base, self._opts.backoff_max)
        try:
            async with asyncio.timeout(limit):
                while True:
                    link = await self._wait_link()
                    answer = await link.request(cid, text)
                    if isinstance(answer, Published):
                        return answer.id
                    if answer is None:
                        continue  # the connection was lost: send again on the next one
                    if answer.code not in RETRYABLE_ERRORS:
                        raise ServerError(answer.code, answer.reason, answer.ref)
                    await asyncio.sleep(backoff.next_delay())
        except TimeoutError:
            raise PublishTimeout(cid, limit) from None

    def _mark_processed(self) -> None:
        taken, self._taken = self._taken, None
        if self._auto_ack and taken is not None and taken.room in self._state.rooms:
            self._acks.processed(taken.room, taken.id)

    async def _flush_acks(self) -> None:
        link = self._link
        if link is None or link.down.is_set():
            return  # sent after the next `welcome`
        frames = self._acks.flush()
        if frames:
            await link.send(frames)

    async def _after_take(self) -> None:
        frames = self._state.resubscribe()
        link = self._link
        if frames and link is not None:
            await link.send(frames)
        if self._auto_ack and self._acks.unsent >= self._opts.ack_batch:
            await self._flush_acks()

    def _resolve_joins(self, room: str, joined: Joined | None = None, error: BaseException | None = None) -> None:
        for future in self._joins.get(room, ()):
            if future.done():
                continue
            if joined is not None:
                future.set_result(joined)
            else:
                future.set_exception(error or ClientClosed("client closed"))

    def _end(self, error: BaseException) -> None:
        """Wake everything that waits, so that it sees the client ended."""
        for room in list(self._joins):
            self._resolve_joins(room, error=error)
        self._linked.set()
        self._items.set()

    # -- internals: the supervisor ---------------------------------------------

    async def _supervise(self) -> None:
        auth_failures = 0
        attempt = 0
        tries = 0  # attempts since the last connection that was up
        try:
            while not self._closed:
                url = self._urls[attempt % len(self._urls)]
                attempt += 1
                tries += 1
                self._emit(Connecting(url, tries))
                code, welcomed = await self._connect_and_serve(url)
                if welcomed:
                    auth_failures = 0
                    tries = 0
                action = close_action(code)
                if action is CloseAction.REFRESH_TOKEN:
                    auth_failures += 1
                give_up = action is CloseAction.FATAL or (
                    action is CloseAction.REFRESH_TOKEN
                    and (self._provider is None or auth_failures >= self._opts.max_auth_failures))
                if welcomed:
                    self._emit(Disconnected(url, code, self._close_reason,
                                            reconnecting=not give_up and not self._closed))
                if action is CloseAction.FATAL:
                    raise OriginRejected(f"{url}: origin not allowed (close code {code})")
                if action is CloseAction.REFRESH_TOKEN:
                    if give_up:
                        raise AuthError(f"{url}: unauthorized (close code {code}, {auth_failures} in a row)")
                    self._token = None  # the provider is asked before the next attempt
                delay = self._backoff.next_delay()
                log.info("connection to %s ended (code %s); reconnecting in %.2f s", url, code, delay)
                await asyncio.sleep(delay)
        except FatalError as exc:
            self._fatal = exc
            self._now = State.CLOSED
            self._end(exc)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bug: tell the application instead of hanging it
            log.exception("client supervisor failed")
            fatal = FatalError(f"client failed: {exc!r}")
            fatal.__cause__ = exc
            self._fatal = fatal
            self._now = State.CLOSED
            self._end(fatal)

    async def _connect_and_serve(self, url: str) -> tuple[int | None, bool]:
        """One connection from start to end: (close code or None, reached welcome)."""
        opts = self._opts
        try:
            if self._token is None and self._provider is not None:
                async with asyncio.timeout(opts.open_timeout):
                    self._token = await self._provider()
            token, subprotocols = self._token, None
            if token is not None and opts.token_transport == "subprotocol":
                subprotocols = [Subprotocol(SUBPROTOCOL), Subprotocol(TOKEN_SUBPROTOCOL_PREFIX + token)]
                token = None
            ws = await ws_connect(
                with_identity(url, token=token, user=self._user),
                subprotocols=subprotocols,
                open_timeout=opts.open_timeout,
                ping_interval=opts.ping_interval,
                ping_timeout=opts.ping_timeout,
                close_timeout=opts.close_timeout,
                max_size=opts.max_size,
            )
        except InvalidStatus as exc:
            self._last_error = exc
            status = exc.response.status_code
            return {401: UNAUTHORIZED, 403: ORIGIN_NOT_ALLOWED}.get(status), False
        except InvalidURI as exc:
            raise FatalError(f"bad URL {url!r}: {exc}") from exc
        except (OSError, TimeoutError, InvalidHandshake) as exc:
            self._last_error = exc
            log.debug("connecting to %s failed: %r", url, exc)
            return None, False
        except Exception as exc:  # the token provider failed: try again later
            self._last_error = exc
            log.warning("token provider failed: %r", exc)
            return None, False
        link: Link | None = None
        self._close_reason = ""
        try:
            async with asyncio.timeout(opts.open_timeout):
                first = decode(await ws.recv())
            if not isinstance(first, Welcome):
                raise BadFrame(f"expected welcome, got {first!r}")
            link = Link(ws, url, first.user, first.instance)
            await self._up(link)
            return await self._serve(link), True
        except ConnectionClosed as exc:
            self._close_reason = exc.rcvd.reason if exc.rcvd is not None else ""
            return (exc.rcvd.code if exc.rcvd is not None else ABNORMAL), link is not None
        except (TimeoutError, BadFrame) as exc:
            self._last_error = exc
            log.warning("no usable welcome from %s: %r", url, exc)
            return None, False
        finally:
            if link is not None:
                self._down(link)
            with contextlib.suppress(Exception):
                await ws.close()

    async def _up(self, link: Link) -> None:
        self.user, self.instance, self.url = link.user, link.instance, link.url
        self.connections += 1
        frames = self._state.connected() + self._acks.flush()
        self._link = link
        self._linked.set()
        self._emit(Connected(link.url, link.user, link.instance, reconnect=self.connections > 1))
        if self._state.settled():
            self._backoff.reset()
        self._maybe_resumed(link)
        if self._provider is not None and self._opts.refresh_margin > 0:
            refresher = Refresher(self._provider, lambda: self._token, self._refreshed,
                                  margin=self._opts.refresh_margin, timeout=self._opts.request_timeout)
            self._refresher = asyncio.create_task(refresher.run(link), name="streamgate-refresh")
        await link.send(frames)

    def _down(self, link: Link) -> None:
        # One synchronous step, so nobody sees a link that is down as current.
        if self._refresher is not None:
            self._refresher.cancel()  # it only sleeps or waits on this link
            self._refresher = None
        if self._link is link:
            self._link = None
            if not self._closed and self._fatal is None:
                self._linked.clear()
        self._state.disconnected()
        self._acks.disconnected()
        link.lost()

    async def _serve(self, link: Link) -> int:
        """Read frames until the connection ends; return its close code."""
        while True:
            try:
                raw = await link.ws.recv()
            except ConnectionClosed as exc:
                self._close_reason = exc.rcvd.reason if exc.rcvd is not None else ""
                return exc.rcvd.code if exc.rcvd is not None else ABNORMAL
            try:
                frame = decode(raw)
            except BadFrame as exc:
                log.warning("ignoring a frame from %s: %s", link.url, exc)
                continue
            if self._dispatch(link, frame):
                log.info("storage unavailable for a join on %s: reconnecting", link.url)
                await link.ws.close(1000, "rejoin")
                return ABNORMAL

    def _dispatch(self, link: Link, frame: ServerFrame) -> bool:
        """Apply one frame; True when the connection should be started over."""
        if isinstance(frame, Message):
            if self._state.on_message(frame):
                self._items.set()
        elif isinstance(frame, Joined):
            if self._state.on_joined(frame):
                if self._state.queue:
                    self._items.set()
                self._resolve_joins(frame.room, joined=frame)
                link.replayed += frame.replayed
                link.rooms_lost += not frame.recovered
                if self._state.settled():
                    self._backoff.reset()
                    self._maybe_resumed(link)
        elif isinstance(frame, Published):
            answer = link.answers.get(frame.client_id or "")
            if answer is not None and not answer.done():
                answer.set_result(frame)
        elif isinstance(frame, Left):
            self._state.on_left(frame.room)
            waiting = link.left.get(frame.room)
            if waiting:
                left = waiting.popleft()
                if not left.done():
                    left.set_result(None)
        elif isinstance(frame, TokenRefreshed):
            if link.refreshing is not None and not link.refreshing.done():
                link.refreshing.set_result(frame)
        elif isinstance(frame, ErrorReply):
            return self._on_error(link, frame)
        return False

    def _on_error(self, link: Link, error: ErrorReply) -> bool:
        ref = error.ref
        future = link.answers.get(ref) if ref is not None else None
        if future is not None and not future.done():
            future.set_result(error)
            return False
        if ref is not None and self._state.joining(ref):
            if error.code in RETRYABLE_ERRORS:
                return True  # join again on a fresh connection, after a backoff
            self._state.refuse(ref)
            self._resolve_joins(ref, error=ServerError(error.code, error.reason, ref))
            return False
        refreshing = link.refreshing
        if refreshing is not None and not refreshing.done() and (ref is None or error.code == "forbidden"):
            refreshing.set_result(error)  # the answer to the refresh in flight
            return False
        log.warning("server error on %s: %s %s (ref %s)", link.url, error.code, error.reason, ref)
        return False


def connect(
    urls: str | Sequence[str],
    *,
    token: str | None = None,
    user: str | None = None,
    token_provider: TokenProvider | None = None,
    auto_ack: bool = False,
    options: Options | None = None,
    on_state: StateListener | None = None,
) -> Client:
    """A client for ``async with``: ``async with connect(urls, user="alice") as c: ...``.

    ``urls``: one ``ws://host:port/ws`` URL or several (reconnects go round
    them). Identity: ``token`` (jwt mode), ``token_provider`` (an async
    callable returning a fresh token, asked first when there is no token and
    again after every 4401, and before the token expires to refresh it in
    band), or ``user`` (development mode). ``on_state``: called with each
    connection-state event (:mod:`streamgate_client.status`).
    """
    return Client(urls, token=token, user=user, token_provider=token_provider,
                  auto_ack=auto_ack, options=options, on_state=on_state)
