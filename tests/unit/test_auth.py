"""Room rights and token checking."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jwt
import pytest

from app.auth import Authenticator, Principal, Unauthorized, bearer
from app.config import load_settings

SECRET = "unit-secret-0123456789-abcdefghijklmnopqrstuvwxyz"
OTHER_SECRET = "another-secret-0123456789-abcdefghijklmnopqrstuv"


# -- Principal rights ---------------------------------------------------------


EVERYWHERE = Principal(user="alice", rooms=None, broadcast=False)
BROADCASTER = Principal(user="alice", rooms=None, broadcast=True)
TEAM_ONLY = Principal(user="alice", rooms=("team-*", "lobby", "q?", "[ab]x"), broadcast=False)
NOWHERE = Principal(user="alice", rooms=(), broadcast=False)


@pytest.mark.parametrize(
    ("who", "room", "join", "publish"),
    [
        # no rooms claim: every ordinary room
        (EVERYWHERE, "lobby", True, True),
        (EVERYWHERE, "team-a", True, True),
        (EVERYWHERE, "anything.else", True, True),
        # glob patterns, case-sensitive
        (TEAM_ONLY, "lobby", True, True),
        (TEAM_ONLY, "team-a", True, True),
        (TEAM_ONLY, "team-", True, True),
        (TEAM_ONLY, "Team-a", False, False),
        (TEAM_ONLY, "team", False, False),
        (TEAM_ONLY, "lobby2", False, False),
        (TEAM_ONLY, "qa", True, True),
        (TEAM_ONLY, "q", False, False),
        (TEAM_ONLY, "qaa", False, False),
        (TEAM_ONLY, "ax", True, True),
        (TEAM_ONLY, "cx", False, False),
        (NOWHERE, "lobby", False, False),
        # inboxes: only the owner joins, anyone writes (direct messages);
        # room patterns do not apply to them
        (EVERYWHERE, "@alice", True, True),
        (EVERYWHERE, "@bob", False, True),
        (EVERYWHERE, "@alice2", False, True),
        (EVERYWHERE, "@Alice", False, True),
        (TEAM_ONLY, "@alice", True, True),
        (TEAM_ONLY, "@bob", False, True),
        (NOWHERE, "@alice", True, True),
        (NOWHERE, "@bob", False, True),
        # @all: everyone joins, publishing needs the broadcast right
        (EVERYWHERE, "@all", True, False),
        (TEAM_ONLY, "@all", True, False),
        (NOWHERE, "@all", True, False),
        (BROADCASTER, "@all", True, True),
    ],
)
def test_rights(who: Principal, room: str, join: bool, publish: bool) -> None:
    assert who.may_join(room) is join
    assert who.may_publish(room) is publish


def test_inbox_match_is_exact() -> None:
    who = Principal(user="a.b", rooms=None, broadcast=False)
    assert who.may_join("@a.b")
    assert not who.may_join("@axb")


@pytest.mark.parametrize(
    ("header", "token"),
    [
        ("Bearer abc.def.ghi", "abc.def.ghi"),
        ("bearer abc", "abc"),
        ("BEARER  abc ", "abc"),
        ("Basic abc", None),
        ("Bearerabc", None),
        ("", None),
        (None, None),
    ],
)
def test_bearer(header: str | None, token: str | None) -> None:
    assert bearer(header) == token


# -- Authenticator ------------------------------------------------------------


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def hand_token(header: dict[str, Any], claims: dict[str, Any], key: str | None) -> str:
    """A JWT built without PyJWT, so any header can be forged."""
    signing_input = b64(json.dumps(header).encode()) + "." + b64(json.dumps(claims).encode())
    sig = "" if key is None else b64(hmac.new(key.encode(), signing_input.encode(), hashlib.sha256).digest())
    return signing_input + "." + sig


def claims(**extra: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"sub": "alice", "exp": int(time.time()) + 3600}
    base.update(extra)
    return {k: v for k, v in base.items() if v is not None}


def token(key: str = SECRET, **extra: Any) -> str:
    return jwt.encode(claims(**extra), key, algorithm="HS256")


@pytest.fixture
def authenticator(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[..., Authenticator]:
    monkeypatch.chdir(tmp_path)  # load_settings also reads ./.env

    def make(**env: str) -> Authenticator:
        return Authenticator(load_settings(env))

    return make


@pytest.fixture
def jwt_auth(authenticator: Callable[..., Authenticator]) -> Authenticator:
    return authenticator(AUTH_MODE="jwt", JWT_SECRET=SECRET)


def test_valid_token(jwt_auth: Authenticator) -> None:
    exp = int(time.time()) + 3600
    who = jwt_auth.authenticate(token(exp=exp), None)
    assert who == Principal(user="alice", rooms=None, broadcast=False, expires_at=float(exp))
    assert jwt_auth.mode == "jwt"


@pytest.mark.parametrize(
    ("extra", "rooms", "broadcast"),
    [
        ({"rooms": ["team-*", "lobby"]}, ("team-*", "lobby"), False),
        ({"rooms": []}, (), False),
        ({"broadcast": True}, None, True),
        ({"broadcast": False}, None, False),
        ({"broadcast": "true"}, None, False),
        ({"broadcast": 1}, None, False),
        ({"aud": "someone", "iat": int(time.time()), "custom": {"x": 1}}, None, False),
    ],
)
def test_token_claims(jwt_auth: Authenticator, extra: dict[str, Any], rooms: tuple[str, ...] | None, broadcast: bool) -> None:
    who = jwt_auth.authenticate(token(**extra), None)
    assert who.rooms == rooms
    assert who.broadcast is broadcast


def test_user_param_is_ignored_in_jwt_mode(jwt_auth: Authenticator) -> None:
    assert jwt_auth.authenticate(token(), "mallory").user == "alice"


def test_leeway_accepts_just_expired(jwt_auth: Authenticator) -> None:
    assert jwt_auth.authenticate(token(exp=int(time.time()) - 1), None).user == "alice"


REFUSED: list[Any] = [
    pytest.param(lambda: None, id="no-token"),
    pytest.param(lambda: "", id="empty"),
    pytest.param(lambda: "not-a-jwt", id="garbage"),
    pytest.param(lambda: "a.b.c", id="garbage-3-parts"),
    pytest.param(lambda: token(exp=int(time.time()) - 60), id="expired"),
    pytest.param(lambda: token(exp=int(time.time()) - 3600), id="long-expired"),
    pytest.param(lambda: token(key=OTHER_SECRET), id="wrong-signature"),
    pytest.param(lambda: token()[:-4] + "AAAA", id="tampered-signature"),
    pytest.param(lambda: hand_token({"alg": "none", "typ": "JWT"}, claims(), None), id="alg-none"),
    pytest.param(lambda: hand_token({"alg": "None", "typ": "JWT"}, claims(), None), id="alg-None"),
    pytest.param(lambda: hand_token({"alg": "none"}, claims(), SECRET), id="alg-none-with-sig"),
    pytest.param(lambda: hand_token({"alg": "RS256", "typ": "JWT"}, claims(), SECRET), id="rs256-label-hmac-sig"),
    pytest.param(lambda: hand_token({"alg": "HS512", "typ": "JWT"}, claims(), SECRET), id="hs512-label"),
    pytest.param(lambda: hand_token({"typ": "JWT"}, claims(), SECRET), id="no-alg"),
    pytest.param(lambda: hand_token({"alg": "HS256", "typ": "JWT"}, claims(), SECRET) + "x", id="trailing-junk"),
    pytest.param(lambda: token(sub=None), id="missing-sub"),
    pytest.param(lambda: token(exp=None), id="missing-exp"),
    pytest.param(lambda: token(exp="tomorrow"), id="exp-not-a-number"),
    pytest.param(lambda: token(nbf=int(time.time()) + 3600), id="not-yet-valid"),
    pytest.param(lambda: token(sub=""), id="empty-sub"),
    pytest.param(lambda: token(sub="all"), id="sub-all"),
    pytest.param(lambda: token(sub="bad user"), id="sub-space"),
    pytest.param(lambda: token(sub="@alice"), id="sub-inbox"),
    pytest.param(lambda: token(sub="x" * 65), id="sub-too-long"),
    pytest.param(lambda: token(sub=42), id="sub-number"),
    pytest.param(lambda: token(sub=["alice"]), id="sub-list"),
    pytest.param(lambda: token(rooms="team-*"), id="rooms-string"),
    pytest.param(lambda: token(rooms=[1, 2]), id="rooms-numbers"),
    pytest.param(lambda: token(rooms={"a": 1}), id="rooms-object"),
]


@pytest.mark.parametrize("make_token", REFUSED)
def test_refused_tokens(jwt_auth: Authenticator, make_token: Callable[[], str | None]) -> None:
    with pytest.raises(Unauthorized):
        jwt_auth.authenticate(make_token(), "alice")


def test_hand_built_token_is_accepted_when_properly_signed(jwt_auth: Authenticator) -> None:
    # The forged-header cases above fail for their header, not for the builder.
    good = hand_token({"alg": "HS256", "typ": "JWT"}, claims(), SECRET)
    assert jwt_auth.authenticate(good, None).user == "alice"


@pytest.mark.parametrize("user", ["alice", "a.b:c-d_e", "x" * 64])
def test_none_mode_takes_user_param(authenticator: Callable[..., Authenticator], user: str) -> None:
    auth = authenticator(AUTH_MODE="none")
    assert auth.mode == "none"
    assert auth.authenticate(None, user) == Principal(user=user, rooms=None, broadcast=True)
    # a token is not needed and not consulted
    assert auth.authenticate("garbage", user).user == user


@pytest.mark.parametrize("user", [None, "", "all", "bad user", "@alice", "x" * 65])
def test_none_mode_refuses_invalid_user(authenticator: Callable[..., Authenticator], user: str | None) -> None:
    with pytest.raises(Unauthorized):
        authenticator(AUTH_MODE="none").authenticate(token(), user)
