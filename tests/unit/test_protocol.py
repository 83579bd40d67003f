"""Frame parsing and validation, and the server frames' exact shape."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app import protocol as p
from app.protocol import Ack, FrameError, Join, Leave, Ping, Publish, parse_frame
from streams.model import Envelope

quick = settings(max_examples=200, deadline=None, database=None)

# ``USER_RE``, ``ROOM_RE`` and ``CLIENT_ID_RE`` end in ``$``, which also
# matches right before a trailing newline, so "x\n" passes validation.
TRAILING_NEWLINE = "app/protocol.py: ^...$ regexes accept a trailing newline (use fullmatch or \\Z)"
# orjson turns integers beyond 64 bits into floats, so the stored body is not
# the one the client sent.
BIG_INT = "app/protocol.py _body: orjson.loads turns integers beyond 64 bits into lossy floats"


def dumps(obj: Any) -> str:
    return json.dumps(obj)


def error_of(raw: str | bytes) -> FrameError:
    with pytest.raises(FrameError) as info:
        parse_frame(raw)
    return info.value


# -- validators ---------------------------------------------------------------


@pytest.mark.parametrize("user", ["alice", "a", "A.b_c:d-9", "x" * 64, "al", "ALL", "all_", "0"])
def test_valid_user(user: str) -> None:
    assert p.valid_user(user)


@pytest.mark.parametrize(
    "user",
    [
        "",
        "all",
        "x" * 65,
        "a b",
        "a|b",
        "@alice",
        "a/b",
        "caf\u00e9",
        "a\tb",
        None,
        5,
        ["alice"],
        pytest.param("alice\n", marks=()),
    ],
)
def test_invalid_user(user: object) -> None:
    assert not p.valid_user(user)


@pytest.mark.parametrize("room", ["lobby", "a", "x" * 128, "team:eng.backend-1_x", "@all", "@alice", "@ALL", "all"])
def test_valid_room(room: str) -> None:
    assert p.valid_room(room)


@pytest.mark.parametrize(
    "room",
    [
        "",
        "x" * 129,
        "a b",
        "a{b}",
        "a/b",
        "@",
        "@@all",
        "@ all",
        "@a b",
        "@" + "x" * 65,
        "lob@by",
        "caf\u00e9",
        None,
        3,
        pytest.param("lobby\n", marks=()),
        pytest.param("@alice\n", marks=()),
    ],
)
def test_invalid_room(room: object) -> None:
    assert not p.valid_room(room)


def test_inbox() -> None:
    assert p.inbox("alice") == "@alice"


# -- parse_frame: malformed frames -------------------------------------------


@pytest.mark.parametrize(
    "raw",
    ["", "{", "}", "nope", "{'type':'ping'}", '{"type":"ping",}', b"\xff\xfe", b"", "NaN", '{"type":"ping"} x'],
)
def test_invalid_json_is_bad_frame(raw: str | bytes) -> None:
    err = error_of(raw)
    assert err.code == "bad_frame"
    assert err.ref is None


@pytest.mark.parametrize("raw", ["[]", '[{"type":"ping"}]', "1", "null", "true", '"ping"', "1.5"])
def test_non_object_is_bad_frame(raw: str) -> None:
    assert error_of(raw).code == "bad_frame"


@pytest.mark.parametrize(
    "frame", [{}, {"room": "lobby"}, {"type": None}, {"type": 1}, {"type": ["ping"]}, {"type": {"t": "ping"}}]
)
def test_missing_or_mistyped_type_is_bad_frame(frame: dict[str, Any]) -> None:
    assert error_of(dumps(frame)).code == "bad_frame"


@pytest.mark.parametrize("kind", ["", "PING", "Join", "subscribe", "message", "welcome", "pong", "x" * 1000])
def test_unknown_type(kind: str) -> None:
    err = error_of(dumps({"type": kind}))
    assert err.code == "unknown_type"
    assert len(err.reason) < 100


# -- parse_frame: each client frame -------------------------------------------


@pytest.mark.parametrize(
    ("frame", "parsed"),
    [
        ({"type": "ping"}, Ping()),
        ({"type": "ping", "extra": 1}, Ping()),
        ({"type": "join", "room": "lobby"}, Join("lobby", None)),
        ({"type": "join", "room": "lobby", "since": None}, Join("lobby", None)),
        ({"type": "join", "room": "lobby", "since": "$"}, Join("lobby", "$")),
        ({"type": "join", "room": "lobby", "since": "0"}, Join("lobby", "0")),
        ({"type": "join", "room": "lobby", "since": "0-0"}, Join("lobby", "0-0")),
        ({"type": "join", "room": "lobby", "since": "1700000000000-3"}, Join("lobby", "1700000000000-3")),
        ({"type": "join", "room": "lobby", "since": "1700000000000"}, Join("lobby", "1700000000000")),
        ({"type": "join", "room": "@all"}, Join("@all", None)),
        ({"type": "join", "room": "@alice", "since": "$"}, Join("@alice", "$")),
        ({"type": "join", "room": "lobby", "since": "5-1", "epoch": "0f3a9c"}, Join("lobby", "5-1", "0f3a9c")),
        ({"type": "join", "room": "lobby", "since": "5-1", "epoch": None}, Join("lobby", "5-1")),
        ({"type": "join", "room": "lobby", "epoch": "e" * 64}, Join("lobby", None, "e" * 64)),
        ({"type": "join", "room": "lobby", "since": "0", "epoch": "!~"}, Join("lobby", "0", "!~")),
        ({"type": "leave", "room": "lobby"}, Leave("lobby")),
        ({"type": "leave", "room": "@all"}, Leave("@all")),
        ({"type": "ack", "room": "lobby", "id": "5-1"}, Ack("lobby", "5-1")),
        ({"type": "ack", "room": "lobby", "id": "5"}, Ack("lobby", "5")),
        ({"type": "publish", "room": "lobby", "body": "hi"}, Publish("lobby", '"hi"', None)),
        ({"type": "publish", "room": "lobby", "body": "hi", "client_id": None}, Publish("lobby", '"hi"', None)),
        ({"type": "publish", "room": "lobby", "body": {"a": 1}, "client_id": "c-1"}, Publish("lobby", '{"a":1}', "c-1")),
        ({"type": "publish", "room": "@bob", "body": 1}, Publish("@bob", "1", None)),
        ({"type": "publish", "room": "@all", "body": 1}, Publish("@all", "1", None)),
        ({"type": "direct", "to": "bob", "body": "yo"}, Publish("@bob", '"yo"', None)),
        ({"type": "direct", "to": "bob", "body": "yo", "client_id": "d1"}, Publish("@bob", '"yo"', "d1")),
        ({"type": "broadcast", "body": [1, 2]}, Publish("@all", "[1,2]", None)),
        ({"type": "broadcast", "body": None, "client_id": "b1"}, Publish("@all", "null", "b1")),
        # ``room`` on a broadcast is ignored: it always goes to @all
        ({"type": "broadcast", "room": "lobby", "body": 0}, Publish("@all", "0", None)),
    ],
)
def test_parse_valid_frames(frame: dict[str, Any], parsed: object) -> None:
    assert parse_frame(dumps(frame)) == parsed
    assert parse_frame(dumps(frame).encode()) == parsed


@pytest.mark.parametrize("kind", ["join", "leave", "ack", "publish"])
@pytest.mark.parametrize(
    ("room", "code"),
    [
        ("<missing>", "bad_frame"),
        (None, "bad_frame"),
        (5, "bad_frame"),
        (["lobby"], "bad_frame"),
        ({"name": "lobby"}, "bad_frame"),
        ("", "invalid_room"),
        ("a b", "invalid_room"),
        ("x" * 129, "invalid_room"),
        ("@", "invalid_room"),
        ("@bad user", "invalid_room"),
        ("caf\u00e9", "invalid_room"),
    ],
)
def test_room_errors(kind: str, room: object, code: str) -> None:
    frame: dict[str, Any] = {"type": kind, "id": "1-0", "body": 1}
    if room != "<missing>":
        frame["room"] = room
    err = error_of(dumps(frame))
    assert err.code == code
    if code == "invalid_room":
        assert err.ref == room


def test_invalid_room_ref_is_truncated() -> None:
    err = error_of(dumps({"type": "join", "room": "y" * 10_000}))
    assert err.code == "invalid_room"
    assert err.ref == "y" * 200


@pytest.mark.parametrize(
    "since", ["", "$$", "*", "-", "+", "abc", "1-", "-1", "1-0-0", "now", f"{2**64}-0", 0, 5, 1.5, True, [], {}]
)
def test_join_bad_since(since: object) -> None:
    err = error_of(dumps({"type": "join", "room": "lobby", "since": since}))
    assert err.code == "bad_frame"
    assert err.ref == "lobby"


@pytest.mark.parametrize(
    "epoch", ["", " ", "a b", "e" * 65, "\u00e9", "tab\t", "nl\n", 0, 1.5, True, [], {"e": 1}]
)
def test_join_bad_epoch(epoch: object) -> None:
    err = error_of(dumps({"type": "join", "room": "lobby", "since": "5-0", "epoch": epoch}))
    assert err.code == "bad_frame"
    assert err.ref == "lobby"


@pytest.mark.parametrize(
    "frame",
    [
        {"type": "ack", "room": "lobby"},
        {"type": "ack", "room": "lobby", "id": None},
        {"type": "ack", "room": "lobby", "id": 5},
        {"type": "ack", "room": "lobby", "id": "$"},
        {"type": "ack", "room": "lobby", "id": "last"},
        {"type": "ack", "room": "lobby", "id": ["1-0"]},
    ],
)
def test_ack_bad_id(frame: dict[str, Any]) -> None:
    err = error_of(dumps(frame))
    assert err.code == "bad_frame"
    assert err.ref == "lobby"


@pytest.mark.parametrize(
    ("frame", "ref"),
    [
        ({"type": "publish", "room": "lobby"}, "lobby"),
        ({"type": "publish", "room": "lobby", "client_id": "c9"}, "c9"),
        ({"type": "direct", "to": "bob"}, "@bob"),
        ({"type": "direct", "to": "bob", "client_id": "c9"}, "c9"),
        ({"type": "broadcast"}, "@all"),
        ({"type": "broadcast", "client_id": "c9"}, "c9"),
    ],
)
def test_missing_body_is_bad_frame(frame: dict[str, Any], ref: str) -> None:
    err = error_of(dumps(frame))
    assert err.code == "bad_frame"
    assert err.ref == ref


@pytest.mark.parametrize(
    ("frame", "code", "ref"),
    [
        ({"type": "direct", "body": 1}, "bad_frame", None),
        ({"type": "direct", "to": None, "body": 1}, "bad_frame", None),
        ({"type": "direct", "to": 7, "body": 1, "client_id": "c1"}, "bad_frame", "c1"),
        ({"type": "direct", "to": ["bob"], "body": 1}, "bad_frame", None),
        ({"type": "direct", "to": "all", "body": 1}, "invalid_room", "all"),
        ({"type": "direct", "to": "", "body": 1}, "invalid_room", ""),
        ({"type": "direct", "to": "bad user", "body": 1}, "invalid_room", "bad user"),
        ({"type": "direct", "to": "@bob", "body": 1}, "invalid_room", "@bob"),
        ({"type": "direct", "to": "x" * 65, "body": 1}, "invalid_room", "x" * 65),
        ({"type": "direct", "to": "bad user", "body": 1, "client_id": "c1"}, "invalid_room", "c1"),
        pytest.param(
            {"type": "direct", "to": "bob\n", "body": 1},
            "invalid_room",
            "bob\n",
            marks=(),
        ),
    ],
)
def test_direct_errors(frame: dict[str, Any], code: str, ref: str | None) -> None:
    err = error_of(dumps(frame))
    assert err.code == code
    assert err.ref == ref


@pytest.mark.parametrize("cid", ["a", "x" * 128, "!", "~", "client-1:{x}/\"'", "\x21\x7e"])
@pytest.mark.parametrize("kind", ["publish", "direct", "broadcast"])
def test_valid_client_id(kind: str, cid: str) -> None:
    frame = {"type": kind, "room": "lobby", "to": "bob", "body": 1, "client_id": cid}
    parsed = parse_frame(dumps(frame))
    assert isinstance(parsed, Publish)
    assert parsed.client_id == cid


@pytest.mark.parametrize(
    "cid",
    [
        "",
        " ",
        "a b",
        "x" * 129,
        "caf\u00e9",
        "\x7f",
        "tab\t",
        5,
        0,
        False,
        ["c1"],
        {"id": "c1"},
        pytest.param("c1\n", marks=()),
    ],
)
@pytest.mark.parametrize("kind", ["publish", "direct", "broadcast"])
def test_invalid_client_id(kind: str, cid: object) -> None:
    frame = {"type": kind, "room": "lobby", "to": "bob", "body": 1, "client_id": cid}
    assert error_of(dumps(frame)).code == "bad_frame"


@pytest.mark.parametrize(
    ("body_json", "stored"),
    [
        ("null", "null"),
        ("true", "true"),
        ("false", "false"),
        ("0", "0"),
        ("-1", "-1"),
        ("1.5", "1.5"),
        ('""', '""'),
        ('"line\\nbreak"', '"line\\nbreak"'),
        ('"caf\u00e9 \U0001f600"', '"caf\u00e9 \U0001f600"'),
        ("[]", "[]"),
        ("{}", "{}"),
        ('{ "a" : [ 1 , {"b": null} ] }', '{"a":[1,{"b":null}]}'),
        (str(2**63 - 1), str(2**63 - 1)),
        (str(-(2**63)), str(-(2**63))),
        (str(2**64 - 1), str(2**64 - 1)),
        pytest.param(str(2**64), str(2**64), marks=()),
        pytest.param(
            "123456789012345678901234567890",
            "123456789012345678901234567890",
            marks=(),
        ),
        pytest.param(str(-(2**63) - 1), str(-(2**63) - 1), marks=()),
    ],
)
def test_body_is_any_json_value_stored_compact(body_json: str, stored: str) -> None:
    raw = '{"type":"publish","room":"lobby","body":' + body_json + "}"
    parsed = parse_frame(raw)
    assert isinstance(parsed, Publish)
    assert parsed.body == stored
    assert json.loads(parsed.body) == json.loads(body_json)


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(alphabet=st.characters(exclude_categories=["Cs"]), max_size=20),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(alphabet=st.characters(exclude_categories=["Cs"]), max_size=8), children, max_size=4),
    max_leaves=12,
)


@quick
@given(json_values)
def test_body_round_trips(body: Any) -> None:
    parsed = parse_frame(json.dumps({"type": "broadcast", "body": body}))
    assert isinstance(parsed, Publish)
    assert json.loads(parsed.body) == body


# -- server frames ------------------------------------------------------------


@pytest.mark.parametrize(
    "env",
    [
        Envelope("lobby", "1700000000123-0", "0-0", "alice", '"hi"'),
        Envelope("@all", "1-2", "1-1", "a.b:c-d_e", "null"),
        Envelope("@bob", "5-0", "4-0", "alice", '{"nested":[1,2,{"x":"y\\"z"}]}'),
        Envelope("r", "5-0", "4-0", "alice", "[1,\n2]"),  # raw newline inside the JSON text
        Envelope("r", "5-0", "4-0", "alice", '"caf\u00e9 \U0001f600"'),
        Envelope("r", "5-0", "4-0", "alice", "123456789012345678901234567890"),
        Envelope("r", f"{2**64 - 1}-{2**64 - 1}", "4-0", "alice", "1.5e300"),
    ],
)
def test_message_frame(env: Envelope) -> None:
    text = p.message_frame(env)
    frame = json.loads(text)
    assert list(frame) == ["type", "room", "id", "from", "body", "ts"]
    assert frame == {
        "type": "message",
        "room": env.room,
        "id": env.id,
        "from": env.sender,
        "body": json.loads(env.body),
        "ts": env.ts,
    }
    assert isinstance(frame["ts"], int)
    assert '"body":' + env.body + ',"ts":' in text  # spliced, not re-encoded


def test_welcome_frame() -> None:
    assert json.loads(p.welcome_frame("alice", "i-1")) == {
        "type": "welcome",
        "user": "alice",
        "instance": "i-1",
        "protocol": 1,
    }


@pytest.mark.parametrize("recovered", [True, False])
def test_joined_frame(recovered: bool) -> None:
    frame = json.loads(p.joined_frame("lobby", 3, recovered, "5-0", epoch="e1"))
    # last_id is an optional addition to the v1 contract
    assert frame == {"type": "joined", "room": "lobby", "replayed": 3, "recovered": recovered,
                     "last_id": "5-0", "epoch": "e1"}


def test_joined_frame_of_a_room_without_a_stream_has_a_null_epoch() -> None:
    assert json.loads(p.joined_frame("lobby", 0, True, "0-0"))["epoch"] is None


def test_left_frame() -> None:
    assert json.loads(p.left_frame("lobby")) == {"type": "left", "room": "lobby"}


@pytest.mark.parametrize(("cid", "duplicate"), [("c1", False), ("c1", True), (None, False)])
def test_published_frame(cid: str | None, duplicate: bool) -> None:
    assert json.loads(p.published_frame("lobby", "5-0", cid, duplicate)) == {
        "type": "published",
        "room": "lobby",
        "id": "5-0",
        "client_id": cid,
        "duplicate": duplicate,
    }


@pytest.mark.parametrize("ref", ["lobby", "c1", None, 'q"uote\n'])
def test_error_frame(ref: str | None) -> None:
    assert json.loads(p.error_frame("bad_frame", "why", ref)) == {
        "type": "error",
        "code": "bad_frame",
        "reason": "why",
        "ref": ref,
    }


def test_pong_frame() -> None:
    assert json.loads(p.PONG_FRAME) == {"type": "pong"}


def test_close_codes() -> None:
    assert (p.CLOSE_UNAUTHORIZED, p.CLOSE_ORIGIN, p.CLOSE_TOO_SLOW) == (4401, 4403, 4408)
    assert (p.CLOSE_TOO_LARGE, p.CLOSE_RESTARTING, p.CLOSE_FULL) == (1009, 1012, 1013)


# -- refresh ------------------------------------------------------------------


def test_parse_refresh() -> None:
    assert parse_frame(dumps({"type": "refresh", "token": "a.b.c"})) == p.Refresh("a.b.c")


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        ({"type": "refresh"}, "bad_frame"),
        ({"type": "refresh", "token": ""}, "bad_frame"),
        ({"type": "refresh", "token": 5}, "bad_frame"),
        ({"type": "refresh", "token": None}, "bad_frame"),
        ({"type": "refresh", "token": "x" * (p.MAX_TOKEN_CHARS + 1)}, "too_large"),
    ],
)
def test_refresh_errors(frame: dict[str, Any], code: str) -> None:
    err = error_of(dumps(frame))
    assert err.code == code
    assert "x" * 100 not in err.reason  # the token is never echoed


@pytest.mark.parametrize(("exp", "wire"), [(1700000000.0, 1700000000), (None, None)])
def test_refreshed_frame(exp: float | None, wire: int | None) -> None:
    assert json.loads(p.refreshed_frame(exp)) == {"type": "refreshed", "exp": wire}
