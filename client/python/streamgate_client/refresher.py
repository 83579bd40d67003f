"""In-band token refresh: a fresh token before the current one expires.

One :class:`Refresher` task runs per connection while the client has a
token callback. It sleeps until shortly before the current token's ``exp``
(see :func:`~streamgate_client.tokens.refresh_delay`), asks the callback for
a new token and sends it as a ``refresh`` frame. The server answers
``refreshed`` (the connection, its rooms and positions stay) or an error
(the old token stays in force). A refused or failed attempt is retried with
a growing delay; if none succeeds before the old token expires, the server
closes the socket with 4401 and the client reconnects with a fresh token,
resuming every room, as it always did.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from .link import Link
from .options import TokenProvider
from .protocol import ErrorReply, TokenRefreshed, encode, refresh_frame
from .tokens import MIN_REFRESH_DELAY_S, refresh_delay, token_expiry

log = logging.getLogger("streamgate.client")

MAX_RETRY_DELAY_S = 30.0


class Refresher:
    """Keeps one connection's token fresh through the token callback."""

    def __init__(
        self,
        provider: TokenProvider,
        current: Callable[[], str | None],
        accepted: Callable[[str, TokenRefreshed], None],
        *,
        margin: float,
        timeout: float,
    ) -> None:
        self._provider = provider
        self._current = current
        self._accepted = accepted
        self._margin = margin
        self._timeout = timeout

    async def run(self, link: Link) -> None:
        """Until the connection ends (the task is cancelled then) or the
        token has no ``exp`` to refresh before."""
        failures = 0
        while not link.down.is_set():
            exp = token_expiry(self._current())
            if exp is None:
                return
            now = time.time()
            if failures:
                delay = min(2.0 ** failures, MAX_RETRY_DELAY_S, max(MIN_REFRESH_DELAY_S, (exp - now) / 2))
            else:
                delay = refresh_delay(exp, now, self._margin)
            await asyncio.sleep(delay)
            answer = await self._attempt(link)
            if answer is None:
                failures += 1
            elif isinstance(answer, ErrorReply):
                failures += 1
                log.warning("token refresh refused on %s: %s %s", link.url, answer.code, answer.reason)
            else:
                failures = 0

    async def _attempt(self, link: Link) -> TokenRefreshed | ErrorReply | None:
        try:
            async with asyncio.timeout(self._timeout):
                token = await self._provider()
        except Exception as exc:  # the callback failed: try again later
            log.warning("token provider failed during refresh: %r", exc)
            return None
        try:
            async with asyncio.timeout(self._timeout):
                answer = await link.refresh(encode(refresh_frame(token)))
        except TimeoutError:
            log.warning("no answer to a token refresh on %s", link.url)
            return None
        if isinstance(answer, TokenRefreshed):
            self._accepted(token, answer)
        return answer
