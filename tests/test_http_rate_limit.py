"""HTTP publishing has a per-user rate limit too (the socket's is per connection)."""

from __future__ import annotations

from collections.abc import Callable

import httpx

from tests.support import Instance


async def test_http_publish_is_rate_limited_per_user(
    make_instance: Callable[..., Instance], room: str, uid: Callable[[str], str]
) -> None:
    limited = make_instance("HR", PUBLISH_RATE="0.01", PUBLISH_BURST="3")  # no refill during the test
    ann, bob = uid("ann"), uid("bob")
    async with httpx.AsyncClient(base_url=limited.url, timeout=5) as http:
        codes = [(await http.post(f"/rooms/{room}/messages", params={"user": ann},
                                  json={"body": n})).status_code for n in range(5)]
        assert codes[:3] == [201, 201, 201]
        refused = await http.post(f"/rooms/{room}/messages", params={"user": ann}, json={"body": "x"})
        assert refused.status_code == 429 and refused.json()["error"] == "rate_limited"
        # Another user has a bucket of their own.
        other = await http.post(f"/rooms/{room}/messages", params={"user": bob}, json={"body": "y"})
        assert other.status_code == 201
        stored = (await http.get(f"/rooms/{room}/messages", params={"user": bob})).json()["messages"]
    assert len(stored) == codes.count(201) + 1
