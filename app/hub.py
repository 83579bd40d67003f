"""Local rooms: which sessions of this instance are in which room, and the
room's live chain.

Contract:
- The first local join of a room subscribes to its channel (and waits for
  Redis to confirm), the last leave unsubscribes. One subscription per room
  with local members, never a global channel.
- Per room the hub keeps ``head``: the id of the last entry it handed to the
  room's sessions. It hands entries over strictly in id order, each once.
- A notification whose ``prev`` is not ``head`` means the live path lost
  something (at-most-once Pub/Sub, a dropped connection): the hub reads the
  stream from ``head`` and hands over what it missed before going on,
  buffering the notifications that arrive meanwhile. The same repair runs for
  every room after the bus reconnects.
- Handing over never waits: each session's ``deliver`` only queues. The
  message frame is built once per entry and the same string goes to every
  local member.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Protocol

from streams.bounded import cancel_and_wait
from streams.bus import Bus
from streams.chain import Phase, RoomChain, Step
from streams.log import RoomLog
from streams.model import MAX, ZERO, Envelope, StreamId, format_id, parse_id
from streams.presence import part_of
from streams.retry import StorageUnavailable

from . import pages
from .pages import Page, PageCache
from .protocol import message_frame, wire_text_frame

log = logging.getLogger("streamgate.hub")

FILL_PAGE = 500
# Bytes of replay pages kept, beyond those some socket still holds, once more
# than one session asked for them or read in a room with several local
# members (a reconnect storm replays the same stretch to many sockets, not all
# at the same moment). A lone socket in a room of its own pins nothing.
PAGE_CACHE_BYTES = 4 * 2**20
# A fill that fails with something other than an outage this many times in a
# row gives the room up: its members are told they lost entries (they close
# with 4408 and resume elsewhere) rather than wait for live delivery in vain.
FILL_FAILURES = 3
# Fills reading at once. After the Pub/Sub link is rebuilt every local room
# fills; a thousand rooms reading at once would queue a thousand round trips
# behind each other, starve the live path and exhaust the connection pool.
# Rooms waiting for a slot keep buffering their notifications (bounded).
FILL_SLOTS = 16


class Member(Protocol):
    user: str

    def deliver(self, env: Envelope, key: StreamId, frame: str, wire: bytes) -> None: ...

    def lost(self, room: str, mark: StreamId) -> None:
        """Entries before ``mark`` were trimmed before the hub could hand
        them over: a member that had not got that far must be told."""


class _Room:
    """A room's members and the asyncio around its pure :class:`RoomChain`."""

    __slots__ = ("name", "members", "chain", "opened", "fill", "entry_bytes")

    def __init__(self, name: str) -> None:
        self.name = name
        self.members: set[Member] = set()
        self.chain = RoomChain()
        self.opened: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.fill: asyncio.Task[None] | None = None
        self.entry_bytes = 0.0  # average wire size of an entry read for replay

    @property
    def closed(self) -> bool:
        return self.chain.phase is Phase.CLOSED


class Hub:
    def __init__(
        self,
        log_: RoomLog,
        subscribe_timeout_s: float,
        on_gap_filled: Callable[[int], None] = lambda n: None,
        on_handover: Callable[[Envelope], None] = lambda env: None,
    ) -> None:
        self._log = log_
        self._bus: Bus | None = None
        self._timeout = subscribe_timeout_s
        self._on_gap_filled = on_gap_filled
        self._on_handover = on_handover
        self._rooms: dict[str, _Room] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._fill_slots = asyncio.Semaphore(FILL_SLOTS)
        self._pages = PageCache(PAGE_CACHE_BYTES)
        self._reading: dict[tuple[str, StreamId, int], asyncio.Task[Page]] = {}

    async def replay_page(self, room: str, after: StreamId, count: int, max_bytes: int) -> Page:
        """Up to ``count`` entries after ``after`` as one page of at most
        ``max_bytes`` (but never less than one entry): one Redis read and one
        encoding per full page however many sessions ask for it while one of
        them still holds it, or while it is kept (a page that is not full may
        still grow, so it is not shared)."""
        # Any page after ``after`` within the budget will do, whatever count
        # it was read with: sockets that start with the room's first (small)
        # page and those that start once its entry size is known then keep
        # to the same page boundaries and share every page.
        key = (room, after, max_bytes)
        page = self._pages.get(key)
        if page is not None:
            return page
        read = self._reading.get(key)
        first = read is None
        if read is None:
            # The read is a task of its own: a socket that goes away while it
            # runs cancels only its own wait, not the others'.
            read = self._reading[key] = asyncio.ensure_future(
                self._read_page(room, after, count, max_bytes, key))
            self._tasks.add(read)  # type: ignore[arg-type]
            read.add_done_callback(self._read_done)
        page = await asyncio.shield(read)
        if not first:
            self._pages.keep(key, page)  # shared: keep it for the stragglers
        return page

    def _read_done(self, read: asyncio.Future[Page]) -> None:
        self._tasks.discard(read)  # type: ignore[arg-type]
        if not read.cancelled():
            read.exception()  # retrieved here: the askers may all have gone

    async def _read_page(self, room: str, after: StreamId, count: int, max_bytes: int,
                         key: tuple[str, StreamId, int]) -> Page:
        r = self._rooms.get(room)
        n = pages.entries_for(max_bytes, r.entry_bytes if r is not None else 0.0, count)
        try:
            entries = await self._log.read_after(room, format_id(after), n)
            # Read after the page: trims only move the mark forward, so one at
            # or below a reader's position proves the page started right
            # after it (read before, a trim could slip in between).
            bounds = await self._log.bounds(room)
        finally:
            self._reading.pop(key, None)
        frames = [wire_text_frame(message_frame(e)) for e in entries]
        page = pages.build(frames, [e.key for e in entries], max_bytes)
        page.trim_mark = parse_id(bounds.trim_mark)
        page.epoch = bounds.epoch or ""
        if frames and r is not None:
            size = sum(map(len, frames)) / len(frames)
            r.entry_bytes = size if r.entry_bytes <= 0 else (3 * r.entry_bytes + size) / 4
        if len(entries) == n or page.count < len(entries):
            self._pages.add(key, page)
            if r is not None and len(r.members) > 1:
                # Another local member may replay the same stretch a little
                # later, after this socket has written the page.
                self._pages.keep(key, page)
        return page

    def forget_pages(self) -> None:
        """The master moved: cached pages may hold entries it never had."""
        self._pages.clear()

    def bind(self, bus: Bus) -> None:
        self._bus = bus

    # -- membership ---------------------------------------------------------

    async def attach(self, room: str, member: Member) -> None:
        """Add ``member``; return once the room's live path is open."""
        r = self._rooms.get(room)
        if r is None:
            r = self._rooms[room] = _Room(room)
            self._spawn(self._open(r))
        r.members.add(member)
        try:
            await asyncio.shield(r.opened)
        except BaseException:
            self.detach(room, member)
            raise

    def detach(self, room: str, member: Member) -> None:
        r = self._rooms.get(room)
        if r is None:
            return
        r.members.discard(member)
        if not r.members:
            self._drop(r)

    def _drop(self, r: _Room) -> None:
        r.chain.close()
        if self._rooms.get(r.name) is r:
            del self._rooms[r.name]
            if self._bus is not None:
                self._spawn(self._bus.unsubscribe(r.name))

    def __len__(self) -> int:
        return len(self._rooms)

    def head(self, room: str) -> StreamId:
        r = self._rooms.get(room)
        return r.chain.head if r is not None else ZERO

    def rooms(self, part: int = 0, parts: int = 1) -> dict[str, set[str]]:
        """Local rooms and the users in them (for presence refresh); only the
        rooms of heartbeat tick ``part`` of ``parts`` (see ``part_of``)."""
        return {name: {m.user for m in r.members} for name, r in self._rooms.items()
                if parts <= 1 or part_of(name, parts) == part}

    def has_user(self, room: str, user: str) -> bool:
        r = self._rooms.get(room)
        return r is not None and any(m.user == user for m in r.members)

    # -- live path (called from the bus read loop: never blocks) -------------

    def on_entry(self, env: Envelope) -> None:
        r = self._rooms.get(env.room)
        if r is not None:
            self._apply(r, r.chain.notified(env))

    def on_resync(self, room: str) -> None:
        """The bus reconnected: catch the room up from its stream."""
        r = self._rooms.get(room)
        if r is not None:
            self._apply(r, r.chain.resynced())

    def _apply(self, r: _Room, step: Step) -> None:
        """Carry out what the chain decided: tell, hand over, start a fill."""
        if step.lost is not None:
            for m in tuple(r.members):
                m.lost(r.name, step.lost)
        for env in step.deliver:
            self._hand_over(r, env)
        if step.filled:
            self._on_gap_filled(step.filled)
        if step.read and r.fill is None and r.opened.done():
            r.fill = asyncio.create_task(self._fill(r), name=f"fill:{r.name}")
            self._tasks.add(r.fill)
            r.fill.add_done_callback(self._tasks.discard)

    def _hand_over(self, r: _Room, env: Envelope) -> None:
        frame = message_frame(env)
        wire = wire_text_frame(frame)
        key = env.key
        for m in tuple(r.members):
            m.deliver(env, key, frame, wire)
        self._on_handover(env)

    # -- repair from the stream ---------------------------------------------

    async def _open(self, r: _Room) -> None:
        try:
            assert self._bus is not None
            await self._bus.subscribe(r.name, self._timeout)
            head = parse_id(await self._log.last_id(r.name))
        except BaseException as exc:
            r.chain.close()
            mine = self._rooms.get(r.name) is r
            if mine:
                del self._rooms[r.name]
            if not r.opened.done():
                r.opened.set_exception(
                    exc if isinstance(exc, StorageUnavailable) else StorageUnavailable(str(exc))
                )
            # Only while no newer room of that name exists: its subscription
            # is the same channel, and is not ours to drop.
            if mine and self._bus is not None and r.name not in self._rooms:
                await self._bus.unsubscribe(r.name)
            return
        r.opened.set_result(None)
        self._apply(r, r.chain.opened(head))

    async def _fill(self, r: _Room) -> None:
        """Read the stream after the chain's head until the chain goes live.

        An outage is waited out with a growing pause; any other failure is
        logged, and after a few in a row the room is given up (its members
        are told they lost entries) instead of staying silent for ever.
        """
        delay = 0.05
        failures = 0
        try:
            while r.chain.filling:
                try:
                    async with self._fill_slots:
                        if not r.chain.filling:
                            break
                        page = await self._log.read_after(r.name, format_id(r.chain.head),
                                                          FILL_PAGE)
                        # The trim mark read after the page: trims only move
                        # it forward, so one at or below head proves the page
                        # started right after head (read before, a trim could
                        # slip in between and the page skip entries unseen).
                        bounds = await self._log.bounds(r.name)
                except StorageUnavailable:
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 2.0)
                    continue
                except Exception:
                    failures += 1
                    log.exception("reading room %s failed", r.name)
                    if failures >= FILL_FAILURES:
                        self._give_up(r)
                        return
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 2.0)
                    continue
                failures = 0
                step = r.chain.read_done(parse_id(bounds.trim_mark),
                                         bounds.epoch or "", page)
                self._apply(r, step)
        finally:
            r.fill = None

    def _give_up(self, r: _Room) -> None:
        members = tuple(r.members)
        self._drop(r)
        for m in members:
            m.lost(r.name, MAX)

    def _spawn(self, coro) -> None:  # type: ignore[no-untyped-def]
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self, timeout_s: float = 1.0) -> None:
        """Cancel the fills and unsubscribes in flight; bounded, since a
        task stuck in a Redis call must not hold up the process's exit."""
        await cancel_and_wait(list(self._tasks), timeout_s, "hub tasks")
