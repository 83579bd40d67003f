"""HTTP routes: history paging, publishing, health, metrics, presence and members."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from tests.support import Instance, async_wait_until, new_client_id, open_client
from tests.support.http import history, members, post_message, presence, room_path
from tests.support.ids import ID_RE, assert_ids_equal


async def test_health_and_readiness(inst_a: Instance, inst_b: Instance) -> None:
    for inst in (inst_a, inst_b):
        async with inst.http() as http:
            assert (await http.get("/healthz")).status_code == 200
            assert (await http.get("/readyz")).status_code == 200


async def test_metrics_are_prometheus_text(inst_a: Instance) -> None:
    async with inst_a.http() as http:
        response = await http.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    assert "# TYPE " in response.text
    assert "# HELP " in response.text


async def test_the_browser_sdk_is_served_from_its_own_package(inst_a: Instance) -> None:
    sdk = Path(__file__).resolve().parents[1] / "client" / "js"
    async with inst_a.http() as http:
        script = await http.get("/static/streamgate.js")
        types = await http.get("/static/streamgate.d.ts")
        page = await http.get("/static/chat.js")
        chosen = await http.get("/static/streamgate.js", params={"path": "/etc/passwd"})
    assert script.status_code == 200 and script.content == (sdk / "streamgate.js").read_bytes()
    assert script.headers["content-type"].startswith("text/javascript")
    assert types.status_code == 200 and types.content == (sdk / "streamgate.d.ts").read_bytes()
    assert page.status_code == 200 and "./streamgate.js" in page.text  # the demo page imports it beside itself
    assert chosen.content == script.content  # nothing in the request chooses the file


async def test_paging_through_history_gives_every_message_in_order(
    inst_a: Instance, inst_b: Instance, room: str, uid: Callable[[str], str]
) -> None:
    user = uid("writer")
    async with await open_client(inst_b, user) as pub:
        published = await pub.publish_many(room, [{"n": n} for n in range(333)])
    ids = [p["id"] for p in published]

    pages: list[list[str]] = []
    after: str | None = None
    async with inst_a.http() as http:
        for _ in range(100):
            params = {"limit": "37", "user": "reader"}
            if after is not None:
                params["after"] = after
            response = await http.get(room_path(room, "messages"), params=params)
            assert response.status_code == 200, response.text
            page = response.json()
            assert len(page["messages"]) <= 37
            pages.append([m["id"] for m in page["messages"]])
            for message in page["messages"]:
                assert {"id", "from", "body", "ts"} <= set(message), message
                assert ID_RE.match(message["id"])
                assert message["from"] == user
                assert isinstance(message["ts"], int)
            after = page["next"]
            if after is None:
                break
        else:
            raise AssertionError("paging never ended with next=null")

    assert_ids_equal([i for page in pages for i in page], ids, "paged history")
    assert sum(1 for page in pages if page) >= 333 // 37
    full = await history(inst_b, room, limit=1000)
    assert [m["body"] for m in full] == [{"n": n} for n in range(333)]


async def test_history_after_an_id_starts_after_it(
    inst_a: Instance, room: str, uid: Callable[[str], str]
) -> None:
    async with await open_client(inst_a, uid("w")) as pub:
        ids = [p["id"] for p in await pub.publish_many(room, list(range(20)))]
    assert [m["id"] for m in await history(inst_a, room, after=ids[9])] == ids[10:]
    assert [m["id"] for m in await history(inst_a, room, after=ids[-1])] == []
    assert [m["id"] for m in await history(inst_a, room, limit=5)] == ids


async def test_history_of_an_unknown_room_is_empty(inst_a: Instance, room: str) -> None:
    async with inst_a.http() as http:
        response = await http.get(room_path(room, "messages"), params={"user": "reader"})
    assert response.status_code == 200
    assert response.json()["messages"] == []
    assert response.json()["next"] is None


async def test_post_stores_and_delivers_live_with_idempotency(
    inst_a: Instance, inst_b: Instance, room: str, uid: Callable[[str], str]
) -> None:
    poster = uid("poster")
    async with await open_client(inst_a, uid("sub")) as sub:
        await sub.join(room, since="$")
        cid = new_client_id()
        created = await post_message(inst_b, room, {"via": "http"}, cid, user=poster)
        assert created.status_code == 201, created.text
        answer = created.json()
        assert ID_RE.match(answer["id"])
        assert answer["duplicate"] is False

        await sub.wait_for_id(room, answer["id"])
        msg = sub.messages[room][0]
        assert msg["from"] == poster
        assert msg["body"] == {"via": "http"}
        assert msg["room"] == room

        again = await post_message(inst_a, room, {"via": "http"}, cid, user=poster)
        assert again.status_code == 201, again.text
        assert again.json()["id"] == answer["id"]
        assert again.json()["duplicate"] is True

        barrier = await post_message(inst_b, room, "barrier", user=poster)
        assert barrier.status_code == 201
        await sub.wait_for_id(room, barrier.json()["id"])
        assert sub.ids[room] == [answer["id"], barrier.json()["id"]]
    assert [m["id"] for m in await history(inst_a, room)] == sub.ids[room]


async def test_post_to_an_invalid_room_is_a_client_error(inst_a: Instance) -> None:
    response = await post_message(inst_a, "bad room!", "x")
    assert 400 <= response.status_code < 500


async def test_post_without_body_is_a_client_error(inst_a: Instance, room: str) -> None:
    async with inst_a.http() as http:
        response = await http.post(room_path(room, "messages"), params={"user": "u"}, json={"client_id": "x"})
        assert 400 <= response.status_code < 500
        response = await http.post(
            room_path(room, "messages"), params={"user": "u"}, content=b"{not json",
            headers={"content-type": "application/json"},
        )
        assert 400 <= response.status_code < 500


async def test_presence_and_members_routes(
    inst_a: Instance, inst_b: Instance, room: str, uid: Callable[[str], str]
) -> None:
    alice, bob = uid("alice"), uid("bob")
    async with await open_client(inst_a, alice) as a, await open_client(inst_b, bob) as b:
        await a.join(room, since="$")
        await b.join(room, since="$")
        for inst in (inst_a, inst_b):
            await async_wait_until(
                lambda inst=inst: _has(presence(inst), {alice, bob}), timeout=5, message="presence"
            )
            await async_wait_until(
                lambda inst=inst: _has(members(inst, room), {alice, bob}), timeout=5, message="members"
            )
        await b.leave(room)
        await async_wait_until(
            lambda: _lacks(members(inst_a, room), {bob}), timeout=5, message="bob still a member after leave"
        )
        assert alice in await members(inst_b, room)


async def _has(users_coro: object, wanted: set[str]) -> bool:
    users = await users_coro  # type: ignore[misc]
    return wanted <= users


async def _lacks(users_coro: object, unwanted: set[str]) -> bool:
    users = await users_coro  # type: ignore[misc]
    return not (unwanted & users)
