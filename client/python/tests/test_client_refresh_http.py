"""The pure parts of in-band refresh and of the HTTP calls: reading a
token's expiry, when to refresh, the ``refreshed`` frame, HTTP URLs and
history queries. No process, no socket."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from streamgate_client.http import history_query, http_base, parse_page, room_path
from streamgate_client.options import Options
from streamgate_client.protocol import Other, TokenRefreshed, decode, refresh_frame
from streamgate_client.tokens import MIN_REFRESH_DELAY_S, refresh_delay, token_expiry


def _jwt(claims: Any) -> str:
    body = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    return f"eyJhbGciOiJIUzI1NiJ9.{body}.c2ln"


@pytest.mark.parametrize(
    ("token", "exp"),
    [
        (_jwt({"sub": "a", "exp": 1700000000}), 1700000000.0),
        (_jwt({"sub": "a", "exp": 1700000000.5}), 1700000000.5),
        (_jwt({"sub": "a"}), None),
        (_jwt({"sub": "a", "exp": "soon"}), None),
        (_jwt({"sub": "a", "exp": True}), None),
        (_jwt([1, 2]), None),
        ("not-a-jwt", None),
        ("a.!!!.c", None),
        ("", None),
        (None, None),
    ],
)
def test_token_expiry(token: str | None, exp: float | None) -> None:
    assert token_expiry(token) == exp


@pytest.mark.parametrize(
    ("left", "margin", "delay"),
    [
        (3600.0, 30.0, 3570.0),  # margin before expiry
        (40.0, 30.0, 20.0),  # never later than half-way
        (3.0, 30.0, 1.5),
        (1.5, 30.0, MIN_REFRESH_DELAY_S),  # not sooner than the floor...
        (0.5, 30.0, 0.5),  # ...unless the token expires sooner still
        (0.0, 30.0, 0.0),
        (-5.0, 30.0, 0.0),  # expired: at once
    ],
)
def test_refresh_delay(left: float, margin: float, delay: float) -> None:
    assert refresh_delay(1000.0 + left, 1000.0, margin) == pytest.approx(delay)


def test_refresh_frames() -> None:
    assert refresh_frame("t.o.k") == {"type": "refresh", "token": "t.o.k"}
    assert decode('{"type":"refreshed","exp":1700000000}') == TokenRefreshed(1700000000)
    assert decode('{"type":"refreshed","exp":null}') == TokenRefreshed(None)
    assert decode('{"type":"refreshed","exp":true}') == TokenRefreshed(None)
    assert decode('{"type":"something-new"}') == Other("something-new")


def test_the_token_goes_in_the_subprotocol_by_default() -> None:
    assert Options().token_transport == "subprotocol"
    assert Options().refresh_margin > 0


@pytest.mark.parametrize(
    ("ws", "http"),
    [
        ("ws://127.0.0.1:8000/ws", "http://127.0.0.1:8000"),
        ("wss://chat.example.com/ws", "https://chat.example.com"),
        ("wss://example.com/chat/ws", "https://example.com/chat"),
        ("ws://h:1/ws?user=a", "http://h:1"),
    ],
)
def test_http_base(ws: str, http: str) -> None:
    assert http_base(ws) == http


def test_http_base_refuses_other_schemes() -> None:
    with pytest.raises(ValueError):
        http_base("http://h/ws")


def test_history_queries() -> None:
    assert history_query(None, None, 100) == {"limit": "100"}
    assert history_query("1-0", None, 5) == {"limit": "5", "after": "1-0"}
    assert history_query(None, "$", 5) == {"limit": "5", "before": "$"}
    for after, before, limit in [("1-0", "$", 5), ("x", None, 5), (None, "soon", 5), (None, None, 0),
                                 (None, None, 1001)]:
        with pytest.raises(ValueError):
            history_query(after, before, limit)


def test_room_paths_are_escaped() -> None:
    assert room_path("@all", "members") == "/rooms/%40all/members"
    with pytest.raises(ValueError):
        room_path("no/slash", "messages")


def test_parse_page() -> None:
    page = parse_page("r", {"messages": [{"id": "1-0", "from": "a", "body": {"x": 1}, "ts": 1}],
                            "next": None, "prev": "1-0"})
    assert [m.id for m in page.messages] == ["1-0"] and page.messages[0].sender == "a"
    assert (page.next, page.prev) == (None, "1-0")
