"""In-band token refresh: ``{"type":"refresh","token":T}`` on a live socket.

A refreshed connection keeps its rooms and its place in them: no new
``joined``, no replay, the ids it receives stay continuous, and it outlives
the first token's expiry. A refused token (invalid, another user's, or one
that does not allow a joined room) is answered with an error and changes
nothing.
"""

from __future__ import annotations

import asyncio
import math
import time
import uuid
from collections.abc import Callable

import pytest

from tests.support import Instance, new_client_id, open_client
from tests.support.http import history_ids
from tests.support.timeouts import scaled
from tests.support.tokens import make_token

LEEWAY_S = 5  # the server's clock leeway, on admission and for the expiry close
PACE_S = 0.05  # between publishes that cross the expiry: ~200 in all


def _user() -> str:
    return f"r-{uuid.uuid4().hex[:8]}"


async def test_refresh_keeps_the_rooms_and_outlives_the_first_token(ja: Instance, jb: Instance) -> None:
    user, room = _user(), f"refresh-{uuid.uuid4().hex[:8]}"
    first_exp = math.ceil(time.time()) + 2
    first = make_token(user, ttl=first_exp - time.time())
    writer_token = make_token(_user())
    async with await open_client(ja, token=first) as client, \
            await open_client(jb, token=writer_token) as writer:
        await client.join(room, since="$")
        before = [(await writer.publish(room, {"n": i}, new_client_id()))["id"] for i in range(5)]
        await client.wait_for_id(room, before[-1])

        renewed = make_token(user, ttl=3600)
        await client.send({"type": "refresh", "token": renewed})
        answer = await client.expect("refreshed")
        assert answer["exp"] >= int(time.time()) + 3500

        # Publish across the first token's expiry (plus the leeway): the
        # socket must still be open and receiving afterwards. Paced, so the
        # count stays far below ROOM_HISTORY_MAXLEN however fast the machine
        # (unpaced, a fast one publishes past it and the history is trimmed).
        after: list[str] = []
        deadline = first_exp + LEEWAY_S + scaled(1.0)
        while time.time() < deadline:
            after.append((await writer.publish(room, {"n": len(after)}, new_client_id()))["id"])
            await client.wait_for_id(room, after[-1])
            await asyncio.sleep(PACE_S)
        assert len(after) >= 3
        assert client.close_code is None and not client.closed.is_set()
        await client.ping()

        assert client.ids[room] == before + after  # continuous, nothing replayed
        assert client.ids[room] == await history_ids(ja, room, user=None, token=writer_token)
        joined = [f for f in client.log if isinstance(f, dict) and f.get("type") == "joined"]
        assert len(joined) == 1


async def test_a_shorter_token_moves_the_expiry_earlier(ja: Instance) -> None:
    """The timer follows the current token: refreshed with one that expired
    4 s ago (still within the leeway), the socket closes with 4401 about 1 s
    later instead of in an hour."""
    user = _user()
    async with await open_client(ja, token=make_token(user, ttl=3600)) as client:
        exp = int(time.time()) - 4
        await client.send({"type": "refresh", "token": make_token(user, ttl=exp - time.time())})
        answer = await client.expect("refreshed")
        assert answer["exp"] == exp
        code = await client.wait_closed(timeout=LEEWAY_S + 2)
        assert code == 4401, client.close_reason
        assert time.time() <= exp + LEEWAY_S + scaled(1.5)


@pytest.mark.parametrize("kind", ["another user", "invalid", "expired"])
async def test_a_refused_token_is_an_error_and_the_connection_stays(ja: Instance, kind: str) -> None:
    user, room = _user(), f"refresh-{uuid.uuid4().hex[:8]}"
    token = {
        "another user": make_token(_user()),
        "invalid": "not-a-jwt",
        "expired": make_token(user, ttl=-3600),
    }[kind]
    async with await open_client(ja, token=make_token(user)) as client:
        await client.join(room, since="$")
        await client.send({"type": "refresh", "token": token})
        error = await client.expect("error", skip=())
        assert error["code"] == "unauthorized"
        assert token not in error["reason"]
        published = await client.publish(room, "still here", new_client_id())
        await client.wait_for_id(room, published["id"])
        assert client.welcome is not None and client.welcome["user"] == user


async def test_a_token_that_no_longer_allows_a_joined_room_is_refused(ja: Instance) -> None:
    user = _user()
    room = f"refresh-{uuid.uuid4().hex[:8]}"
    async with await open_client(ja, token=make_token(user, rooms=["refresh-*"])) as client:
        await client.join(room, since="$")
        await client.send({"type": "refresh", "token": make_token(user, rooms=["other-*"])})
        error = await client.expect("error", skip=())
        assert (error["code"], error["ref"]) == ("forbidden", room)
        # The old rights still hold: the room is still joined and writable.
        published = await client.publish(room, "kept", new_client_id())
        await client.wait_for_id(room, published["id"])


async def test_refresh_in_none_mode_is_answered_with_no_expiry(inst_a: Instance) -> None:
    async with await open_client(inst_a, user=_user()) as client:
        await client.send({"type": "refresh", "token": "anything"})
        assert (await client.expect("refreshed"))["exp"] is None


async def test_refresh_draws_on_the_control_bucket(make_instance: Callable[..., Instance]) -> None:
    """Over the join/leave/ack bucket, a refresh is answered rate_limited
    (ref null) and the socket stays usable."""
    inst = make_instance("RL", CONTROL_RATE="0.01", CONTROL_BURST="1")
    async with await open_client(inst, user=_user()) as client:
        await client.send({"type": "refresh", "token": "t"})
        assert (await client.expect("refreshed"))["exp"] is None
        await client.send({"type": "refresh", "token": "t"})
        error = await client.expect("error", skip=())
        assert (error["code"], error["ref"]) == ("rate_limited", None)
        await client.ping()
