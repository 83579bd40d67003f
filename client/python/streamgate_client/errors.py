"""Exceptions of the client. Everything it raises on purpose is a StreamgateError."""

from __future__ import annotations


class StreamgateError(Exception):
    """Base class of the client's errors."""


class ServerError(StreamgateError):
    """The server refused a request with an ``error`` frame (``forbidden``,
    ``invalid_room``, ``too_large``, ``bad_frame``...). Retrying the same
    request would fail the same way."""

    def __init__(self, code: str, reason: str, ref: str | None = None) -> None:
        super().__init__(f"{code}: {reason}" + (f" (ref {ref})" if ref else ""))
        self.code = code
        self.reason = reason
        self.ref = ref


class FatalError(StreamgateError):
    """The client stopped for good: reconnecting cannot help."""


class AuthError(FatalError):
    """Unauthorized (close code 4401 or HTTP 401) and no fresh token helped."""


class OriginRejected(FatalError):
    """The server does not allow this client's origin (close code 4403 or HTTP 403)."""


class ClientClosed(StreamgateError):
    """The client was closed by the application."""


class PublishTimeout(StreamgateError, TimeoutError):
    """No confirmation within the publish timeout. The message may or may not
    be stored: publishing again with the same ``client_id`` is safe (the
    server stores it at most once)."""

    def __init__(self, client_id: str, timeout: float) -> None:
        super().__init__(f"publish {client_id} not confirmed within {timeout:g} s")
        self.client_id = client_id
