"""HTTP helpers: room history, presence and members, as the contract defines them."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import httpx

from .instance import Instance


def room_path(room: str, suffix: str) -> str:
    return f"/rooms/{quote(room, safe='')}/{suffix}"


def auth(user: str | None = None, token: str | None = None) -> dict[str, Any]:
    """Request options carrying an identity (`?user=` or a Bearer token)."""
    options: dict[str, Any] = {}
    if user is not None:
        options["params"] = {"user": user}
    if token is not None:
        options["headers"] = {"Authorization": f"Bearer {token}"}
    return options


async def history(
    instance: Instance,
    room: str,
    *,
    user: str | None = "observer",
    token: str | None = None,
    limit: int = 1000,
    after: str | None = None,
    max_pages: int = 10_000,
) -> list[dict[str, Any]]:
    """Every retained message of `room`, paging with `next` until it is null."""
    messages: list[dict[str, Any]] = []
    options = auth(user, token)
    base_params = dict(options.pop("params", {}))
    async with instance.http() as http:
        for _ in range(max_pages):
            params = dict(base_params, limit=str(limit))
            if after is not None:
                params["after"] = after
            response = await http.get(room_path(room, "messages"), params=params, **options)
            assert response.status_code == 200, f"history page: {response.status_code} {response.text}"
            page = response.json()
            messages.extend(page["messages"])
            after = page["next"]
            if after is None:
                return messages
    raise AssertionError(f"history of {room} did not end within {max_pages} pages")


async def history_ids(instance: Instance, room: str, **kwargs: Any) -> list[str]:
    return [m["id"] for m in await history(instance, room, **kwargs)]


def _user_names(items: list[Any]) -> set[str]:
    """Users from a presence/members list: plain ids or objects with a user id."""
    names: set[str] = set()
    for item in items:
        if isinstance(item, str):
            names.add(item)
        elif isinstance(item, dict):
            value = item.get("user", item.get("id", item.get("sub")))
            assert isinstance(value, str), f"unrecognised presence entry {item!r}"
            names.add(value)
        else:
            raise AssertionError(f"unrecognised presence entry {item!r}")
    return names


async def presence(instance: Instance, *, user: str | None = "observer", token: str | None = None) -> set[str]:
    async with instance.http() as http:
        response = await http.get("/presence", **auth(user, token))
    assert response.status_code == 200, f"/presence: {response.status_code} {response.text}"
    return _user_names(response.json()["users"])


async def members(
    instance: Instance, room: str, *, user: str | None = "observer", token: str | None = None
) -> set[str]:
    async with instance.http() as http:
        response = await http.get(room_path(room, "members"), **auth(user, token))
    assert response.status_code == 200, f"members: {response.status_code} {response.text}"
    return _user_names(response.json()["members"])


async def post_message(
    instance: Instance,
    room: str,
    body: Any,
    client_id: str | None = None,
    *,
    user: str | None = "poster",
    token: str | None = None,
) -> httpx.Response:
    payload: dict[str, Any] = {"body": body}
    if client_id is not None:
        payload["client_id"] = client_id
    async with instance.http() as http:
        return await http.post(room_path(room, "messages"), json=payload, **auth(user, token))
