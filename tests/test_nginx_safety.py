"""The shipped nginx site: query-less access log, and request rate limits.

A real nginx rendered from ops/nginx/streamgate.conf in front of a real
instance in ``AUTH_MODE=jwt``. Tokens sent in the URL or as the
``bearer.`` subprotocol never reach nginx's access log nor the instance's
log. The ``limit_req`` zones answer 429 to a client address that opens
handshakes or POSTs too fast; loopback (127.0.0.1, the proxy's own host) is
exempt, so the limited client connects from 127.0.0.2.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from ops.local import procs
from tests.support import Instance
from tests.support.programs import require
from tests.support.timeouts import scaled
from tests.support.tokens import SECRET, make_token
from tests.support.waiting import async_wait_until


@dataclass
class Proxied:
    inst: Instance
    port: int
    state_dir: Path

    @property
    def access_log(self) -> Path:
        return self.state_dir / "access.log"


@pytest.fixture
def proxied(make_instance: Callable[..., Instance], tmp_path: Path) -> Iterator[Proxied]:
    require("nginx")
    inst = make_instance("NG", AUTH_MODE="jwt", JWT_SECRET=SECRET)
    port = procs.free_port()
    proxy = procs.start_nginx(port, [inst.port], tmp_path / "nginx")
    try:
        yield Proxied(inst, port, tmp_path / "nginx")
    finally:
        procs.stop(proxy.pid, scaled(5), proxy.started)


async def test_tokens_stay_out_of_the_access_log_and_the_app_log(proxied: Proxied) -> None:
    in_url = make_token(f"u-{uuid.uuid4().hex[:8]}")
    in_header = make_token(f"u-{uuid.uuid4().hex[:8]}")
    base = f"ws://127.0.0.1:{proxied.port}/ws"
    async with connect(f"{base}?token={in_url}&x=1") as ws:
        assert '"welcome"' in str(await ws.recv())
    async with connect(base, subprotocols=["streamgate.v1", "bearer." + in_header]) as ws:  # type: ignore[list-item]
        assert '"welcome"' in str(await ws.recv())
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{proxied.port}") as http:
        r = await http.get("/rooms/lobby/messages", params={"token": in_url, "limit": "1"},
                           headers={"Authorization": f"Bearer {in_header}"})
        assert r.status_code == 200, r.text

    def logged() -> bool:
        text = proxied.access_log.read_text() if proxied.access_log.exists() else ""
        return text.count("GET /ws ") >= 2 and "GET /rooms/lobby/messages " in text

    await async_wait_until(logged, timeout=5, message="nginx did not log the requests")
    access = proxied.access_log.read_text()
    app_log = proxied.inst.log_path.read_text()
    for token in (in_url, in_header):
        for part in token.split("."):
            assert part not in access
            assert part not in app_log
    assert "?" not in access


async def _post(http: httpx.AsyncClient, token: str) -> int:
    r = await http.post("/rooms/limited/messages", json={"body": "x"},
                        headers={"Authorization": f"Bearer {token}"})
    return r.status_code


async def test_posts_over_the_rate_get_429_and_loopback_is_exempt(proxied: Proxied) -> None:
    token = make_token(f"u-{uuid.uuid4().hex[:8]}")
    url = f"http://127.0.0.1:{proxied.port}"
    remote = httpx.AsyncHTTPTransport(local_address="127.0.0.2")
    async with httpx.AsyncClient(base_url=url, transport=remote) as http:
        codes = await asyncio.gather(*(_post(http, token) for _ in range(80)))
    assert codes.count(429) > 0, codes
    assert set(codes) <= {201, 429}, codes
    # GETs from the same address are not counted by the POST zone.
    async with httpx.AsyncClient(base_url=url, transport=httpx.AsyncHTTPTransport(
            local_address="127.0.0.2")) as http:
        r = await http.get("/healthz")
        assert r.status_code == 200
    async with httpx.AsyncClient(base_url=url) as http:  # 127.0.0.1
        local = await asyncio.gather(*(_post(http, token) for _ in range(80)))
    assert local.count(201) == 80, local


async def _handshake(url: str, token: str) -> int:
    try:
        async with connect(url, subprotocols=["streamgate.v1", "bearer." + token],  # type: ignore[list-item]
                           open_timeout=scaled(10), local_addr=("127.0.0.2", 0)):
            return 101
    except InvalidStatus as exc:
        return exc.response.status_code


async def test_handshakes_over_the_rate_get_429(proxied: Proxied) -> None:
    token = make_token(f"u-{uuid.uuid4().hex[:8]}")
    url = f"ws://127.0.0.1:{proxied.port}/ws"
    codes = await asyncio.gather(*(_handshake(url, token) for _ in range(60)))
    assert codes.count(429) > 0, codes
    assert codes.count(101) >= 20, codes  # the burst is let through
    assert set(codes) <= {101, 429}, codes
