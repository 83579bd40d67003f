"""Per-instance and per-connection limits under abuse.

Each limit must refuse the excess in the documented way and leave the socket
(and everyone else) usable: 1013 for one connection too many, ``too_large``
for oversized frames and bodies, ``rate_limited`` for publishing too fast,
``forbidden`` for joining too many rooms.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests.hostile.conftest import ModuleInstances
from tests.hostile.rawws import OP_TEXT, RawWebSocket, frame_bytes
from tests.hostile.support import LogMark, metric
from tests.support import ModuleAppInstance
from tests.support import Closed, Instance, WsClient, async_wait_until, new_client_id, open_client
from tests.support.http import history_ids, post_message
from tests.support.processes import rss_bytes
from tests.support.tcp import tcp_socket
from tests.support.timeouts import scaled

FRAME_LIMIT = 4096
BODY_LIMIT = 1024
JOIN_LIMIT = 3
RATE, BURST = 5, 5


@pytest.fixture(scope="module")
def full(instances: ModuleInstances) -> Instance:
    return instances.start("LF", MAX_CONNECTIONS="3")


@pytest.fixture(scope="module")
def tight(instances: ModuleInstances) -> Instance:
    return instances.start(
        "LT",
        MAX_FRAME_BYTES=str(FRAME_LIMIT),
        MAX_BODY_BYTES=str(BODY_LIMIT),
        MAX_JOINS=str(JOIN_LIMIT),
        PUBLISH_RATE=str(RATE),
        PUBLISH_BURST=str(BURST),
    )


def _user(name: str) -> str:
    return f"{name}-{uuid.uuid4().hex[:8]}"


def _room() -> str:
    return f"lim-{uuid.uuid4().hex[:10]}"


async def _open_count(inst: Instance) -> float:
    return await metric(inst, "websocket_connections", instance=inst.instance_id)


async def _usable(client: WsClient) -> None:
    assert (await client.ping())["type"] == "pong"


# -- connections --------------------------------------------------------------------


async def _admitted(inst: Instance, user: str) -> WsClient | int:
    """Open a connection; return it once welcomed, or the close code it got."""
    client = await open_client(inst, user, welcome=False)
    try:
        frame = await client.recv_frame()
    except Closed as closed:
        await client.close()
        assert closed.code is not None
        return closed.code
    assert frame.get("type") == "welcome", frame
    return client


async def test_one_connection_too_many_gets_1013_and_a_freed_slot_is_reused(full: Instance) -> None:
    await async_wait_until(lambda: _zero(full), timeout=5, message="instance not idle")
    before = await metric(full, "streamgate_refused_connections_total", reason="full")
    clients = [await open_client(full, _user(f"c{n}")) for n in range(3)]
    try:
        assert await _admitted(full, _user("extra")) == 1013
        assert await metric(full, "streamgate_refused_connections_total", reason="full") == before + 1
        for client in clients:
            await _usable(client)
        await clients.pop(0).close()

        async def admitted() -> WsClient | None:
            got = await _admitted(full, _user("next"))
            return got if isinstance(got, WsClient) else None

        clients.append(await async_wait_until(admitted, timeout=5, interval=0.05,
                                              message="the freed slot was never reused"))
        assert await _admitted(full, _user("extra")) == 1013
    finally:
        for client in clients:
            await client.close()


async def _zero(inst: Instance) -> bool:
    return await _open_count(inst) == 0


async def test_a_burst_of_handshakes_cannot_overshoot_the_limit(full: Instance) -> None:
    await async_wait_until(lambda: _zero(full), timeout=5, message="instance not idle")
    results = await asyncio.gather(*(_admitted(full, _user(f"b{n}")) for n in range(12)))
    clients = [r for r in results if isinstance(r, WsClient)]
    try:
        codes = sorted(r for r in results if not isinstance(r, WsClient))
        assert len(clients) == 3, f"{len(clients)} of 12 simultaneous handshakes admitted; refusals {codes}"
        assert codes == [1013] * 9
        for client in clients:
            await _usable(client)
    finally:
        for client in clients:
            await client.close()


# -- frame and body size ---------------------------------------------------------------


def _ping_of(size: int) -> str:
    head, tail = '{"type":"ping","pad":"', '"}'
    return head + "x" * (size - len(head) - len(tail)) + tail


async def test_oversized_frames_get_too_large_and_the_socket_stays_usable(tight: Instance) -> None:
    room = _room()
    async with await open_client(tight, _user("big"), max_size=None) as client, \
            await open_client(tight, _user("member")) as member:
        await member.join(room, since="$")
        await client.send_text(_ping_of(FRAME_LIMIT))  # exactly at the limit: fine
        assert (await client.expect("pong", skip=()))["type"] == "pong"
        for label, send in [
            ("one byte over", lambda: client.send_text(_ping_of(FRAME_LIMIT + 1))),
            ("multi-byte characters over", lambda: client.send_text(
                '{"type":"ping","pad":"' + "é" * (FRAME_LIMIT // 2) + '"}')),
            ("binary over", lambda: client.send_bytes(b"\0" * (FRAME_LIMIT + 1))),
            ("1 MiB publish", lambda: client.send(
                {"type": "publish", "room": room, "body": "x" * 2**20, "client_id": "huge"})),
        ]:
            await send()
            try:
                error = await client.expect("error", skip=())
            except Closed as closed:
                assert closed.code == 1009, f"{label}: closed with {closed.code}"
                pytest.fail(f"{label}: closed with 1009; the contract allows it but this server answers errors")
            assert error["code"] == "too_large", (label, error)
        await _usable(client)
        published = await client.publish(room, "small is fine", new_client_id())
        await member.wait_for_id(room, published["id"])
        assert await history_ids(tight, room) == [published["id"]]


def _nested(depth: int, kind: str = "list") -> Any:
    value: Any = "leaf"
    for _ in range(depth):
        value = [value] if kind == "list" else {"k": value}
    return value


async def test_body_size_and_depth_limits(tight: Instance) -> None:
    room = _room()
    async with await open_client(tight, _user("deep")) as client:
        refused = {
            "body over MAX_BODY_BYTES": "x" * (BODY_LIMIT + 1),
            "33 nested lists": _nested(33),
            "33 nested objects": _nested(33, "object"),
        }
        for label, body in refused.items():
            cid = new_client_id()
            await client.send({"type": "publish", "room": room, "body": body, "client_id": cid})
            error = await client.expect("error", skip=())
            assert (error["code"], error["ref"]) == ("too_large", cid), (label, error)
        # Nesting the JSON parser itself gives up on is invalid JSON, wherever it is.
        for label, text in {
            "1500 levels in the body": '{"type":"publish","room":"%s","body":%s}' % (room, "[" * 1500 + "]" * 1500),
            "1500 levels in an extra field": '{"type":"ping","x":%s}' % ("[" * 1500 + "]" * 1500),
            "1500 levels as the room": '{"type":"join","room":%s}' % ("[" * 1500 + "]" * 1500),
        }.items():
            assert len(text.encode()) <= FRAME_LIMIT, label
            await client.send_text(text)
            error = await client.expect("error", skip=())
            assert error["code"] == "bad_frame", (label, error)
        await _usable(client)
        accepted = [await client.publish(room, _nested(32), new_client_id()),
                    await client.publish(room, _nested(32, "object"), new_client_id()),
                    await client.publish(room, "y" * (BODY_LIMIT - 2), new_client_id())]
    assert await history_ids(tight, room) == [a["id"] for a in accepted]


async def test_http_publish_applies_the_same_body_limits(tight: Instance) -> None:
    room = _room()
    for label, body in {
        "body over MAX_BODY_BYTES": "x" * (BODY_LIMIT + 1),
        "33 nested lists": _nested(33),
        "200 nested lists": _nested(200),
    }.items():
        response = await post_message(tight, room, body, new_client_id(), user=_user("h"))
        assert response.status_code in (400, 413), (label, response.status_code, response.text)
        assert response.json().get("error") == "too_large", (label, response.text)
    async with tight.http() as http:
        response = await http.post(f"/rooms/{room}/messages", params={"user": _user("h")},
                                   content=b'{"body":' + b"[" * 1500 + b"]" * 1500 + b"}")
    assert response.status_code == 400, response.text
    ok = await post_message(tight, room, _nested(32), new_client_id(), user=_user("h"))
    assert ok.status_code == 201, ok.text
    assert await history_ids(tight, room) == [ok.json()["id"]]


# -- HTTP request size -------------------------------------------------------------------

# What the tight instance reads of a POST: the frame limit, but at least the
# body limit plus 4 KiB for the envelope (app/http.py post_limit).
POST_LIMIT = max(FRAME_LIMIT, BODY_LIMIT + 4096)
FLOOD = 64 * 2**20
MAX_POST_GROWTH = 8 * 2**20


async def _warm_post(inst: Instance, room: str) -> None:
    """One ordinary POST first, so the code paths it loads are in the baseline."""
    ok = await post_message(inst, room, "warm", new_client_id(), user=_user("w"))
    assert ok.status_code == 201, ok.text


async def _raw_answer(port: int, head: bytes, timeout: float) -> tuple[int, dict[str, Any]]:
    """Send raw request bytes and read one answer: its status and JSON body."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(head)
        await writer.drain()
        async with asyncio.timeout(timeout):
            header = await reader.readuntil(b"\r\n\r\n")
            lines = header.decode("latin-1").split("\r\n")
            fields = dict(line.split(": ", 1) for line in lines[1:] if ": " in line)
            length = int({k.lower(): v for k, v in fields.items()}["content-length"])
            body = await reader.readexactly(length)
    finally:
        writer.close()
    return int(lines[0].split()[1]), json.loads(body)


async def test_post_with_a_huge_content_length_is_refused_before_its_body(tight: Instance) -> None:
    room = _room()
    await _warm_post(tight, room)
    baseline = rss_bytes(tight.pid)
    head = (f"POST /rooms/{room}/messages?user={_user('big')} HTTP/1.1\r\n"
            f"Host: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"Content-Length: {200 * 2**20}\r\n\r\n").encode()
    started = time.monotonic()
    # Not one byte of the body is sent: the answer must come from the header alone.
    status, answer = await _raw_answer(tight.port, head, scaled(5))
    assert time.monotonic() - started < scaled(2)
    assert (status, answer["error"]) == (413, "too_large"), answer
    assert rss_bytes(tight.pid) - baseline < MAX_POST_GROWTH
    assert len(await history_ids(tight, room)) == 1  # the warm-up message only


async def test_chunked_post_far_over_the_limit_is_cut_off(tight: Instance) -> None:
    room = _room()
    await _warm_post(tight, room)
    baseline = rss_bytes(tight.pid)
    peak = baseline

    async def flood() -> AsyncIterator[bytes]:
        """A body with no length, streamed: 64 MiB never exist in this process."""
        nonlocal peak
        chunk = b"x" * 65536
        yield b'{"body":"'
        for n in range(FLOOD // len(chunk)):
            if n % 16 == 0:
                peak = max(peak, rss_bytes(tight.pid))
            yield chunk
        yield b'"}'

    started = time.monotonic()
    async with tight.http() as http:
        response = await http.post(f"/rooms/{room}/messages", params={"user": _user("flood")},
                                   content=flood(), headers={"content-type": "application/json"})
    elapsed = time.monotonic() - started
    peak = max(peak, rss_bytes(tight.pid))
    assert response.status_code == 413, response.text
    assert response.json()["error"] == "too_large"
    assert elapsed < scaled(5), f"refusing the flood took {elapsed:.1f}s"
    assert peak - baseline < MAX_POST_GROWTH, f"RSS grew by {(peak - baseline) / 2**20:.1f} MiB"
    async with tight.http() as http:
        assert (await http.get("/healthz")).status_code == 200
    # A body right at the limit still goes through, and only the warm-up and it are stored.
    envelope = b'{"body":"' + b"y" * (BODY_LIMIT - 2) + b'"}'
    fits = envelope[:-1] + b" " * (POST_LIMIT - len(envelope)) + b"}"
    async with tight.http() as http:
        ok = await http.post(f"/rooms/{room}/messages", params={"user": _user("fits")}, content=fits)
    assert ok.status_code == 201, ok.text
    assert len(await history_ids(tight, room)) == 2


HUGE = 12 * 2**20
HOGS = 4
MAX_HELD = 16 * 2**20


async def test_frames_far_over_the_limit_are_not_buffered(instances: ModuleInstances) -> None:
    """Each hog sends all but the last byte of a 12 MiB text frame, so that a
    server that buffers frames it will refuse anyway holds them all at once."""
    app = instances.start("LM", cls=ModuleAppInstance, MAX_FRAME_BYTES=str(FRAME_LIMIT))
    baseline = rss_bytes(app.pid)
    frame = frame_bytes(OP_TEXT, b"x" * HUGE, key=b"\0\0\0\0")
    hogs: list[RawWebSocket] = []
    try:
        for n in range(HOGS):
            ws = await RawWebSocket.connect("127.0.0.1", app.port, f"/ws?user=hog{n}")
            hogs.append(ws)
            assert (await ws.recv_json())["type"] == "welcome"
            with contextlib.suppress(ConnectionError):
                await asyncio.wait_for(ws.send_raw(frame[:-1]), scaled(10))

        def all_taken() -> bool:  # the server has read what it was going to read
            socks = [tcp_socket(app.port, ws.local_port) for ws in hogs]
            return all(s is None or s.state != "ESTABLISHED" or s.rx_queue == 0 for s in socks)

        await async_wait_until(all_taken, timeout=10, message="the server did not read the frames")
        held = rss_bytes(app.pid) - baseline
        async with app.http() as http:
            assert (await http.get("/healthz")).status_code == 200
        assert held < MAX_HELD, f"{HOGS} partial {HUGE >> 20} MiB frames hold {held / 2**20:.0f} MiB of RSS"
    finally:
        for ws in hogs:
            ws.abort()


# -- publish rate ------------------------------------------------------------------------


async def _answers(client: WsClient, cids: list[str]) -> dict[str, dict[str, Any]]:
    """The `published` or `error` frame for each client_id, in any order."""
    got: dict[str, dict[str, Any]] = {}
    deadline = time.monotonic() + 10
    while len(got) < len(cids):
        frame = await client.recv_frame(timeout=max(deadline - time.monotonic(), 0.01))
        if frame.get("type") == "published" and frame.get("client_id") in cids:
            got[frame["client_id"]] = frame
        elif frame.get("type") == "error":
            assert frame.get("ref") in cids, frame
            got[frame["ref"]] = frame
    return got


async def test_publishing_over_the_rate_is_refused_and_the_socket_recovers(tight: Instance) -> None:
    room = _room()
    before = await metric(tight, "streamgate_rate_limited_total", instance=tight.instance_id)
    async with await open_client(tight, _user("spam")) as spammer, \
            await open_client(tight, _user("reader")) as reader:
        await reader.join(room, since="$")
        cids = [new_client_id() for _ in range(15)]
        frames: list[dict[str, Any]] = [
            {"type": "publish", "room": room, "body": cid, "client_id": cid} for cid in cids
        ]
        # direct and broadcast draw on the same bucket: sent right behind the burst.
        extra = [new_client_id(), new_client_id()]
        frames += [{"type": "direct", "to": _user("x"), "body": "more", "client_id": extra[0]},
                   {"type": "broadcast", "body": "more", "client_id": extra[1]}]
        started = time.monotonic()
        for frame in frames:
            await spammer.send(frame)
        answers = await _answers(spammer, cids + extra)
        elapsed = time.monotonic() - started
        accepted = [answers[c] for c in cids if answers[c]["type"] == "published"]
        refused = [answers[c] for c in cids + extra if answers[c]["type"] == "error"]
        assert {f["code"] for f in refused} == {"rate_limited"}, refused
        assert BURST <= len(accepted) <= BURST + int(elapsed * RATE) + 1, (len(accepted), elapsed)
        assert [answers[c]["type"] for c in extra] == ["error", "error"], [answers[c] for c in extra]
        assert await metric(tight, "streamgate_rate_limited_total", instance=tight.instance_id) \
            == before + len(refused)
        await _usable(spammer)

        # Tokens come back at RATE per second: a later publish succeeds.
        async def later() -> dict[str, Any] | None:
            cid = new_client_id()
            await spammer.send({"type": "publish", "room": room, "body": "later", "client_id": cid})
            answer = (await _answers(spammer, [cid]))[cid]
            return answer if answer["type"] == "published" else None

        accepted.append(await async_wait_until(later, timeout=2, interval=1 / RATE,
                                               message="publishing never recovered"))
        await reader.wait_for_id(room, accepted[-1]["id"])
    assert await history_ids(tight, room) == [f["id"] for f in accepted]


# -- joins -------------------------------------------------------------------------------------


async def test_join_cap_per_connection(tight: Instance) -> None:
    user = _user("joiner")
    rooms = [_room() for _ in range(JOIN_LIMIT + 1)]
    async with await open_client(tight, user) as client:
        for room in rooms[:JOIN_LIMIT]:
            await client.join(room, since="$")
        await client.send({"type": "join", "room": rooms[-1], "since": "$"})
        error = await client.expect("error", skip=())
        assert (error["code"], error["ref"]) == ("forbidden", rooms[-1]), error
        for room in ("@all", f"@{user}"):  # reserved rooms count as well
            await client.send({"type": "join", "room": room, "since": "$"})
            error = await client.expect("error", skip=())
            assert (error["code"], error["ref"]) == ("forbidden", room), error
        _, joined = await client.join(rooms[1], since="0")  # joining a joined room again is no new join
        assert joined["room"] == rooms[1]
        await client.leave(rooms[0])
        _, joined = await client.join(rooms[-1], since="$")
        assert joined["room"] == rooms[-1]
        await _usable(client)
        # Only the joined rooms deliver.
        async with await open_client(tight, _user("pub")) as pub:
            first = await pub.publish(rooms[0], "left room", new_client_id())
            last = await pub.publish(rooms[-1], "joined room", new_client_id())
        await client.wait_for_id(rooms[-1], last["id"])
        assert first["id"] not in client.ids[rooms[0]]


# -- join, leave and ack rate ------------------------------------------------------------------

CONTROL_RATE, CONTROL_BURST = 1, 10


@pytest.fixture(scope="module")
def controlled(instances: ModuleInstances) -> Instance:
    return instances.start("LC", CONTROL_RATE=str(CONTROL_RATE), CONTROL_BURST=str(CONTROL_BURST))


async def _room_answers(client: WsClient, rooms: list[str], kinds: set[str]) -> dict[str, dict[str, Any]]:
    """The first answer of a type in ``kinds`` (or an error) for each room."""
    got: dict[str, dict[str, Any]] = {}
    deadline = time.monotonic() + scaled(10)
    while len(got) < len(rooms):
        frame = await client.recv_frame(timeout=max(deadline - time.monotonic(), 0.01))
        if frame.get("type") in kinds and frame.get("room") in rooms:
            got.setdefault(frame["room"], frame)
        elif frame.get("type") == "error":
            assert frame.get("ref") in rooms, frame
            got.setdefault(frame["ref"], frame)
    return got


async def test_join_leave_and_ack_over_the_rate_are_refused_and_the_socket_recovers(
    controlled: Instance,
) -> None:
    before = await metric(controlled, "streamgate_rate_limited_total", instance=controlled.instance_id)
    rooms = [_room() for _ in range(CONTROL_BURST + 6)]
    async with await open_client(controlled, _user("churn")) as client, \
            await open_client(controlled, _user("pub")) as pub:
        started = time.monotonic()
        for room in rooms:
            await client.send({"type": "join", "room": room, "since": "$"})
        answers = await _room_answers(client, rooms, {"joined"})
        elapsed = time.monotonic() - started
        joined = [r for r in rooms if answers[r]["type"] == "joined"]
        refused = [answers[r] for r in rooms if answers[r]["type"] == "error"]
        assert {f["code"] for f in refused} == {"rate_limited"}, refused
        assert CONTROL_BURST <= len(joined) <= CONTROL_BURST + int(elapsed * CONTROL_RATE) + 1, \
            (len(joined), elapsed)
        # The bucket is empty: leave and ack draw on it too, and are refused.
        for frame in ({"type": "leave", "room": joined[0]}, {"type": "ack", "room": joined[0], "id": "1-0"}):
            await client.send(frame)
            error = await client.expect("error", skip=())
            assert (error["code"], error["ref"]) == ("rate_limited", joined[0]), (frame, error)
        assert await metric(controlled, "streamgate_rate_limited_total", instance=controlled.instance_id) \
            == before + len(refused) + 2
        # The socket stays open and keeps its rooms; pings and publishing are not limited.
        await _usable(client)
        sent = await pub.publish(joined[0], "still here", new_client_id())
        await client.wait_for_id(joined[0], sent["id"])

        # Tokens come back at CONTROL_RATE per second: a refused room can be joined later.
        late = next(r for r in rooms if answers[r]["type"] == "error")

        async def rejoined() -> dict[str, Any] | None:
            await client.send({"type": "join", "room": late, "since": "$"})
            answer = (await _room_answers(client, [late], {"joined"}))[late]
            return answer if answer["type"] == "joined" else None

        await async_wait_until(rejoined, timeout=3, interval=1 / CONTROL_RATE,
                               message="joining never recovered")
        sent = await pub.publish(late, "joined late", new_client_id())
        await client.wait_for_id(late, sent["id"])


async def test_the_default_control_rate_lets_a_client_join_and_ack_max_joins_rooms_at_once(
    instances: ModuleInstances,
) -> None:
    """With the shipped defaults (empty values fall back to them), a client
    that joins MAX_JOINS rooms and acks each right after is never refused."""
    inst = instances.start("LD", CONTROL_RATE="", CONTROL_BURST="")
    rooms = [_room() for _ in range(100)]
    async with await open_client(inst, _user("busy")) as client:
        for room in rooms:
            await client.send({"type": "join", "room": room, "since": "0"})
        for room in rooms:
            await client.send({"type": "ack", "room": room, "id": "0-0"})
        answers = await _room_answers(client, rooms, {"joined"})
        assert {a["type"] for a in answers.values()} == {"joined"}, \
            [a for a in answers.values() if a["type"] != "joined"][:3]
        # Frames are handled in order: the pong follows every ack, and no error came before it.
        await client.send({"type": "ping"})
        assert (await client.expect("pong", skip=()))["type"] == "pong"


async def test_limits_leave_no_error_in_the_log(tight: Instance, full: Instance) -> None:
    """Runs last in this module: every refusal above was an ordinary answer."""
    for inst in (tight, full):
        assert LogMark(inst, 0).problems() == [], inst.name
