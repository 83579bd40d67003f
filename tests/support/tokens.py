"""JWTs for auth tests, including hand-built malicious ones."""

from __future__ import annotations

import base64
import json
import time
from typing import Any

import jwt

SECRET = "test-secret-0123456789-abcdefghijklmnopqrstuvwxyz"


def make_token(
    sub: str,
    *,
    secret: str = SECRET,
    ttl: float = 3600,
    rooms: list[str] | None = None,
    broadcast: bool | None = None,
    **claims: Any,
) -> str:
    payload: dict[str, Any] = {"sub": sub, "exp": int(time.time() + ttl), "iat": int(time.time())}
    if rooms is not None:
        payload["rooms"] = rooms
    if broadcast is not None:
        payload["broadcast"] = broadcast
    payload.update(claims)
    return jwt.encode(payload, secret, algorithm="HS256")


def _b64(data: dict[str, Any]) -> str:
    raw = json.dumps(data, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def unsigned_token(sub: str, ttl: float = 3600, **claims: Any) -> str:
    """An `alg: none` token with an empty signature, built by hand."""
    header = {"alg": "none", "typ": "JWT"}
    payload = {"sub": sub, "exp": int(time.time() + ttl), **claims}
    return f"{_b64(header)}.{_b64(payload)}."
