"""Forged, confused and expiring tokens.

Keys are made fresh for the module with `cryptography`. The public-key
instance also has a JWT_SECRET in its environment, as a careless deployment
would, to show that the key type pins the algorithm and the secret is unused.
"""

from __future__ import annotations

import math
import time
import uuid
from collections.abc import Callable

import jwt as pyjwt
import pytest
from websockets.exceptions import InvalidStatus
from cryptography.hazmat.primitives.asymmetric import ec

from tests.hostile.conftest import ModuleInstances
from tests.hostile.support import (
    KeyPair,
    LogMark,
    claims,
    ec_keys,
    hs256_with_raw_key,
    rsa_keys,
    signed,
    write_pem,
)
from tests.support import Instance, WsClient, new_client_id, open_client, try_connect
from tests.support.timeouts import scaled
from tests.support.tokens import SECRET, make_token, unsigned_token

AUDIENCE = "streamgate-test"
ISSUER = "https://issuer.example"
LEEWAY_S = 5  # clock leeway of the token check, on admission and for the expiry close


@pytest.fixture(scope="module")
def rsa_pair() -> KeyPair:
    return rsa_keys()


@pytest.fixture(scope="module")
def ec_pair() -> KeyPair:
    return ec_keys()


@pytest.fixture(scope="module")
def rs(instances: ModuleInstances, rsa_pair: KeyPair, tmp_path_factory: pytest.TempPathFactory) -> Instance:
    """RS256, key given as a file path."""
    pem = write_pem(tmp_path_factory.mktemp("keys") / "rsa.pub.pem", rsa_pair.public_pem)
    return instances.start("TR", AUTH_MODE="jwt", JWT_PUBLIC_KEY=str(pem), JWT_SECRET=SECRET)


@pytest.fixture(scope="module")
def es(instances: ModuleInstances, ec_pair: KeyPair) -> Instance:
    """ES256, key given as PEM text."""
    return instances.start("TE", AUTH_MODE="jwt", JWT_PUBLIC_KEY=ec_pair.public_pem)


@pytest.fixture(scope="module")
def hs(instances: ModuleInstances) -> Instance:
    return instances.start("TH", AUTH_MODE="jwt", JWT_SECRET=SECRET)


@pytest.fixture(scope="module")
def audited(instances: ModuleInstances) -> Instance:
    return instances.start("TA", AUTH_MODE="jwt", JWT_SECRET=SECRET, JWT_AUDIENCE=AUDIENCE, JWT_ISSUER=ISSUER)


def _user() -> str:
    return f"t-{uuid.uuid4().hex[:8]}"


async def _assert_connects(inst: Instance, token: str, user: str) -> None:
    room = f"tok-{uuid.uuid4().hex[:8]}"
    async with await open_client(inst, token=token) as client:
        assert client.welcome is not None and client.welcome["user"] == user
        await client.join(room, since="$")
        published = await client.publish(room, "signed in", new_client_id())
        await client.wait_for_id(room, published["id"])


async def _assert_refused(inst: Instance, token: str, label: str) -> None:
    outcome = await try_connect(inst.ws_url(token=token))
    assert outcome.refused, f"{label}: expected HTTP 401/403 or close 4401, got {outcome}"


# -- public keys: valid tokens ------------------------------------------------------


async def test_rs256_token_is_accepted(rs: Instance, rsa_pair: KeyPair) -> None:
    user = _user()
    await _assert_connects(rs, signed(claims(user), rsa_pair.private_pem, "RS256"), user)


async def test_es256_token_is_accepted(es: Instance, ec_pair: KeyPair) -> None:
    user = _user()
    await _assert_connects(es, signed(claims(user), ec_pair.private_pem, "ES256"), user)


# -- public keys: algorithm confusion and foreign keys ---------------------------


def _rs_forgeries(pair: KeyPair) -> list[tuple[str, Callable[[str], str]]]:
    other = rsa_keys()
    ecp = ec_keys()
    pem = pair.public_pem
    attacker_jwk = pyjwt.algorithms.RSAAlgorithm.to_jwk(
        pyjwt.algorithms.RSAAlgorithm(pyjwt.algorithms.RSAAlgorithm.SHA256).prepare_key(other.public_pem),
        as_dict=True,
    )
    return [
        ("HS256 keyed with the public PEM", lambda u: hs256_with_raw_key(claims(u), pem.encode())),
        ("HS256 keyed with the PEM, no final newline",
         lambda u: hs256_with_raw_key(claims(u), pem.strip().encode())),
        ("HS256 with the JWT_SECRET that is also set", lambda u: make_token(u)),
        ("ES256 from some EC key", lambda u: signed(claims(u), ecp.private_pem, "ES256")),
        ("RS256 from another RSA key", lambda u: signed(claims(u), other.private_pem, "RS256")),
        ("RS256 from another key that embeds its own jwk",
         lambda u: signed(claims(u), other.private_pem, "RS256", {"jwk": attacker_jwk})),
        ("PS256 from the right key", lambda u: signed(claims(u), pair.private_pem, "PS256")),
        ("RS512 from the right key", lambda u: signed(claims(u), pair.private_pem, "RS512")),
        ("alg none", lambda u: unsigned_token(u)),
    ]


async def test_rs256_instance_refuses_every_other_algorithm(rs: Instance, rsa_pair: KeyPair) -> None:
    for label, forge in _rs_forgeries(rsa_pair):
        await _assert_refused(rs, forge(_user()), label)


async def test_es256_instance_refuses_every_other_algorithm(es: Instance, ec_pair: KeyPair) -> None:
    p384 = ec_keys(ec.SECP384R1())
    forgeries: list[tuple[str, str]] = [
        ("RS256 against an EC key", signed(claims(_user()), rsa_keys().private_pem, "RS256")),
        ("HS256 keyed with the EC public PEM", hs256_with_raw_key(claims(_user()), ec_pair.public_pem.encode())),
        ("ES256 from another EC key", signed(claims(_user()), ec_keys().private_pem, "ES256")),
        ("ES384 from a P-384 key", signed(claims(_user()), p384.private_pem, "ES384")),
        ("HS256 with the test secret", make_token(_user())),
        ("alg none", unsigned_token(_user())),
    ]
    for label, token in forgeries:
        await _assert_refused(es, token, label)


# -- audience and issuer ------------------------------------------------------------


async def test_audience_and_issuer_are_checked_when_configured(audited: Instance) -> None:
    def hs(**extra: object) -> str:
        return signed(claims(_user(), **extra), SECRET, "HS256")

    refused = {
        "no aud": hs(iss=ISSUER),
        "wrong aud": hs(aud="other-service", iss=ISSUER),
        "aud list without ours": hs(aud=["a", "b"], iss=ISSUER),
        "no iss": hs(aud=AUDIENCE),
        "wrong iss": hs(aud=AUDIENCE, iss="https://evil.example"),
        "iss with another case": hs(aud=AUDIENCE, iss=ISSUER.upper()),
        "neither": hs(),
    }
    for label, token in refused.items():
        await _assert_refused(audited, token, label)
    for extra in ({"aud": AUDIENCE, "iss": ISSUER}, {"aud": ["other", AUDIENCE], "iss": ISSUER}):
        user = _user()
        await _assert_connects(audited, signed(claims(user, **extra), SECRET, "HS256"), user)


# -- where the token travels ------------------------------------------------------------


async def test_token_in_subprotocol_is_accepted_and_never_echoed(hs: Instance) -> None:
    user = _user()
    token = make_token(user)
    for offered in (["streamgate.v1", f"bearer.{token}"], [f"bearer.{token}", "streamgate.v1"]):
        async with await WsClient.open(hs.ws_url(), subprotocols=offered) as client:
            assert client.welcome is not None and client.welcome["user"] == user
            assert client.ws.subprotocol == "streamgate.v1"
            assert client.ws.response.headers.get_all("Sec-WebSocket-Protocol") == ["streamgate.v1"]
            assert (await client.ping())["type"] == "pong"
    # Without streamgate.v1 on offer nothing is selected: the token is not echoed.
    async with await WsClient.open(hs.ws_url(), subprotocols=[f"bearer.{token}"]) as client:
        assert client.welcome is not None and client.welcome["user"] == user
        assert client.ws.subprotocol is None
        assert token not in str(client.ws.response.headers)
    outcome = await try_connect(hs.ws_url(), subprotocols=["streamgate.v1", "bearer.not-a-jwt"])
    assert outcome.refused, outcome


async def test_tokens_never_reach_the_log(hs: Instance) -> None:
    mark = LogMark.now(hs)
    good, forged = make_token(_user()), make_token(_user(), secret="x" * 40)
    async with await open_client(hs, token=good):
        pass
    async with await WsClient.open(hs.ws_url(), subprotocols=["streamgate.v1", f"bearer.{good}"]):
        pass
    assert (await try_connect(hs.ws_url(token=forged))).refused
    async with hs.http() as http:
        assert (await http.get("/presence", headers={"Authorization": f"Bearer {forged}"})).status_code == 401
    log = mark.text()
    assert "WebSocket /ws" in log, "the handshakes were not logged at all: nothing was checked"
    for token in (good, forged):
        signature = token.rsplit(".", 1)[1]
        assert signature not in log
        assert token.split(".")[1] not in log


async def test_percent_encoded_token_parameter_is_redacted_too(hs: Instance) -> None:
    mark = LogMark.now(hs)
    token = make_token(_user())
    async with await WsClient.open(f"ws://127.0.0.1:{hs.port}/ws?%74oken={token}") as client:
        assert client.welcome is not None
    assert "WebSocket /ws" in mark.text()
    assert token.rsplit(".", 1)[1] not in mark.text()


# -- expiry ----------------------------------------------------------------------------------


async def test_token_expiring_on_an_open_socket_closes_it_with_4401(hs: Instance) -> None:
    """exp = now + 3 s. The socket works until exp and is then closed with
    4401. Admission allows LEEWAY_S of clock skew and the close honours the
    same leeway: measured here, the close comes at exp + 5.0 s (+ a few ms)."""
    user = _user()
    exp = math.ceil(time.time()) + 3
    token = pyjwt.encode({"sub": user, "exp": exp}, SECRET, algorithm="HS256")
    room = f"exp-{uuid.uuid4().hex[:8]}"
    client = await open_client(hs, token=token)
    try:
        await client.join(room, since="$")
        published = await client.publish(room, "before expiry", new_client_id())
        await client.wait_for_id(room, published["id"])
        code = await client.wait_closed(timeout=exp + LEEWAY_S - time.time() + 3)
        closed_at = time.time()
    finally:
        await client.close()
    assert code == 4401, f"closed with {code} ({client.close_reason!r})"
    assert exp <= closed_at <= exp + LEEWAY_S + scaled(1.5), f"closed {closed_at - exp:+.2f} s from exp"


async def test_token_expired_within_the_leeway_is_closed_when_the_leeway_ends(hs: Instance) -> None:
    """Expired 4 s ago: admitted (within the leeway), then closed with 4401
    when exp + LEEWAY_S passes, about 1 s later."""
    exp = int(time.time()) - 4
    token = pyjwt.encode({"sub": _user(), "exp": exp}, SECRET, algorithm="HS256")
    try:
        client = await WsClient.open(hs.ws_url(token=token))
    except InvalidStatus as exc:  # refusing is just as good
        assert exc.response.status_code in (401, 403)
        return
    try:
        code = await client.wait_closed(timeout=LEEWAY_S + 2)
        closed_at = time.time()
    finally:
        await client.close()
    assert code == 4401, f"closed with {code} ({client.close_reason!r})"
    assert closed_at <= exp + LEEWAY_S + scaled(1.5), f"closed {closed_at - exp:+.2f} s from exp"


async def test_absurd_exp_is_handled_without_an_internal_error(hs: Instance) -> None:
    mark = LogMark.now(hs)
    token = pyjwt.encode({"sub": _user(), "exp": 10**400}, SECRET, algorithm="HS256")
    outcome = await try_connect(hs.ws_url(token=token))
    assert outcome.kind != "http" or outcome.status in (401, 403), outcome
    assert mark.problems() == []
