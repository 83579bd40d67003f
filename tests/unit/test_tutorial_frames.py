"""The tutorial's frames (app/protocol.py): parsing what its clients send and
turning our frames into what they read. Pure, table-driven."""

from __future__ import annotations

import json
from typing import Any

import pytest

from app import protocol as p
from streams.model import Envelope

MAX_BODY = 1024


def _message(room: str, body: Any, sender: str = "alice", ts: int = 1_732_770_000_123) -> str:
    return p.message_frame(Envelope(room, f"{ts}-0", "0-0", sender, json.dumps(body)))


@pytest.mark.parametrize(("body", "text"), [
    ("hi", "hi"),
    ({"text": "hi"}, "hi"),
    ({"text": "hi", "n": 1}, "hi"),
    ({"text": 5}, '{"text":5}'),
    ({"n": 1}, '{"n":1}'),
    ([1, "a"], '[1,"a"]'),
    (None, "null"),
    (3, "3"),
])
def test_chat_text(body: Any, text: str) -> None:
    assert p.chat_text(body) == text


@pytest.mark.parametrize(("raw", "room", "body"), [
    ('{"type":"broadcast","message":"hi"}', "@all", '"hi"'),
    ('{"type":"broadcast","message":{"text":"hi"}}', "@all", '{"text":"hi"}'),
    ('{"type":"direct","to":"bob","message":"psst"}', "@bob", '"psst"'),
])
def test_parse_tutorial_chat(raw: str, room: str, body: str) -> None:
    assert p.parse_tutorial_chat(raw, MAX_BODY) == p.Publish(room, body, None)


@pytest.mark.parametrize(("raw", "code"), [
    ("not json", "bad_frame"),
    ("[1]", "bad_frame"),
    ('{"type":"shout","message":"x"}', "unknown_type"),
    ('{"message":"x"}', "unknown_type"),
    ('{"type":"broadcast"}', "bad_frame"),
    ('{"type":"direct","to":"no spaces","message":"x"}', "invalid_room"),
    ('{"type":"direct","to":"all","message":"x"}', "invalid_room"),
    ('{"type":"direct","message":"x"}', "invalid_room"),
    ('{"type":"broadcast","message":"' + "x" * MAX_BODY + '"}', "too_large"),
])
def test_parse_tutorial_chat_refuses(raw: str, code: str) -> None:
    with pytest.raises(p.FrameError) as err:
        p.parse_tutorial_chat(raw, MAX_BODY)
    assert err.value.code == code


@pytest.mark.parametrize(("raw", "body"), [
    ('{"message":"hi"}', '"hi"'),
    ('{"message":{"text":"hi"}}', '{"text":"hi"}'),
    ('{"message":null}', "null"),
    ("plain text", '"plain text"'),
    ('{"other":1}', '"{\\"other\\":1}"'),
    ("[1,2]", '"[1,2]"'),
])
def test_parse_tutorial_room(raw: str, body: str) -> None:
    assert p.parse_tutorial_room(raw, "lobby", MAX_BODY) == p.Publish("lobby", body, None)


def test_parse_tutorial_room_refuses_a_body_too_large() -> None:
    with pytest.raises(p.FrameError) as err:
        p.parse_tutorial_room("x" * (MAX_BODY + 1), "lobby", MAX_BODY)
    assert (err.value.code, err.value.ref) == ("too_large", "lobby")


def test_chat_lines() -> None:
    assert p.tutorial_chat_line(_message("@all", "hi")) == "alice: hi"
    assert p.tutorial_chat_line(_message("@bob", {"text": "psst"})) == "[Private from alice]: psst"
    error = p.error_frame("rate_limited", "slow down", "@all")
    assert p.tutorial_chat_line(error) == error
    assert p.tutorial_chat_line(p.welcome_frame("alice", "A")) is None
    assert p.tutorial_chat_line(p.joined_frame("@all", 0, True, "0-0")) is None


def test_room_items() -> None:
    item = json.loads(p.tutorial_room_item(_message("lobby", {"text": "hi", "n": 12345678901234567890})) or "")
    assert item == {"id": "1732770000123-0", "user_id": "alice",
                    "message": {"text": "hi", "n": 12345678901234567890},
                    "timestamp": "2024-11-28T05:00:00.123+00:00"}
    assert p.tutorial_room_item(p.joined_frame("lobby", 3, True, "1-0")) is None
    error = p.error_frame("too_large", "send less", "lobby")
    assert p.tutorial_room_item(error) == error
