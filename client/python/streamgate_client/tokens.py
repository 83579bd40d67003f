"""When to refresh a token: its expiry, read without verifying it.

The client never checks a token's signature (the server does); it only
reads ``exp`` so that it can ask its token callback for a fresh token and
send it in band (``refresh``) before the server closes the socket with 4401.
Pure, no I/O.
"""

from __future__ import annotations

import base64
import json

# Never refresh more often than this, whatever the token says: a callback
# that keeps returning the same token must not turn into a busy loop.
MIN_REFRESH_DELAY_S = 1.0


def token_expiry(token: str | None) -> float | None:
    """The ``exp`` claim (unix seconds) of a JWT, or None when the token is
    not a JWT or has no numeric ``exp`` (then it is never refreshed)."""
    if not token:
        return None
    parts = token.split(".")
    if len(parts) != 3:
        return None
    payload = parts[1] + "=" * (-len(parts[1]) % 4)
    try:
        claims = json.loads(base64.urlsafe_b64decode(payload))
    except (ValueError, TypeError):
        return None
    exp = claims.get("exp") if isinstance(claims, dict) else None
    if isinstance(exp, bool) or not isinstance(exp, (int, float)):
        return None
    return float(exp)


def refresh_delay(expires_at: float, now: float, margin: float) -> float:
    """Seconds until the refresh of a token expiring at ``expires_at``.

    ``margin`` before expiry, but never later than half the time left (a
    short-lived token is refreshed half-way), and never sooner than
    :data:`MIN_REFRESH_DELAY_S` unless the token has already expired.
    """
    left = expires_at - now
    if left <= 0:
        return 0.0
    return max(min(left, MIN_REFRESH_DELAY_S), left - min(margin, left / 2))
