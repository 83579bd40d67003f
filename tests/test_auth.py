"""AUTH_MODE=jwt: refused tokens, room rights from the `rooms` claim, broadcast right."""

from __future__ import annotations

import uuid
from typing import Any

import jwt as pyjwt
import pytest

from tests.support import Instance, ServerError, async_wait_until, new_client_id, open_client, try_connect
from tests.support.http import auth, history_ids, post_message, presence, room_path
from tests.support.tokens import SECRET, make_token, unsigned_token


def _refused_tokens() -> list[tuple[str, str | None]]:
    sub = "mallory"
    return [
        ("no token", None),
        ("empty token", ""),
        ("garbage", "not-a-jwt"),
        ("wrong signature", make_token(sub, secret="some-other-secret-of-sufficient-length-xx")),
        ("expired", make_token(sub, ttl=-3600)),
        ("alg none", unsigned_token(sub)),
        ("alg none, signature of the real key appended", unsigned_token(sub) + "c2lnbmF0dXJl"),
        ("no sub", pyjwt.encode({"exp": 4102444800}, SECRET, algorithm="HS256")),
        ("no exp", pyjwt.encode({"sub": sub}, SECRET, algorithm="HS256")),
    ]


REFUSED = _refused_tokens()


@pytest.mark.parametrize(("label", "token"), REFUSED, ids=[r[0] for r in REFUSED])
async def test_bad_token_is_refused(ja: Instance, label: str, token: str | None) -> None:
    outcome = await try_connect(ja.ws_url(token=token))
    assert outcome.refused, f"{label}: expected HTTP 401/403 or close 4401, got {outcome}"


async def test_user_query_parameter_is_ignored_in_jwt_mode(ja: Instance) -> None:
    outcome = await try_connect(ja.ws_url(user="someone"))
    assert outcome.refused, f"?user= without a token must be refused in jwt mode, got {outcome}"


async def test_valid_token_connects_as_its_subject(ja: Instance, jb: Instance) -> None:
    user = f"jwt-{uuid.uuid4().hex[:8]}"
    async with await open_client(ja, token=make_token(user)) as client:
        assert client.welcome is not None
        assert client.welcome["user"] == user
        assert client.welcome["instance"] == "JA"
        assert client.welcome["protocol"] == 1
        room = f"open-{uuid.uuid4().hex[:8]}"
        await client.join(room, since="$")
        async with await open_client(jb, token=make_token("other-" + user)) as other:
            published = await other.publish(room, "hello", new_client_id())
        await client.wait_for_id(room, published["id"])
        assert client.messages[room][0]["from"] == "other-" + user


async def test_rooms_claim_globs_restrict_join_and_publish(ja: Instance, jb: Instance) -> None:
    tag = uuid.uuid4().hex[:8]
    user = f"team-{tag}"
    token = make_token(user, rooms=[f"team-{tag}-*", f"exact-{tag}"])
    allowed = [f"team-{tag}-general", f"team-{tag}-x.y", f"exact-{tag}"]
    denied = [f"other-{tag}", f"team-{tag}", f"xteam-{tag}-general", f"exact-{tag}-suffix"]
    async with await open_client(ja, token=token) as client:
        for room in allowed:
            _, joined = await client.join(room, since="$")
            assert joined["room"] == room
            published = await client.publish(room, "ok")
            assert published["room"] == room
        for room in denied:
            with pytest.raises(ServerError) as err:
                await client.join(room, since="$")
            assert err.value.code == "forbidden", room
            assert err.value.ref == room
            with pytest.raises(ServerError) as err:
                await client.publish(room, "nope")
            assert err.value.code == "forbidden", room
            assert err.value.ref == room
        assert (await client.ping())["type"] == "pong"
    # Nothing was stored in the denied rooms.
    reader = make_token(f"reader-{tag}")
    for room in denied:
        assert await history_ids(jb, room, user=None, token=reader) == []


async def test_forbidden_publish_with_client_id_refers_to_it(ja: Instance) -> None:
    tag = uuid.uuid4().hex[:8]
    async with await open_client(ja, token=make_token(f"u-{tag}", rooms=[f"mine-{tag}"])) as client:
        cid = new_client_id()
        await client.send({"type": "publish", "room": f"theirs-{tag}", "body": 1, "client_id": cid})
        error = await client.expect("error", skip=())
        assert error["code"] == "forbidden"
        assert error["ref"] in (cid, f"theirs-{tag}")


async def test_inbox_of_another_user_is_forbidden_in_jwt_mode(ja: Instance) -> None:
    tag = uuid.uuid4().hex[:8]
    async with await open_client(ja, token=make_token(f"eve-{tag}")) as client:
        with pytest.raises(ServerError) as err:
            await client.join(f"@alice-{tag}", since="0")
        assert err.value.code == "forbidden"
        assert err.value.ref == f"@alice-{tag}"
        _, joined = await client.join(f"@eve-{tag}", since="$")
        assert joined["room"] == f"@eve-{tag}"


async def test_broadcast_needs_the_broadcast_claim(ja: Instance, jb: Instance) -> None:
    tag = uuid.uuid4().hex[:8]
    async with (
        await open_client(jb, token=make_token(f"listener-{tag}")) as listener,
        await open_client(ja, token=make_token(f"plain-{tag}")) as plain,
        await open_client(ja, token=make_token(f"admin-{tag}", broadcast=True)) as admin,
    ):
        await listener.join("@all", since="$")
        # Every user may join @all, with or without the right to publish there.
        _, joined = await plain.join("@all", since="$")
        assert joined["room"] == "@all"

        with pytest.raises(ServerError) as err:
            await plain.publish("@all", "spam")
        assert err.value.code == "forbidden"
        assert err.value.ref == "@all"

        cid = new_client_id()
        await plain.send({"type": "broadcast", "body": "spam", "client_id": cid})
        error = await plain.expect("error", skip=("message",))
        assert error["code"] == "forbidden"
        assert error["ref"] in (cid, "@all")

        published = await admin.broadcast({"notice": tag}, new_client_id())
        assert published["room"] == "@all"
        await listener.wait_for_id("@all", published["id"])
        await plain.wait_for_id("@all", published["id"])
        # Nothing from the refused attempts arrived.
        assert all(m["from"] != f"plain-{tag}" for m in listener.messages["@all"])


async def test_http_routes_need_a_valid_bearer_token(ja: Instance) -> None:
    tag = uuid.uuid4().hex[:8]
    room = f"http-{tag}"
    good = make_token(f"h-{tag}")
    async with ja.http() as http:
        for route in (room_path(room, "messages"), room_path(room, "members"), "/presence"):
            assert (await http.get(route)).status_code == 401, route
            bad = {"Authorization": f"Bearer {make_token('x', ttl=-3600)}"}
            assert (await http.get(route, headers=bad)).status_code in (401, 403), route
            unsigned = {"Authorization": f"Bearer {unsigned_token('x')}"}
            assert (await http.get(route, headers=unsigned)).status_code in (401, 403), route
            assert (await http.get(route, **auth(token=good))).status_code == 200, route
        for route in ("/healthz", "/readyz", "/metrics"):
            assert (await http.get(route)).status_code == 200, route
    assert (await post_message(ja, room, "x", user=None)).status_code == 401
    created = await post_message(ja, room, "x", new_client_id(), user=None, token=good)
    assert created.status_code == 201


async def test_http_routes_apply_the_rooms_claim(ja: Instance) -> None:
    tag = uuid.uuid4().hex[:8]
    token = make_token(f"r-{tag}", rooms=[f"ok-{tag}"])
    ok = await post_message(ja, f"ok-{tag}", "fine", user=None, token=token)
    assert ok.status_code == 201
    denied = await post_message(ja, f"no-{tag}", "nope", user=None, token=token)
    assert denied.status_code == 403
    async with ja.http() as http:
        response = await http.get(room_path(f"no-{tag}", "messages"), **auth(token=token))
        assert response.status_code == 403
        response = await http.get(room_path(f"ok-{tag}", "messages"), **auth(token=token))
        assert response.status_code == 200
        assert [m["body"] for m in response.json()["messages"]] == ["fine"]
    plain = make_token(f"p-{tag}")
    assert (await post_message(ja, "@all", "x", user=None, token=plain)).status_code == 403
    admin = make_token(f"a-{tag}", broadcast=True)
    assert (await post_message(ja, "@all", "x", user=None, token=admin)).status_code == 201


async def test_refused_connection_is_not_present(ja: Instance) -> None:
    ghost = f"ghost-{uuid.uuid4().hex[:8]}"
    outcome = await try_connect(ja.ws_url(token=make_token(ghost, ttl=-10)))
    assert outcome.refused
    asker = make_token(f"asker-{ghost}")
    async with await open_client(ja, token=make_token(f"seer-{ghost}")):
        users = await async_wait_until(
            lambda: _presence_with(ja, asker, f"seer-{ghost}"), timeout=5, message="connected user not present"
        )
    assert ghost not in users


async def _presence_with(inst: Instance, token: str, user: str) -> set[str] | None:
    users = await presence(inst, user=None, token=token)
    return users if user in users else None


@pytest.fixture(scope="module")
def guarded(instance_factory: Any) -> Instance:
    """A jwt instance that only accepts pages from one origin."""
    return instance_factory.start(
        "JO", AUTH_MODE="jwt", JWT_SECRET=SECRET, ALLOWED_ORIGINS="https://chat.example,https://admin.example"
    )


@pytest.mark.parametrize("origin", ["https://evil.example", "http://chat.example", "https://chat.example.evil"])
async def test_foreign_origin_is_refused(guarded: Instance, origin: str) -> None:
    outcome = await try_connect(guarded.ws_url(token=make_token("o-user")), origin=origin)
    assert outcome.kind in ("http", "close"), outcome
    assert outcome.status in (403, 4403), outcome


@pytest.mark.parametrize("origin", ["https://chat.example", "https://admin.example", None])
async def test_allowed_or_missing_origin_connects(guarded: Instance, origin: str | None) -> None:
    async with await open_client(guarded, token=make_token("o-user"), origin=origin) as client:
        assert client.welcome is not None
        assert client.welcome["user"] == "o-user"
