"""Who is connecting, and what they may do.

``AUTH_MODE=jwt``: a token signed with the configured key; the accepted
algorithm is pinned by the key type (HS256 for a shared secret, RS256/ES256
for a public key), so neither ``alg: none`` nor an HS256 token signed with a
public key as secret gets through. ``sub`` and ``exp`` are required.
``AUTH_MODE=none`` (development): the identity is whatever ``?user=`` says.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass

import jwt

from .config import Settings
from .protocol import ALL_ROOM, valid_user

CLOCK_LEEWAY_S = 5


class Unauthorized(Exception):
    pass


@dataclass(frozen=True, slots=True)
class Principal:
    user: str
    rooms: tuple[str, ...] | None  # glob patterns; None = every ordinary room
    broadcast: bool
    expires_at: float | None = None

    def may_join(self, room: str) -> bool:
        if room == ALL_ROOM:
            return True
        if room.startswith("@"):
            return room[1:] == self.user
        return self._ordinary(room)

    def may_publish(self, room: str) -> bool:
        if room == ALL_ROOM:
            return self.broadcast
        if room.startswith("@"):
            return True  # anyone may write into a user's inbox: a direct message
        return self._ordinary(room)

    def _ordinary(self, room: str) -> bool:
        if self.rooms is None:
            return True
        return any(fnmatch.fnmatchcase(room, p) for p in self.rooms)


def _public_key_algorithms(pem: str) -> list[str]:
    """Pin the algorithm to the key type: an RSA key verifies RS256 only, an
    EC key ES256 only, so a token can never pick a weaker check."""
    from cryptography.hazmat.primitives.asymmetric import ec, rsa
    from cryptography.hazmat.primitives.serialization import load_pem_public_key

    key = load_pem_public_key(pem.encode())
    if isinstance(key, rsa.RSAPublicKey):
        return ["RS256"]
    if isinstance(key, ec.EllipticCurvePublicKey):
        return ["ES256"]
    raise ValueError("JWT_PUBLIC_KEY must be an RSA or EC public key (PEM)")


class Authenticator:
    def __init__(self, settings: Settings) -> None:
        self._mode = settings.auth_mode
        self._audience = settings.jwt_audience
        self._issuer = settings.jwt_issuer
        if settings.jwt_public_key:
            self._key: str = settings.jwt_public_key
            self._algorithms = _public_key_algorithms(settings.jwt_public_key)
        else:
            self._key = settings.jwt_secret or ""
            self._algorithms = ["HS256"]

    @property
    def mode(self) -> str:
        return self._mode

    def authenticate(self, token: str | None, user: str | None) -> Principal:
        """Return the principal or raise Unauthorized (never says why in detail)."""
        if self._mode == "none":
            if not valid_user(user):
                raise Unauthorized("a valid ?user= is required")
            assert user is not None
            return Principal(user=user, rooms=None, broadcast=True)
        if not token:
            raise Unauthorized("token required")
        try:
            claims = jwt.decode(
                token,
                self._key,
                algorithms=self._algorithms,
                options={"require": ["exp", "sub"], "verify_aud": self._audience is not None},
                audience=self._audience,
                issuer=self._issuer,
                leeway=CLOCK_LEEWAY_S,
            )
        except jwt.PyJWTError as exc:
            raise Unauthorized(f"invalid token: {type(exc).__name__}") from None
        sub = claims.get("sub")
        if not valid_user(sub):
            raise Unauthorized("invalid subject")
        rooms = claims.get("rooms")
        if rooms is not None and (
            not isinstance(rooms, list) or not all(isinstance(p, str) for p in rooms)
        ):
            raise Unauthorized("'rooms' claim must be a list of patterns")
        try:
            expires_at = float(claims["exp"])
        except (TypeError, ValueError, OverflowError):
            raise Unauthorized("invalid expiry") from None
        return Principal(
            user=sub,
            rooms=tuple(rooms) if rooms is not None else None,
            broadcast=claims.get("broadcast") is True,
            expires_at=expires_at,
        )


def bearer(header: str | None) -> str | None:
    if header and header[:7].lower() == "bearer ":
        return header[7:].strip()
    return None
