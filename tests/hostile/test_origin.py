"""Cross-site WebSocket hijacking: a page on another site opens a socket to us.

A browser attaches the page's ``Origin`` to the handshake and nothing else the
page controls can change it, so an exact comparison with ALLOWED_ORIGINS is
the defence. These tests attack it with look-alike origins, check that the
origin is judged before (and independently of) the token, and that clients
without an Origin (servers, CLIs) are judged by their token alone.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from tests.hostile.conftest import ModuleInstances
from tests.hostile.support import metric
from tests.support import Instance, new_client_id, open_client, try_connect
from tests.support.tokens import SECRET, make_token

ALLOWED = ("https://chat.example", "https://admin.example")

LOOKALIKES = [
    "https://evil.example",
    "null",  # sandboxed iframes, file:// pages, some redirects
    "https://chat.example.evil.example",
    "https://evilchat.example",
    "http://chat.example",  # same host, other scheme
    "https://chat.example:8443",
    "https://chat.example:443",  # equivalent in theory, never sent by a browser
    "https://chat.example/",
    "HTTPS://CHAT.EXAMPLE",
    "https://evil.example, https://chat.example",  # one header carrying two values
    "",
]


@pytest.fixture(scope="module")
def guarded(instances: ModuleInstances) -> Instance:
    return instances.start("OG", AUTH_MODE="jwt", JWT_SECRET=SECRET, ALLOWED_ORIGINS=",".join(ALLOWED))


@pytest.fixture(scope="module")
def unlisted(instances: ModuleInstances) -> Instance:
    """jwt mode with ALLOWED_ORIGINS unset: no browser page may connect."""
    return instances.start("OU", AUTH_MODE="jwt", JWT_SECRET=SECRET, ALLOWED_ORIGINS="")


def _user() -> str:
    return f"o-{uuid.uuid4().hex[:8]}"


def _subprotocol_token(token: str) -> dict[str, Any]:
    return {"subprotocols": ["streamgate.v1", f"bearer.{token}"]}


@pytest.mark.parametrize("origin", LOOKALIKES)
async def test_foreign_origin_is_refused_even_with_a_valid_token(guarded: Instance, origin: str) -> None:
    before = await metric(guarded, "streamgate_refused_connections_total", reason="origin")
    token = make_token(_user())
    outcome = await try_connect(guarded.ws_url(), origin=origin, **_subprotocol_token(token))
    assert (outcome.kind, outcome.status) in (("close", 4403), ("http", 403)), outcome
    assert await metric(guarded, "streamgate_refused_connections_total", reason="origin") == before + 1


async def test_origin_is_judged_before_the_token(guarded: Instance) -> None:
    """A foreign page learns nothing about tokens: no token and a bad token get
    the same origin refusal as a good one."""
    for token in (None, "not-a-jwt", make_token(_user())):
        outcome = await try_connect(guarded.ws_url(token=token), origin="https://evil.example")
        assert (outcome.kind, outcome.status) in (("close", 4403), ("http", 403)), (token, outcome)


@pytest.mark.parametrize("origin", ALLOWED)
async def test_allowed_origin_with_token_in_subprotocol_works(guarded: Instance, origin: str) -> None:
    user = _user()
    room = f"og-{uuid.uuid4().hex[:8]}"
    async with await open_client(guarded, origin=origin, **_subprotocol_token(make_token(user))) as client:
        assert client.welcome is not None and client.welcome["user"] == user
        assert client.ws.subprotocol == "streamgate.v1"
        await client.join(room, since="$")
        published = await client.publish(room, {"from": origin}, new_client_id())
        await client.wait_for_id(room, published["id"])


async def test_client_without_origin_is_judged_by_its_token(guarded: Instance, unlisted: Instance) -> None:
    for inst in (guarded, unlisted):
        user = _user()
        async with await open_client(inst, token=make_token(user), origin=None) as client:
            assert client.welcome is not None and client.welcome["user"] == user
            assert (await client.ping())["type"] == "pong"
        outcome = await try_connect(inst.ws_url(token="not-a-jwt"), origin=None)
        assert outcome.refused and outcome.status in (401, 4401), outcome


@pytest.mark.parametrize("origin", [*ALLOWED, "https://evil.example", "null"])
async def test_without_allowed_origins_every_browser_page_is_refused(unlisted: Instance, origin: str) -> None:
    outcome = await try_connect(unlisted.ws_url(token=make_token(_user())), origin=origin)
    assert (outcome.kind, outcome.status) in (("close", 4403), ("http", 403)), outcome
